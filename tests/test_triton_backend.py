"""The Triton backend against the real tritonserver (from the nvidia-pytriton wheel, python backend only).

Triton runs in EXPLICIT model-control mode on a python-backend copy of the demo MLP; the appliance shares that
repository, loads the model into Triton, and serves it to the real tritonclient.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from appliance import reference_triton  # noqa: E402
from appliance.demo import write_demo_repository  # noqa: E402
from tests.support.appliance import ServerProcess, running_server  # noqa: E402

try:
    reference_triton.find_triton_install()
except reference_triton.TritonStartError as exc:  # pragma: no cover - the test extras install it
    pytest.skip(f"real tritonserver unavailable: {exc}", allow_module_level=True)


TRITON_ARGS = ("--triton-check-interval-s", "0.3", "--exit-timeout-secs", "5")


def appliance(repo: Path, triton_url: str, log: Path, *extra: str) -> contextlib.AbstractContextManager[ServerProcess]:
    """The real appliance, serving ``repo`` through the Triton at ``triton_url``."""
    return running_server(repo, log, "--triton-url", triton_url, *TRITON_ARGS, *extra)


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    onnx_repo = write_demo_repository(tmp_path_factory.mktemp("onnx"))[0].parent
    return reference_triton.write_python_backend_repository(
        onnx_repo, tmp_path_factory.mktemp("triton") / "repo", models=["mlp"]
    )


def _wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _infer(client, x: np.ndarray):  # type: ignore[no-untyped-def]
    tensor = tritonclient_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("mlp", [tensor]).as_numpy("logits")


def test_triton_served_model_loads_serves_and_recovers(triton_repo: Path, tmp_path: Path) -> None:
    from tritonclient.utils import InferenceServerException

    expected_session = ort.InferenceSession(str(triton_repo / "mlp" / "1" / "model.onnx"))
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    expected = expected_session.run(["logits"], {"input": x})[0]

    with reference_triton.running_tritonserver(triton_repo, tmp_path / "t1", model_control_mode="explicit") as triton:
        triton_client = tritonclient_grpc.InferenceServerClient(triton.grpc_url)
        assert not triton_client.is_model_ready("mlp")  # explicit mode: nothing loaded until the appliance asks
        with appliance(triton_repo, triton.grpc_url, tmp_path / "appliance.log") as server:
            client = server.grpc()
            assert client.is_model_ready("mlp")
            # Loaded into Triton with the model's own batching and instance settings.
            assert triton_client.is_model_ready("mlp")
            handed = triton_client.get_model_config("mlp", as_json=True)["config"]
            assert handed["max_batch_size"] == 32 and "dynamic_batching" in handed
            np.testing.assert_allclose(_infer(client, x), expected, rtol=1e-5, atol=1e-6)

            # Triton's errors keep the appliance's contract: a wrong shape is INVALID_ARGUMENT.
            bad = tritonclient_grpc.InferInput("input", [1, 63], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
            with pytest.raises(InferenceServerException) as info:
                client.infer("mlp", [bad])
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "input" in info.value.message()

            # Triton goes away: the model goes UNAVAILABLE in the appliance.
            ports = (triton.http_port, triton.grpc_port, triton.metrics_port)
            os.killpg(triton.process.pid, signal.SIGKILL)
            triton.process.wait()
            left = list(Path("/dev/shm").glob(f"{triton.shm_prefix}*"))
            assert left  # the python backend's objects outlive a killed server ...
            _wait_for(lambda: not client.is_model_ready("mlp"))
            with pytest.raises(InferenceServerException) as info:
                _infer(client, x)
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            index = {m.name: m for m in client.get_model_repository_index().models}
            assert index["mlp"].state == "UNAVAILABLE" and "Triton" in index["mlp"].reason

            # Triton comes back (empty, explicit mode): the appliance loads the model again by itself.
            with reference_triton.running_tritonserver(
                triton_repo, tmp_path / "t2", model_control_mode="explicit", ports=ports
            ):
                _wait_for(lambda: client.is_model_ready("mlp"))
                np.testing.assert_allclose(_infer(client, x), expected, rtol=1e-5, atol=1e-6)
    assert not [path for path in left if path.exists()]  # ... until its context removes them


def test_unload_and_load_propagate_to_triton(triton_repo: Path, tmp_path: Path) -> None:
    with reference_triton.running_tritonserver(triton_repo, tmp_path / "t", model_control_mode="explicit") as triton:
        triton_client = tritonclient_grpc.InferenceServerClient(triton.grpc_url)
        explicit = ("--model-control-mode", "explicit", "--load-model", "mlp")
        with appliance(triton_repo, triton.grpc_url, tmp_path / "appliance.log", *explicit) as server:
            client = server.grpc()
            assert client.is_model_ready("mlp") and triton_client.is_model_ready("mlp")
            client.unload_model("mlp")
            assert not client.is_model_ready("mlp")
            assert not triton_client.is_model_ready("mlp")
            client.load_model("mlp")
            assert client.is_model_ready("mlp") and triton_client.is_model_ready("mlp")
            assert server.stop() == 0, server.log()
        # Stopping the appliance unloaded its model from Triton.
        assert not triton_client.is_model_ready("mlp")


def test_model_loads_once_triton_comes_up_after_the_appliance(triton_repo: Path, tmp_path: Path) -> None:
    ports = tuple(reference_triton.free_ports(3))
    triton_url = f"127.0.0.1:{ports[1]}"
    with appliance(triton_repo, triton_url, tmp_path / "appliance.log") as server:
        client = server.grpc()
        assert not client.is_model_ready("mlp")
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["mlp"].state == "UNAVAILABLE" and "not reachable" in index["mlp"].reason
        with reference_triton.running_tritonserver(
            triton_repo,
            tmp_path / "t",
            model_control_mode="explicit",
            ports=ports,  # type: ignore[arg-type]
        ):
            _wait_for(lambda: client.is_model_ready("mlp"))
            x = np.ones((1, 64), np.float32)
            assert _infer(client, x).shape == (1, 10)


def test_instances_of_a_triton_model_reach_tritons_instance_group(triton_repo: Path, tmp_path: Path) -> None:
    """The autoscaler's lever on a Triton-served model: a reload with the count in a config override, which the
    real Triton takes (its own config of the model shows the instance group), and the model keeps answering."""
    import httpx

    with reference_triton.running_tritonserver(triton_repo, tmp_path / "t", model_control_mode="explicit") as triton:
        triton_client = tritonclient_grpc.InferenceServerClient(triton.grpc_url)
        with appliance(triton_repo, triton.grpc_url, tmp_path / "appliance.log") as server:
            x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
            before = _infer(server.grpc(), x)
            response = httpx.post(f"{server.base}/v2/repository/models/mlp/instances", json={"count": 2}, timeout=120)
            assert response.json() == {"model": "mlp", "instances": 2, "in_place": False}
            groups = triton_client.get_model_config("mlp", as_json=True)["config"]["instance_group"]
            assert sum(int(g["count"]) for g in groups) == 2
            # what the autoscaler reads: the count, as for a model in process
            assert 'appliance_model_instances{model="mlp",version="1"} 2.0' in httpx.get(f"{server.base}/metrics").text
            np.testing.assert_allclose(_infer(server.grpc(), x), before, rtol=1e-6)
            assert server.stop() == 0, server.log()

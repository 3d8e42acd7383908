"""The first-boot flow with device descriptions passed in: keep, rebuild (injected builder), fall back to ONNX
Runtime, and the real appliance repository and server serving the model that fell back."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from appliance.backends import factory_for
from appliance.core.backend import LoadError
from appliance.core.model import BatchedModelVersion
from appliance.core.model_config import read_config
from appliance.core.repository import LoadOptions, ModelRepository
from appliance.core.stats import Metrics
from appliance.optimize.boot import Boot
from appliance.optimize.cli import main
from appliance.optimize.manifest import read_manifest

from .conftest import ORIN_AGX, FakeTensorRTBuilderForTests, write_device

ORIN_NEWER_TRT = dataclasses.replace(ORIN_AGX, tensorrt_version="10.7.0", l4t_release="36.5.0")
BIN = Path(sys.executable).parent


def build_repo(tmp_path: Path, mlp_onnx: Path) -> Path:
    repo = tmp_path / "repo"
    device = write_device(ORIN_AGX, tmp_path / "agx.json")
    argv = [
        "build",
        str(mlp_onnx),
        "--repository",
        str(repo),
        "--model",
        "mlp",
        "--precision",
        "fp16",
        "--min",
        "input:1x16",
        "--opt",
        "input:8x16",
        "--max",
        "input:8x16",
        "--device",
        str(device),
    ]
    assert main(argv, builder=FakeTensorRTBuilderForTests()) == 0
    return repo


def boot(repo: Path, device: object, builder: FakeTensorRTBuilderForTests, **kw: object) -> tuple[list, str]:  # type: ignore[type-arg]
    out = io.StringIO()
    outcomes = Boot(repo, device, builder, out, **kw).run()  # type: ignore[arg-type]
    return outcomes, out.getvalue()


def test_matching_engine_is_kept(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    before = (repo / "mlp" / "config.pbtxt").read_text()
    builder = FakeTensorRTBuilderForTests()
    outcomes, log = boot(repo, ORIN_AGX, builder)
    assert [(o.model, o.action, [e.action for e in o.engines]) for o in outcomes] == [("mlp", "tensorrt", ["kept"])]
    assert builder.specs == []
    assert "trt-optimize boot: mlp/1: engine matches this device, kept (fp16, TensorRT 10.3.0)" in log
    assert (repo / "mlp" / "config.pbtxt").read_text() == before


def test_mismatched_engine_is_rebuilt_with_its_settings(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    builder = FakeTensorRTBuilderForTests(tensorrt_version="10.7.0")
    outcomes, log = boot(repo, ORIN_NEWER_TRT, builder)
    assert outcomes[0].action == "tensorrt" and outcomes[0].engines[0].action == "rebuilt"
    assert "mlp/1: engine does not match: TensorRT version: manifest has 10.3.0, found 10.7.0" in log
    assert "trt-optimize boot: mlp/1: Building engine: started (2 steps)" in log  # progress, line by line
    spec = builder.specs[0]
    assert (spec.precision, spec.profiles[0]["input"]["opt"], spec.onnx_path.name) == ("fp16", [8, 16], "model.onnx")
    manifest = read_manifest(repo / "mlp" / "1" / "model.plan.json")
    assert (manifest.tensorrt_version, manifest.l4t_release) == ("10.7.0", "36.5.0")
    assert read_config(repo / "mlp" / "config.pbtxt").backend == "tensorrt"
    device = write_device(ORIN_NEWER_TRT, tmp_path / "newer.json")
    assert main(["verify", str(repo), "--device", str(device)]) == 0


def _serve_with_onnxruntime(repo: Path, inputs: np.ndarray) -> np.ndarray:
    async def go() -> np.ndarray:
        repository = ModelRepository(repo, LoadOptions(), Metrics(), factory_for)
        await repository.load("mlp")
        served = repository.get("mlp")
        assert served.platform == "onnxruntime_onnx" and isinstance(served, BatchedModelVersion)
        result = served.backend.execute(0, {"input": inputs}, ["logits"])["logits"]
        await repository.unload_all()
        return result

    return asyncio.run(go())


def test_failed_build_falls_back_to_onnxruntime_and_the_model_serves(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)

    async def load_tensorrt() -> str:
        repository = ModelRepository(repo, LoadOptions(), Metrics(), factory_for)
        with pytest.raises(LoadError) as info:
            await repository.load("mlp")
        return str(info.value)

    assert "needs the Python packages 'tensorrt' (10) and 'pycuda'" in asyncio.run(load_tensorrt())

    builder = FakeTensorRTBuilderForTests(fail="out of memory while building")
    outcomes, log = boot(repo, ORIN_NEWER_TRT, builder)
    assert outcomes[0].action == "onnxruntime" and outcomes[0].engines[0].error == "out of memory while building"
    assert "mlp/1: FAILED: rebuild failed: out of memory while building" in log
    assert "mlp: falls back to ONNX Runtime on the CPU" in log
    config = read_config(repo / "mlp" / "config.pbtxt")
    assert (config.backend, config.platform, config.default_model_filename) == ("onnxruntime", "", "")
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert read_config(repo / "mlp" / "config.pbtxt.tensorrt").backend == "tensorrt"

    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(mlp_onnx)).run(["logits"], {"input": x})[0]
    assert np.allclose(_serve_with_onnxruntime(repo, x), expected, atol=1e-6)

    # the next boot leaves it on ONNX Runtime; --retry-fallbacks goes back once a build works
    again, log = boot(repo, ORIN_NEWER_TRT, builder)
    assert again[0].action == "onnxruntime-earlier" and len(builder.specs) == 1
    retried, log = boot(repo, ORIN_NEWER_TRT, FakeTensorRTBuilderForTests("10.7.0"), retry_fallbacks=True)
    assert retried[0].action == "tensorrt" and "mlp: back on TensorRT (config.pbtxt.tensorrt restored)" in log
    assert read_config(repo / "mlp" / "config.pbtxt").backend == "tensorrt"
    assert not (repo / "mlp" / "config.pbtxt.tensorrt").exists()


def test_missing_onnx_leaves_the_model_unavailable_but_boot_completes(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    (repo / "mlp" / "1" / "model.onnx").unlink()
    outcomes, log = boot(repo, ORIN_NEWER_TRT, FakeTensorRTBuilderForTests())
    assert outcomes[0].action == "unavailable"
    assert re.search(r"mlp/1: FAILED: .*model.onnx: ONNX file missing, cannot rebuild", log)
    assert "done: 0 models on TensorRT, 0 fell back to ONNX Runtime, 1 unavailable" in log


def test_boot_command_on_a_machine_without_tensorrt_then_appliance_serves(tmp_path: Path, mlp_onnx: Path) -> None:
    """The real CLI and server, as the first-boot unit and the service would run them (no TensorRT here)."""
    repo = build_repo(tmp_path, mlp_onnx)
    device = write_device(ORIN_NEWER_TRT, tmp_path / "newer.json")
    done = subprocess.run(
        [BIN / "trt-optimize", "boot", str(repo), "--device", str(device)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "TensorRT is not installed here" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert read_config(repo / "mlp" / "config.pbtxt").backend == "onnxruntime"

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                BIN / "appliance",
                "serve",
                "--model-repository",
                str(repo),
                "--http-address",
                "127.0.0.1",
                "--http-port",
                "0",
                "--grpc-address",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--exit-timeout-secs",
                "5",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "APPLIANCE_CONFIG": ""},
        )
    try:
        deadline = time.monotonic() + 60
        match = None
        while time.monotonic() < deadline and match is None and server.poll() is None:
            match = re.search(r"REST on [\d.]+:(\d+)", log.read_text())
            time.sleep(0.1)
        assert match, log.read_text()
        x = np.random.default_rng(4).standard_normal((2, 16)).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
        reply = httpx.post(f"http://127.0.0.1:{match.group(1)}/v2/models/mlp/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        got = np.array(reply.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
        expected = ort.InferenceSession(str(mlp_onnx)).run(["logits"], {"input": x})[0]
        assert np.allclose(got, expected, atol=1e-5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_deferred_rebuilds_fall_back_at_once_and_switch_after_boot(tmp_path: Path, mlp_onnx: Path) -> None:
    """boot --defer-rebuilds (before the service) builds nothing: the mismatched model serves on ONNX Runtime at
    once; rebuild-deferred (after the service is up) builds it, restores TensorRT and asks for the swap."""
    from appliance.optimize.boot import DEFERRED, rebuild_deferred

    repo = build_repo(tmp_path, mlp_onnx)
    builder = FakeTensorRTBuilderForTests(tensorrt_version="10.7.0")
    outcomes, log = boot(repo, ORIN_NEWER_TRT, builder, defer_rebuilds=True)
    assert outcomes[0].action == "onnxruntime-deferred" and outcomes[0].engines[0].action == "deferred"
    assert builder.specs == [] and (repo / "mlp" / DEFERRED).exists()
    assert "mlp/1: rebuild deferred until after boot" in log and "1 on ONNX Runtime until rebuilt" in log
    assert read_config(repo / "mlp" / "config.pbtxt").backend == "onnxruntime"
    again, _ = boot(repo, ORIN_NEWER_TRT, builder, defer_rebuilds=True)  # a power cut before the rebuild ran
    assert again[0].action == "onnxruntime-earlier" and (repo / "mlp" / DEFERRED).exists()

    switched: list[str] = []
    out = io.StringIO()
    done = rebuild_deferred(repo, ORIN_NEWER_TRT, builder, out, switched=switched.append)
    assert [o.action for o in done] == ["tensorrt"] and switched == ["mlp"] and len(builder.specs) == 1
    assert read_config(repo / "mlp" / "config.pbtxt").backend == "tensorrt" and not (repo / "mlp" / DEFERRED).exists()
    assert read_manifest(repo / "mlp" / "1" / "model.plan.json").tensorrt_version == "10.7.0"
    assert "mlp: the service serves it on TensorRT now" in out.getvalue()
    assert rebuild_deferred(repo, ORIN_NEWER_TRT, builder, io.StringIO()) == []  # nothing left


def test_a_deferred_rebuild_that_fails_stays_on_onnxruntime(tmp_path: Path, mlp_onnx: Path) -> None:
    from appliance.optimize.boot import DEFERRED, rebuild_deferred

    repo = build_repo(tmp_path, mlp_onnx)
    boot(repo, ORIN_NEWER_TRT, FakeTensorRTBuilderForTests(), defer_rebuilds=True)
    switched: list[str] = []
    out = io.StringIO()
    failing = FakeTensorRTBuilderForTests(fail="out of memory while building")
    done = rebuild_deferred(repo, ORIN_NEWER_TRT, failing, out, switched=switched.append)
    assert [o.action for o in done] == ["onnxruntime"] and switched == []
    assert "mlp/1: FAILED: rebuild failed: out of memory while building" in out.getvalue()
    assert (
        read_config(repo / "mlp" / "config.pbtxt").backend == "onnxruntime" and not (repo / "mlp" / DEFERRED).exists()
    )
    # the next boot leaves it there, as after a failed rebuild at boot
    outcomes, _ = boot(repo, ORIN_NEWER_TRT, failing, defer_rebuilds=True)
    assert outcomes[0].action == "onnxruntime-earlier" and len(failing.specs) == 1


def test_rebuild_deferred_asks_the_running_service_and_it_keeps_serving(
    tmp_path: Path, mlp_onnx: Path, server_factory: object
) -> None:
    """The real service (explicit mode, every model loaded at start, as the image runs it) serves the model on ONNX
    Runtime while rebuild-deferred runs; its load request reaches the service. Here the swap itself fails (no
    TensorRT on this machine): the service keeps the ONNX Runtime version, no request fails, and the command
    says the engines serve from the next start."""
    repo = build_repo(tmp_path, mlp_onnx)
    boot(repo, ORIN_NEWER_TRT, FakeTensorRTBuilderForTests(), defer_rebuilds=True)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "*")  # type: ignore[operator]
    x = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
    assert httpx.post(f"{server.base}/v2/models/mlp/infer", json=body, timeout=10).status_code == 200
    device = write_device(ORIN_NEWER_TRT, tmp_path / "newer.json")
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = main(["rebuild-deferred", str(repo), "--device", str(device), "--service-url", server.base],
                    builder=FakeTensorRTBuilderForTests(tensorrt_version="10.7.0"))  # fmt: skip
    assert code == 0
    assert "mlp: on TensorRT from the next start (the service did not reload it: HTTP Error 400" in out.getvalue()
    assert "model 'mlp' version 1 failed to load" in server.log() and "the tensorrt backend needs" in server.log()
    reply = httpx.post(f"{server.base}/v2/models/mlp/infer", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    expected = ort.InferenceSession(str(mlp_onnx)).run(["logits"], {"input": x})[0]
    assert np.allclose(np.array(reply.json()["outputs"][0]["data"], np.float32).reshape(2, 10), expected, atol=1e-5)

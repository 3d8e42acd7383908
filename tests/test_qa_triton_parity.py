"""Triton's QA models on the real Triton and on the appliance, side by side (issue 8): the same requests to both,
the same answers expected. Triton is the wheel's ``tritonserver`` 2.51 serving the same ONNX files through its
python backend (``appliance.reference_triton``); everything compared here (readiness, metadata, version
selection, request checks, classification) is Triton's core and frontends, not the backend.

Where the two differ on purpose, the appliance's error starts with Triton's text and adds what it names (the input
and its shape after a batch-size error, the model's outputs after an unknown one): an error is the same when the
status is and the appliance's message starts with Triton's. Left out: JSON tensors of FP16 (Triton refuses them,
the appliance takes them) and FP64 (Triton parses JSON numbers to within one unit in the last place, the
appliance exactly), classification of BYTES outputs (Triton 2.51 crashes), and requests with an extra input or
inputs of different batch sizes (Triton's text there lists its inputs in hash order, without a bracket).

A subset of the set, one model per version policy and a few datatypes, keeps Triton's python-backend stubs (one
process per version) few."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from appliance import reference_triton
from tests.support.appliance import running_server
from tests.support.qa_models import QaModel, inputs, qa_models

try:
    reference_triton.find_triton_install()
except reference_triton.TritonStartError as exc:  # pragma: no cover - the test extras install it
    pytest.skip(f"real tritonserver unavailable: {exc}", allow_module_level=True)

CHOSEN = [
    "onnx_int8_int8_int8",  # latest { num_versions: 1 } of 3
    "onnx_nobatch_int16_int16_int16",  # latest { num_versions: 2 } of 3
    "onnx_int32_int32_int32",  # all
    "onnx_float16_float16_float16",  # specific [1] of 3
    "onnx_nobatch_float32_float32_float32",  # specific [1, 3] of 3
    "onnx_int32_int8_int16",
    "onnx_object_object_object",
    "onnx_nobatch_int32_object_int32",
    "onnx_uint64_uint64_uint64",
    "onnx_bool_bool_bool",
]
MODELS = [m for m in qa_models() if m.name in CHOSEN]
TRANSPORTS = ["http", "grpc"]
NO_JSON = {"FP16", "FP64"}

Probe = Callable[[Any, str, QaModel], Any]


def request(
    client: Any,
    transport: str,
    model: QaModel,
    arrays: dict[str, tuple[str, np.ndarray]],
    version: str = "",
    outputs: list[str] | None = None,
    class_count: int = 0,
    binary: bool = True,
) -> dict[str, Any]:
    module: Any = grpcclient if transport == "grpc" else httpclient
    tensors = []
    for name, (datatype, data) in arrays.items():
        tensor = module.InferInput(name, list(data.shape), datatype)
        if transport == "http":
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    requested = None
    if outputs:
        extra = {"binary_data": binary} if transport == "http" else {}
        requested = [module.InferRequestedOutput(o, class_count=class_count, **extra) for o in outputs]
    result = client.infer(model.name, tensors, model_version=version, outputs=requested)
    return {name: _plain(result.as_numpy(name)) for name in model.outputs}


def _plain(array: np.ndarray | None) -> Any:
    """dtype, shape and values, BYTES as bytes whichever way they came."""
    if array is None:
        return None
    if array.dtype == object:
        array = np.array([v.encode() if isinstance(v, str) else v for v in array.reshape(-1)], object).reshape(
            array.shape
        )
    return str(array.dtype), array.shape, array.tolist()


def good(model: QaModel, batch: int = 3, seed: int = 7) -> dict[str, tuple[str, np.ndarray]]:
    in0, in1 = inputs(model, batch, seed)
    return {"INPUT0": (model.input, in0), "INPUT1": (model.input, in1)}


def metadata(client: Any, transport: str, model: QaModel, version: str = "") -> dict[str, Any]:
    meta = (
        client.get_model_metadata(model.name, version)
        if transport == "http"
        else client.get_model_metadata(model.name, version, as_json=True)
    )
    tensors = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"] + meta["outputs"]]
    return {"name": meta["name"], "versions": meta["versions"], "tensors": tensors}


def _metadata_of(version: str) -> Probe:
    return lambda c, t, m: metadata(c, t, m, version)


def _infer(**options: Any) -> Probe:
    """A good request with ``options`` of :func:`request` (version, outputs, class_count, binary)."""
    return lambda c, t, m: request(c, t, m, good(m), **options)


def probes(model: QaModel) -> dict[str, Probe]:
    """Every request made of ``model``, by name."""
    found: dict[str, Probe] = {
        "readiness": lambda c, t, m: [c.is_model_ready(m.name, v) for v in ("", "1", "2", "3", "4")],
        "metadata": lambda c, t, m: metadata(c, t, m),
        "infer, no version": lambda c, t, m: request(c, t, m, good(m)),
        "missing input": lambda c, t, m: request(c, t, m, {"INPUT0": good(m)["INPUT0"]}),
        "unknown output": lambda c, t, m: request(c, t, m, good(m), outputs=["NOPE"]),
        "shorter shape": lambda c, t, m: request(
            c, t, m, {**good(m), "INPUT0": (m.input, good(m)["INPUT0"][1][..., :-1])}
        ),
        "other datatype": lambda c, t, m: request(
            c, t, m, {**good(m), "INPUT1": ("FP64", np.zeros(m.shape(3), np.float64))}
        ),
    }
    for version in ("1", "2", "3"):
        found[f"metadata v{version}"] = _metadata_of(version)
        found[f"infer v{version}"] = _infer(version=version)
    for name, datatype in model.outputs.items():
        if model.input not in NO_JSON and datatype not in NO_JSON:
            found[f"{name} alone, JSON"] = _infer(outputs=[name], binary=False)
        if datatype != "BYTES":
            found[f"{name} top 3"] = _infer(outputs=[name], class_count=3)
    if model.batched:
        found["batch 8"] = lambda c, t, m: request(c, t, m, good(m, 8))
        found["batch 9"] = lambda c, t, m: request(c, t, m, good(m, 9))
        found["no batch dimension"] = lambda c, t, m: request(c, t, m, {n: (d, x[0]) for n, (d, x) in good(m).items()})
    return found


CASES = [
    pytest.param(model, name, transport, id=f"{model.name}-{name.replace(' ', '_')}-{transport}")
    for model in MODELS
    for name in probes(model)
    for transport in TRANSPORTS
]


@contextlib.contextmanager
def clients(http_url: str, grpc_url: str) -> Iterator[dict[str, Any]]:
    made = {"http": httpclient.InferenceServerClient(http_url), "grpc": grpcclient.InferenceServerClient(grpc_url)}
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """{"triton": clients, "appliance": clients} over the same models."""
    root: Path = tmp_path_factory.mktemp("qa_parity")
    for model in MODELS:
        model.write(root / "repo")
    triton_repo = reference_triton.write_python_backend_repository(
        root / "repo", root / "triton-repo", max_queue_delay_us=None
    )
    with (
        reference_triton.running_tritonserver(triton_repo, root / "triton") as triton,
        running_server(root / "repo", root / "appliance.log") as appliance,
        clients(triton.http_url, triton.grpc_url) as triton_clients,
        clients(appliance.http_url, appliance.grpc_url) as appliance_clients,
    ):
        yield {"triton": triton_clients, "appliance": appliance_clients}


def outcome(probe: Probe, client: Any, transport: str, model: QaModel) -> tuple[str, Any, str]:
    """("ok", answer, "") or ("error", status, message)."""
    try:
        return "ok", probe(client, transport, model), ""
    except InferenceServerException as exc:
        return "error", str(exc.status()), str(exc.message())


@pytest.mark.parametrize(("model", "probe", "transport"), CASES)
def test_the_appliance_answers_as_triton_does(
    servers: dict[str, dict[str, Any]], model: QaModel, probe: str, transport: str
) -> None:
    run = probes(model)[probe]
    kind, triton_answer, triton_text = outcome(run, servers["triton"][transport], transport, model)
    got_kind, answer, text = outcome(run, servers["appliance"][transport], transport, model)
    assert (got_kind, answer) == (kind, triton_answer), f"Triton: {triton_text}; appliance: {text}"
    assert text.startswith(triton_text), f"Triton: {triton_text!r}; appliance: {text!r}"

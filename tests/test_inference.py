"""Inference through the real tritonclient (HTTP and gRPC) and raw HTTP / gRPC, compared with in-process
ONNX Runtime on the same model files: the demo models and an identity model per datatype."""

from __future__ import annotations

import json
import queue
import struct

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.support import models
from tests.support.appliance import ServerProcess
from tests.support.models import ModelsRepo
from tests.support.onnx_reference import assert_same, ort_run

DATATYPES = list(models.DATATYPES)


def demo_inputs(name: str, batch: int, seed: int = 0) -> tuple[str, str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "mlp":
        return "input", "logits", rng.standard_normal((batch, 64)).astype(np.float32)
    return "image", "probabilities", rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)


def demo_file(demo_repo, name: str) -> bytes:
    return (demo_repo / name / "1" / "model.onnx").read_bytes()


# -- demo models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_http_demo_models_equal_onnxruntime(demo_server: ServerProcess, demo_repo, model, binary_in, binary_out):
    in_name, out_name, x = demo_inputs(model, 3)
    client = demo_server.http()
    inp = httpclient.InferInput(in_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = httpclient.InferRequestedOutput(out_name, binary_data=binary_out)
    result = client.infer(model, [inp], outputs=[out], request_id="r-1")
    expected = ort_run(demo_file(demo_repo, model), {in_name: x})[out_name]
    assert_same(result.as_numpy(out_name), expected)
    response = result.get_response()
    assert response["model_name"] == model and response["model_version"] == "1" and response["id"] == "r-1"


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_grpc_demo_models_equal_onnxruntime(demo_server: ServerProcess, demo_repo, model):
    in_name, out_name, x = demo_inputs(model, 5, seed=1)
    client = demo_server.grpc()
    inp = grpcclient.InferInput(in_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], request_id="g-1")
    expected = ort_run(demo_file(demo_repo, model), {in_name: x})[out_name]
    assert_same(result.as_numpy(out_name), expected)
    response = result.get_response()
    assert response.model_name == model and response.model_version == "1" and response.id == "g-1"


def test_raw_json_request_equals_onnxruntime(demo_server: ServerProcess, demo_repo):
    """A pure-JSON request (nested data, no binary extension) gets a pure-JSON answer."""
    _, _, x = demo_inputs("mlp", 2, seed=4)
    body = {
        "id": "json-1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.tolist()}],
        "outputs": [{"name": "logits"}],
    }
    response = httpx.post(f"{demo_server.base}/v2/models/mlp/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["id"] == "json-1" and doc["model_name"] == "mlp"
    (output,) = doc["outputs"]
    assert output["name"] == "logits" and output["datatype"] == "FP32" and output["shape"] == [2, 10]
    expected = ort_run(demo_file(demo_repo, "mlp"), {"input": x})["logits"]
    # JSON numbers are float64 renderings of float32 values: they round-trip exactly.
    assert_same(np.array(output["data"], dtype=np.float32).reshape(2, 10), expected)


def test_version_path_and_all_outputs_by_default(demo_server: ServerProcess, demo_repo):
    _, _, x = demo_inputs("cnn", 1, seed=2)
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": x.reshape(-1).tolist()}]}
    response = httpx.post(f"{demo_server.base}/v2/models/cnn/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    expected = ort_run(demo_file(demo_repo, "cnn"), {"image": x})["probabilities"]
    assert_same(np.array(output["data"], dtype=np.float32).reshape(1, 10), expected)


# -- every datatype ------------------------------------------------------------------------------


def identity_names(datatype: str) -> list[str]:
    base = f"identity_{datatype.lower()}"
    return [base, base + "_nobatch"]


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_every_datatype(models_server: ServerProcess, models_repo: ModelsRepo, datatype, binary):
    client = models_server.http()
    for name in identity_names(datatype):
        x = models.sample(datatype, (2, 5), seed=len(name))
        inp = httpclient.InferInput("INPUT0", list(x.shape), datatype)
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
        result = client.infer(name, [inp], outputs=[out])
        got = result.as_numpy("OUTPUT0")
        if datatype == "BYTES" and not binary:  # tritonclient gives JSON strings back as str
            got = np.array([s.encode() for s in got.reshape(-1)], dtype=object).reshape(got.shape)
        expected = ort_run(models_repo.files[name], {"INPUT0": x})["OUTPUT0"]
        assert result.get_output("OUTPUT0")["datatype"] == datatype
        assert_same(got, expected)
        assert_same(got, x)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_grpc_every_datatype(models_server: ServerProcess, models_repo: ModelsRepo, datatype):
    client = models_server.grpc()
    for name in identity_names(datatype):
        x = models.sample(datatype, (3, 4), seed=7)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        result = client.infer(name, [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
        assert result.get_output("OUTPUT0").datatype == datatype
        expected = ort_run(models_repo.files[name], {"INPUT0": x})["OUTPUT0"]
        assert_same(result.as_numpy("OUTPUT0"), expected)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_raw_json_every_datatype(models_server: ServerProcess, models_repo: ModelsRepo, datatype):
    """Hand-written KServe v2 JSON: booleans, integers at their extremes, floats and strings."""
    name = f"identity_{datatype.lower()}"
    x = models.sample(datatype, (2, 3), seed=11)
    if datatype == "BYTES":
        data = [b.decode() for b in x.reshape(-1)]
    else:
        data = x.tolist()  # nested lists, Python bool/int/float
    body = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": [2, 3], "data": data}]}
    response = httpx.post(f"{models_server.base}/v2/models/{name}/infer", content=json.dumps(body))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == datatype and output["shape"] == [2, 3]
    expected = ort_run(models_repo.files[name], {"INPUT0": x})["OUTPUT0"]
    if datatype == "BYTES":
        got = np.array([s.encode() for s in output["data"]], dtype=object).reshape(2, 3)
    else:
        got = np.array(output["data"], dtype=models.DATATYPES[datatype][1]).reshape(2, 3)
    assert_same(got, expected)


def _grpc_stub(server: ServerProcess) -> tuple[grpc.Channel, service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_grpc_typed_contents(models_server: ServerProcess, models_repo: ModelsRepo, datatype):
    """Typed ``contents`` instead of raw_input_contents; the answer comes back as raw_output_contents."""
    name = f"identity_{datatype.lower()}"
    x = models.sample(datatype, (2, 3), seed=5)
    request = pb.ModelInferRequest(model_name=name, id="typed")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, TYPED_FIELD[datatype]).extend(x.reshape(-1).tolist())
    channel, stub = _grpc_stub(models_server)
    with channel:
        response = stub.ModelInfer(request, timeout=30)
    assert response.id == "typed" and response.outputs[0].datatype == datatype
    assert list(response.outputs[0].shape) == [2, 3]
    raw = response.raw_output_contents[0]
    if datatype == "BYTES":
        got = []
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            got.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        got_array = np.array(got, dtype=object).reshape(2, 3)
    else:
        got_array = np.frombuffer(raw, dtype=models.DATATYPES[datatype][1]).reshape(2, 3)
    assert_same(got_array, ort_run(models_repo.files[name], {"INPUT0": x})["OUTPUT0"])


def test_grpc_typed_contents_fp16_is_refused(models_server: ServerProcess):
    """FP16 has no typed contents field: the request must name the input and ask for raw contents."""
    request = pb.ModelInferRequest(model_name="identity_fp16")
    request.inputs.add(name="INPUT0", datatype="FP16", shape=[1, 2])
    channel, stub = _grpc_stub(models_server)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INPUT0" in info.value.details()


def test_reshape_model(models_server: ServerProcess, models_repo: ModelsRepo):
    """Client shape [B, 4]; the model sees [B, 2, 2]; the answer is [B, 4] again, on both transports."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    expected = ort_run(models_repo.files["reshape"], {"x": x.reshape(3, 2, 2)})["y"].reshape(3, 4)
    http = models_server.http()
    inp = httpclient.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    assert_same(http.infer("reshape", [inp]).as_numpy("y"), expected)
    g = models_server.grpc()
    ginp = grpcclient.InferInput("x", [3, 4], "FP32")
    ginp.set_data_from_numpy(x)
    assert_same(g.infer("reshape", [ginp]).as_numpy("y"), expected)
    meta = http.get_model_metadata("reshape")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


# -- streaming -----------------------------------------------------------------------------------


def test_grpc_stream_infer(demo_server: ServerProcess, demo_repo):
    """ModelStreamInfer through tritonclient's start_stream: every response arrives with its id, and an error
    in one request comes back on the stream without ending it."""
    client = demo_server.grpc()
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    sent = {}
    try:
        for i in range(6):
            _, _, x = demo_inputs("mlp", 1 + i % 3, seed=100 + i)
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("mlp", [inp], request_id=f"s-{i}")
            sent[f"s-{i}"] = x
        bad = grpcclient.InferInput("input", [1, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
        client.async_stream_infer("mlp", [bad], request_id="s-bad")
        got = {}
        errors = []
        for _ in range(7):
            result, error = results.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("logits")
    finally:
        client.stop_stream()
    assert set(got) == set(sent)
    for request_id, x in sent.items():
        assert_same(got[request_id], ort_run(demo_file(demo_repo, "mlp"), {"input": x})["logits"])
    assert len(errors) == 1 and "input" in str(errors[0])

"""Every bad input of the issue's table, on REST (status + JSON error naming the input) and gRPC (code + message
naming the input). Queue full and timeouts are in test_batching.py, where the slow model can fill a queue."""

from __future__ import annotations

import gzip
import json

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.appliance import ServerProcess

LIMIT = 4 * 1024 * 1024  # --max-request-bytes of demo_server

GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}


def post(server: ServerProcess, path: str, body: bytes | dict, headers: dict | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.post(f"{server.base}{path}", content=content, headers=headers or {}, timeout=30)


def assert_error(response: httpx.Response, status: int, *names: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message
    for name in names:
        assert name in message, (name, message)
    return message


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


# -- REST ----------------------------------------------------------------------------------------


def test_rest_unknown_model_and_version(demo_server: ServerProcess):
    assert_error(post(demo_server, "/v2/models/nope/infer", {"inputs": [GOOD]}), 404, "nope")
    assert_error(post(demo_server, "/v2/models/mlp/versions/7/infer", {"inputs": [GOOD]}), 404, "7")
    assert_error(httpx.get(f"{demo_server.base}/v2/models/nope"), 404, "nope")
    assert_error(httpx.get(f"{demo_server.base}/v2/models/nope/config"), 404, "nope")
    assert_error(httpx.get(f"{demo_server.base}/v2/models/mlp/versions/9/config"), 404, "9")
    assert httpx.get(f"{demo_server.base}/v2/models/nope/ready").status_code == 404


@pytest.mark.parametrize(
    "inputs, names",
    [
        ([{**GOOD, "datatype": "INT32", "data": [1] * 64}], ["'input'", "INT32", "FP32"]),
        ([{**GOOD, "shape": [1, 63], "data": [0.5] * 63}], ["'input'", "63"]),
        ([{**GOOD, "shape": [64], "data": [0.5] * 64}], ["'input'"]),
        ([{**GOOD, "shape": [33, 64], "data": [0.5] * 64 * 33}], ["'input'", "33"]),
        ([{**GOOD, "shape": [1, 64], "data": [0.5] * 60}], ["'input'", "60"]),
        ([{**GOOD, "data": ["a"] * 64}], ["'input'"]),
        ([{**GOOD, "datatype": "FP8"}], ["'input'", "FP8"]),
        ([{"name": "input", "datatype": "FP32", "shape": [1, 64]}], ["'input'"]),
        ([], ["'input'"]),
        ([GOOD, {**GOOD, "name": "bogus"}], ["'bogus'"]),
        ([GOOD, GOOD], ["'input'"]),
    ],
    ids=[
        "datatype",
        "shape",
        "no-batch-dim",
        "batch-too-big",
        "count",
        "strings",
        "unknown-type",
        "no-data",
        "missing",
        "extra",
        "twice",
    ],
)
def test_rest_bad_inputs_are_400_naming_the_input(demo_server: ServerProcess, inputs, names):
    assert_error(post(demo_server, "/v2/models/mlp/infer", {"inputs": inputs}), 400, *names)


def test_rest_unknown_output_is_400(demo_server: ServerProcess):
    body = {"inputs": [GOOD], "outputs": [{"name": "nope"}]}
    assert_error(post(demo_server, "/v2/models/mlp/infer", body), 400, "'nope'")


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b'{"inputs": 5}', b'{"inputs": [7]}'])
def test_rest_malformed_json_is_400(demo_server: ServerProcess, body):
    assert_error(post(demo_server, "/v2/models/mlp/infer", body), 400)


@pytest.mark.parametrize(
    "path, body, names",
    [
        ("/v2/models/mlp/infer", b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
        (
            "/v2/repository/models/mlp/load",
            b'{"parameters":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            ["nested too deeply"],
        ),
        (
            "/v2/models/mlp/infer",
            {"inputs": [{**GOOD, "shape": [1] * 33, "data": [0.5]}]},
            ["'input'", "33 dimensions"],
        ),
        ("/v2/models/mlp/versions/" + "9" * 5000 + "/infer", {"inputs": [GOOD]}, ["not a number"]),
        ("/v2/models/mlp/versions/\u00b2/infer", {"inputs": [GOOD]}, ["not a number"]),
    ],
    ids=["nesting", "nesting-load", "rank", "version-digits", "version-superscript"],
)
def test_rest_pathological_input_is_a_named_400(demo_server: ServerProcess, path, body, names):
    assert_error(post(demo_server, path, body), 400, *names)


def test_rest_binary_sizes_that_do_not_add_up(demo_server: ServerProcess):
    data = np.zeros((1, 64), np.float32).tobytes()
    param = {"name": "input", "datatype": "FP32", "shape": [1, 64]}
    # binary_data_size past the end of the body
    body, headers = binary_body({"inputs": [{**param, "parameters": {"binary_data_size": 300}}]}, data)
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 400, "'input'")
    # size consistent with the body, but not with the shape
    body, headers = binary_body({"inputs": [{**param, "parameters": {"binary_data_size": 200}}]}, data[:200])
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 400, "'input'", "200", "256")
    # bytes left over after the last binary input
    body, headers = binary_body({"inputs": [{**param, "parameters": {"binary_data_size": 256}}]}, data, b"xx")
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 400, "2 bytes")
    # header length longer than the body
    body, _ = binary_body({"inputs": [{**param, "parameters": {"binary_data_size": 256}}]}, data)
    assert_error(
        post(demo_server, "/v2/models/mlp/infer", body, {"Inference-Header-Content-Length": str(len(body) + 1)}), 400
    )
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, {"Inference-Header-Content-Length": "x"}), 400)
    # BYTES element running past its data
    bad_bytes = {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 6}}
    body, headers = binary_body({"inputs": [bad_bytes]}, b"\x09\x00\x00\x00ab")
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 400, "'INPUT0'")


def test_rest_body_over_the_limit_is_413(demo_server: ServerProcess):
    n = LIMIT // 256 + 1
    data = np.zeros((n, 64), np.float32).tobytes()
    body, headers = binary_body(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [n, 64], "parameters": {"binary_data_size": len(data)}}
            ]
        },
        data,
    )
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 413, str(LIMIT))


def test_rest_compressed_body_over_the_limit_is_413(demo_server: ServerProcess):
    """A small gzip body that inflates past the limit is refused, not inflated into memory."""
    inflated = json.dumps({"inputs": [{**GOOD, "data": [0.0] * (LIMIT // 4)}]}).encode()
    body = gzip.compress(inflated)
    assert len(body) < LIMIT
    response = post(demo_server, "/v2/models/mlp/infer", body, {"Content-Encoding": "gzip"})
    assert_error(response, 413, str(LIMIT))


def test_rest_gzip_body_within_the_limit_works(demo_server: ServerProcess):
    body = gzip.compress(json.dumps({"inputs": [GOOD]}).encode())
    response = post(demo_server, "/v2/models/mlp/infer", body, {"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 10]


def test_tritonclient_http_raises_with_the_message(demo_server: ServerProcess):
    client = demo_server.http()
    inp = httpclient.InferInput("input", [1, 63], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [inp])
    assert info.value.status() == "400" and "'input'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [inp])
    assert info.value.status() == "404"


# -- gRPC ----------------------------------------------------------------------------------------


def grpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30, **kwargs)
    return info.value


@pytest.fixture
def stub(demo_server: ServerProcess):
    with grpc.insecure_channel(demo_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def request_with(
    *tensors: tuple[str, str, list[int], bytes], model: str = "mlp", version: str = ""
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


ONES = np.ones((1, 64), np.float32).tobytes()


def test_grpc_unknown_model_and_version(demo_server: ServerProcess, stub):
    error = grpc_error(stub.ModelInfer, request_with(("input", "FP32", [1, 64], ONES), model="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()
    error = grpc_error(stub.ModelInfer, request_with(("input", "FP32", [1, 64], ONES), version="7"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "7" in error.details()
    for call, message in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="nope")),
        (stub.ModelConfig, pb.ModelConfigRequest(name="nope")),
        (stub.ModelReady, pb.ModelReadyRequest(name="nope")),
        (stub.ModelStatistics, pb.ModelStatisticsRequest(name="nope")),
    ):
        error = grpc_error(call, message)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()


@pytest.mark.parametrize(
    "tensors, names",
    [
        ([("input", "INT32", [1, 64], np.ones((1, 64), np.int32).tobytes())], ["'input'", "INT32"]),
        ([("input", "FP32", [1, 63], ONES[:252])], ["'input'", "63"]),
        ([("input", "FP32", [1, 64], ONES[:100])], ["'input'", "100"]),
        ([("input", "FP32", [1, 64], ONES + b"\0\0\0\0")], ["'input'", "260"]),
        ([("input", "FP32", [1, -64], ONES)], ["'input'"]),
        ([("input", "NOPE", [1, 64], ONES)], ["'input'", "NOPE"]),
        ([], ["'input'"]),
        ([("input", "FP32", [1, 64], ONES), ("bogus", "FP32", [1, 64], ONES)], ["'bogus'"]),
    ],
    ids=["datatype", "shape", "raw-short", "raw-long", "negative-dim", "unknown-type", "missing", "extra"],
)
def test_grpc_bad_inputs_are_invalid_argument_naming_the_input(stub, tensors, names):
    error = grpc_error(stub.ModelInfer, request_with(*tensors))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    for name in names:
        assert name in error.details(), (name, error.details())


def test_grpc_raw_contents_count_mismatch(stub):
    request = request_with(("input", "FP32", [1, 64], ONES))
    request.raw_input_contents.append(ONES)
    error = grpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in error.details()


def test_grpc_pathological_tensors_are_invalid_argument(stub):
    rank = request_with(("input", "FP32", [1] * 40, b"\0\0\0\0"))
    both = request_with(("input", "FP32", [1, 64], ONES))
    both.inputs[0].contents.fp32_contents.extend([1.0] * 64)
    version = request_with(("input", "FP32", [1, 64], ONES), version="9" * 5000)
    for request, text in (
        (rank, "'input': shape has 40 dimensions"),
        (both, "contents field must not be specified when using raw_input_contents for 'input' for model 'mlp'"),
        (version, "not a number"),
    ):
        error = grpc_error(stub.ModelInfer, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and text in error.details()


def test_grpc_typed_contents_count_mismatch(stub):
    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend([1.0] * 10)
    error = grpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'input'" in error.details()


@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata", "RepositoryIndex"])
def test_grpc_malformed_protobuf_is_invalid_argument(demo_server: ServerProcess, method):
    with grpc.insecure_channel(demo_server.grpc_url) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")  # bytes in, bytes out
        error = grpc_error(call, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in error.details()


def test_bytes_shape_far_larger_than_its_data_is_refused_before_allocating(demo_server: ServerProcess, stub):
    """[11, 43, 7264934] BYTES elements from a few bytes (found by test_decode_properties): 400 / INVALID_ARGUMENT
    naming the input, with no 25 GiB array made first."""
    shape = [11, 43, 7264934]
    error = grpc_error(stub.ModelInfer, request_with(("input", "BYTES", shape, b"\x01\x00\x00\x00a")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'input'" in error.details()
    header = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": 5}}]}
    body, headers = binary_body(header, b"\x01\x00\x00\x00a")
    assert_error(post(demo_server, "/v2/models/mlp/infer", body, headers), 400, "'input'")
    assert demo_server.alive()


def test_empty_shape_numpy_cannot_make_is_refused(demo_server: ServerProcess, stub):
    """A 0 in the shape holds no element, but the other dimensions multiply past what NumPy can make (found by
    test_decode_properties: typed BOOL contents over gRPC ended in a ValueError): 400 / INVALID_ARGUMENT."""
    shape = [0, 26, 38, 52, 62, 68, 123, 15247, 22706]
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="input", datatype="BOOL", shape=shape).contents.SetInParent()
    error = grpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'input'" in error.details()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": []}]}
    assert_error(post(demo_server, "/v2/models/mlp/infer", body), 400, "'input'")
    assert demo_server.alive()


def test_grpc_malformed_protobuf_on_the_stream(demo_server: ServerProcess):
    """A garbage message on ModelStreamInfer is answered on the stream with an error; the stream goes on."""
    good = request_with(("input", "FP32", [1, 64], ONES)).SerializeToString()
    with grpc.insecure_channel(demo_server.grpc_url) as channel:
        call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [pb.ModelStreamInferResponse.FromString(r) for r in call(iter([b"\x0a\xff\xff", good]), timeout=30)]
    assert len(replies) == 2
    errors = [r for r in replies if r.error_message]
    assert len(errors) == 1 and "malformed" in errors[0].error_message
    ok = [r for r in replies if not r.error_message]
    assert list(ok[0].infer_response.outputs[0].shape) == [1, 10]


def test_grpc_message_over_the_limit_is_resource_exhausted(stub):
    n = LIMIT // 256 + 1
    request = request_with(("input", "FP32", [n, 64], np.zeros((n, 64), np.float32).tobytes()))
    error = grpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tritonclient_grpc_raises_with_the_code(demo_server: ServerProcess):
    client = demo_server.grpc()
    inp = grpcclient.InferInput("input", [1, 64], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "'input'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [inp], model_version="3")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_server_survives_bad_input_without_tracebacks(demo_server: ServerProcess):
    """After everything above, the server still serves, and its log shows no stack trace."""
    response = post(demo_server, "/v2/models/mlp/infer", {"inputs": [GOOD]})
    assert response.status_code == 200, response.text
    assert demo_server.alive()
    assert "Traceback" not in demo_server.log()

"""Where a Triton user meets the appliance on the first day (issue 8): a model with a BYTES input serves without a
``model_warmup``, a version the version policy does not serve is "not ready" rather than an error, and the errors
clients match on carry Triton's own texts. Real server, real tritonclient, both transports."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.appliance import ServerProcess, running_server

BYTES_CONFIG = """\
name: "{name}"
backend: "onnxruntime"
max_batch_size: 4
input [ {{ name: "x" data_type: TYPE_STRING dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_INT32 dims: [ 4 ] }} ]
{warmup}
"""

# Triton's zero_data for a BYTES input is empty strings, which a model that parses numbers rejects.
ZERO_WARMUP = """\
model_warmup [ { name: "zeros" batch_size: 1
  inputs { key: "x" value: { data_type: TYPE_STRING dims: [ 4 ] zero_data: true } } } ]
"""


def parse_numbers_model() -> bytes:
    """BYTES in, INT32 out: each string parsed as a number, as Triton's QA string models do (fails on "")."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)],
        "parse_numbers",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def write_bytes_model(repo: Path, name: str, warmup: str = "") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.onnx").write_bytes(parse_numbers_model())
    (repo / name / "config.pbtxt").write_text(BYTES_CONFIG.format(name=name, warmup=textwrap.dedent(warmup)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("parity") / "repo"
    write_bytes_model(repo, "parse")
    write_bytes_model(repo, "parse_warm", ZERO_WARMUP)
    models.write_versioned(repo, "latest1", "{ latest: { num_versions: 1 } }")
    with running_server(repo, repo.parent / "server.log") as running:
        yield running


def infer(server: ServerProcess, transport: str, model: str, version: str = "") -> np.ndarray:
    x = np.array([["1", "22", "-3", "40"]], dtype=object)
    client = grpcclient if transport == "grpc" else httpclient
    tensor = client.InferInput("x", [1, 4], "BYTES")
    tensor.set_data_from_numpy(x)
    connection = server.grpc() if transport == "grpc" else server.http()
    result = connection.infer(model, [tensor], model_version=version)
    return result.as_numpy("y")


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_bytes_model_without_model_warmup_serves(server: ServerProcess, transport: str) -> None:
    client = server.grpc() if transport == "grpc" else server.http()
    assert client.is_model_ready("parse")
    np.testing.assert_array_equal(infer(server, transport, "parse"), [[1, 22, -3, 40]])
    assert "no implicit warm-up (input 'x' is BYTES)" in server.log()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_failing_model_warmup_stays_a_load_error(server: ServerProcess, transport: str) -> None:
    client = server.grpc() if transport == "grpc" else server.http()
    assert not client.is_model_ready("parse_warm")
    with pytest.raises(InferenceServerException) as info:
        infer(server, transport, "parse_warm", "1")
    assert info.value.status() in ("503", "StatusCode.UNAVAILABLE")
    assert "Request for unknown model: 'parse_warm' version 1 is not at ready state" in info.value.message()
    assert "warm-up 'zeros' failed" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        infer(server, transport, "parse_warm")
    assert "Request for unknown model: 'parse_warm' has no available versions" in info.value.message()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_version_the_policy_does_not_serve_is_not_ready(server: ServerProcess, transport: str) -> None:
    client = server.grpc() if transport == "grpc" else server.http()
    assert client.is_model_ready("latest1") and client.is_model_ready("latest1", "3")
    assert not client.is_model_ready("latest1", "1")  # on disk, not served by the policy
    assert not client.is_model_ready("latest1", "9")  # not on disk at all


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_unknown_models_and_versions_get_tritons_texts(server: ServerProcess, transport: str) -> None:
    client = server.grpc() if transport == "grpc" else server.http()
    for call, text in (
        (lambda: infer(server, transport, "nope"), "Request for unknown model: 'nope' is not found"),
        (lambda: infer(server, transport, "parse", "3"), "Request for unknown model: 'parse' version 3 is not found"),
        (lambda: client.get_model_metadata("nope"), "Request for unknown model: 'nope' is not found"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() in ("404", "StatusCode.NOT_FOUND")
        assert info.value.message() == text

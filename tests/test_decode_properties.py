"""The whole class of bad input, not a list of cases: generated REST bodies (JSON, with and without binary data)
and gRPC messages go through each transport's decoder and then the model's checks, against the demo models
loaded in process with ONNX Runtime. Every one ends in a request the model accepts or in a named client error
(INVALID_ARGUMENT, NOT_FOUND or UNAVAILABLE), never in another exception: a 500 or a gRPC UNKNOWN."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from appliance.backends import factory_for
from appliance.core import datatypes
from appliance.core.errors import InferenceError, Status
from appliance.core.repository import LoadOptions, ModelRepository
from appliance.core.stats import Metrics
from appliance.core.types import InferRequest
from appliance.demo import write_demo_repository
from appliance.grpc.codec import decode_infer_request as decode_grpc
from appliance.rest.codec import decode_infer_request as decode_rest

CLIENT_ERRORS = {Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.UNAVAILABLE}
EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRepository]:
    root = write_demo_repository(tmp_path_factory.mktemp("demo") / "repo")[0].parent
    loop = asyncio.new_event_loop()
    repo = ModelRepository(Path(root), LoadOptions(), Metrics(), factory_for)
    for name in repo.names_on_disk():
        loop.run_until_complete(repo.load(name))
    yield repo
    loop.run_until_complete(repo.unload_all())
    loop.close()


def check(repository: ModelRepository, decode: Any) -> None:
    """Decode, then check against the model the request names; only a client error may come out."""
    try:
        request: InferRequest = decode()
        repository.get(request.model_name, request.model_version).check(request)
    except InferenceError as exc:
        assert exc.status in CLIENT_ERRORS, (exc.status, exc.message)
        assert exc.message


names = st.sampled_from(["input", "image", "x", ""]) | st.text(max_size=8)
types = st.sampled_from([*datatypes.BY_NAME, "NOPE", ""])
dims = st.integers(-2, 70) | st.integers(-(2**63), 2**63 - 1)
shapes = (
    st.lists(st.integers(0, 3) | st.just(64), max_size=5)
    | st.lists(st.just(1), min_size=30, max_size=70)
    | st.lists(dims, max_size=40)
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=70,
)
models = st.sampled_from(["mlp", "cnn", "nope"])
versions = st.sampled_from(["", "1", "2", "0", "-1", "01", "\u00b2", "9" * 30]) | st.text(max_size=6)


@st.composite
def rest_tensors(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": draw(names), "datatype": draw(types), "shape": draw(shapes)}
    if draw(st.booleans()):
        tensor["data"] = draw(st.floats() | json_values | st.lists(st.floats(width=32), min_size=64, max_size=64))
    else:
        tensor["parameters"] = {"binary_data_size": draw(st.integers(-5, 300) | json_values)}
    if draw(st.booleans()):
        tensor = {k: v for k, v in tensor.items() if draw(st.booleans())} | draw(
            st.dictionaries(st.text(max_size=6), json_values, max_size=2)
        )
    return tensor


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    doc: Any = {"inputs": draw(st.lists(rest_tensors(), max_size=3))}
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": names}, optional={"parameters": json_values}), max_size=2)
        )
    if draw(st.booleans()):
        doc["parameters"] = draw(json_values)
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        doc = draw(json_values)
    head = json.dumps(doc).encode()
    if draw(st.booleans()):
        return head, None
    binary = draw(st.binary(max_size=600))
    header_length = draw(st.just(len(head)) | st.integers(-3, len(head) + len(binary) + 3))
    return head + binary, header_length


@given(body=rest_bodies(), model=models, version=versions)
@EXAMPLES
def test_every_rest_body_decodes_or_is_a_client_error(
    repository: ModelRepository, body: tuple[bytes, int | None], model: str, version: str
) -> None:
    check(repository, lambda: decode_rest(body[0], body[1], model, version)[0])


@given(body=st.binary(max_size=300), header_length=st.none() | st.integers(-2, 300))
@EXAMPLES
def test_every_byte_string_decodes_or_is_a_client_error(
    repository: ModelRepository, body: bytes, header_length: int | None
) -> None:
    check(repository, lambda: decode_rest(body, header_length, "mlp", "")[0])


@st.composite
def grpc_messages(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=draw(models), model_version=draw(versions))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(name=draw(names), datatype=draw(types), shape=draw(shapes))
        if raw:
            message.raw_input_contents.append(draw(st.binary(max_size=300) | st.just(b"\0" * 256) | st.just(b"\0" * 4)))
        if not raw or draw(st.booleans()):
            contents = tensor.contents
            contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=70)))
            contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5)))
            contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5)))
            contents.uint_contents.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=5)))
            contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=5)))
        if draw(st.booleans()):
            tensor.parameters["binary_data_size"].int64_param = draw(st.integers(-5, 300))
    if draw(st.booleans()):
        message.raw_input_contents.append(draw(st.binary(max_size=16)))
    for _ in range(draw(st.integers(0, 2))):
        output = message.outputs.add(name=draw(names))
        output.parameters["classification"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    for key in draw(st.lists(st.sampled_from(["priority", "timeout", "binary_data_output", "x"]), max_size=3)):
        param = message.parameters[key]
        match draw(st.integers(0, 3)):
            case 0:
                param.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
            case 1:
                param.uint64_param = draw(st.integers(0, 2**64 - 1))
            case 2:
                param.string_param = draw(st.text(max_size=4))
            case _:
                param.bool_param = draw(st.booleans())
    return message


@given(message=grpc_messages())
@EXAMPLES
def test_every_grpc_message_decodes_or_is_a_client_error(
    repository: ModelRepository, message: pb.ModelInferRequest
) -> None:
    check(repository, lambda: decode_grpc(message))

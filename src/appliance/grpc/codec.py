"""gRPC messages <-> core types (``inference.GRPCInferenceService`` from Triton's ``grpc_service.proto``).

Inputs come as ``raw_input_contents`` (what ``tritonclient.grpc`` sends) or as typed ``contents``; outputs go
back as ``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import service_pb2 as pb

from ..core import datatypes
from ..core.errors import InvalidArgument
from ..core.shared_memory import SHARED_MEMORY_PARAMS, shared_memory_ref
from ..core.types import InferRequest, InferResponse, InputTensor, RequestedOutput, SharedMemoryInput, SharedMemoryRef

# Typed contents field of each datatype (FP16 has none: raw only).
_CONTENTS_FIELD = {
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


def parameter_value(param: pb.InferParameter) -> Any:
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which else None


def _int_parameter(params: Any, key: str, what: str) -> int:
    if key not in params:
        return 0
    value = parameter_value(params[key])
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{what} parameter '{key}' must be a non-negative integer")
    return value


def _shared_memory(params: Any, what: str) -> SharedMemoryRef | None:
    # Looked up key by key: iterating a protobuf map runs in Python, and this is on every request's path
    found = {key: parameter_value(params[key]) for key in SHARED_MEMORY_PARAMS if key in params}
    return shared_memory_ref(found, what) if found else None


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    raw = message.raw_input_contents
    inputs = []
    in_shared_memory = []
    raw_index = 0  # raw_input_contents holds one entry per input that is not in shared memory, in order
    for tensor in message.inputs:
        what = f"input '{tensor.name}'"
        datatype = datatypes.by_name(tensor.datatype, what)
        shape = tuple(tensor.shape)
        datatypes.check_shape(shape, what)
        ref = _shared_memory(tensor.parameters, what) if tensor.parameters else None
        if ref is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"{what}: contents must not be given with 'shared_memory_region'")
            in_shared_memory.append(SharedMemoryInput(tensor.name, datatype.name, shape, ref))
            continue
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"contents field must not be specified when using raw_input_contents for '{tensor.name}' "
                    f"for model '{message.model_name}'"
                )
            if raw_index >= len(raw):
                raise InvalidArgument(
                    f"raw_input_contents has {len(raw)} entries for more inputs; give one per input that is not "
                    "in shared memory"
                )
            data = datatypes.from_raw(raw[raw_index], datatype, shape, what)
            raw_index += 1
        else:
            data = _from_contents(tensor, datatype, shape, what)
        inputs.append(InputTensor(tensor.name, datatype.name, shape, data))
    if raw_index != len(raw):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {raw_index} inputs not in shared memory; give one per input"
        )
    request = InferRequest(model_name=message.model_name, model_version=message.model_version, id=message.id)
    request.inputs = inputs
    request.shared_memory_inputs = in_shared_memory
    if message.outputs:
        request.outputs = [
            RequestedOutput(
                o.name,
                _int_parameter(o.parameters, "classification", f"output '{o.name}'"),
                shared_memory=_shared_memory(o.parameters, f"output '{o.name}'") if o.parameters else None,
            )
            for o in message.outputs
        ]
    params = message.parameters
    if params:
        request.priority = _int_parameter(params, "priority", "request")
        request.timeout_us = _int_parameter(params, "timeout", "request")
        request.parameters = {k: parameter_value(v) for k, v in params.items()}
    return request


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, datatype: datatypes.DataType, shape: tuple[int, ...], what: str
) -> NDArray[Any]:
    """A tensor from the typed ``contents`` fields."""
    field = _CONTENTS_FIELD.get(datatype.name)
    if field is None:
        raise InvalidArgument(f"{what}: {datatype.name} data must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(f"{what}: {len(values)} values in contents, but shape {list(shape)} holds {count}")
    if datatype.name == "BYTES":
        data = np.empty(count, dtype=object)
        data[:] = list(values)
        return data.reshape(shape)
    # uint64 values past int64's range would become float64 (and lose their low bits) in asarray
    array = np.asarray(values, dtype=np.uint64 if field == "uint64_contents" else None)
    data = array.astype(datatype.dtype).reshape(shape)
    if datatype.dtype.kind in "iu" and count and not np.array_equal(data.reshape(-1), array):
        raise InvalidArgument(f"{what}: a value is out of range for {datatype.name}")
    return data


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    for tensor in response.outputs:
        out = message.outputs.add()
        out.name = tensor.name
        out.datatype = tensor.datatype
        out.shape.extend(tensor.shape)
        # An output written into shared memory keeps its place with an empty entry, as Triton's does
        shared = tensor.shared_memory is not None
        message.raw_output_contents.append(b"" if shared else datatypes.to_raw(tensor.data))
    return message


def _set_parameter(param: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)

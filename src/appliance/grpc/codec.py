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
from ..core.types import InferRequest, InferResponse, InputTensor, RequestedOutput

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


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; give one per input"
        )
    inputs = []
    for index, tensor in enumerate(message.inputs):
        what = f"input '{tensor.name}'"
        datatype = datatypes.by_name(tensor.datatype, what)
        shape = tuple(tensor.shape)
        datatypes.check_shape(shape, what)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"contents field must not be specified when using raw_input_contents for '{tensor.name}' "
                    f"for model '{message.model_name}'"
                )
            data = datatypes.from_raw(raw[index], datatype, shape, what)
        else:
            data = _from_contents(tensor, datatype, shape, what)
        inputs.append(InputTensor(tensor.name, datatype.name, shape, data))
    request = InferRequest(model_name=message.model_name, model_version=message.model_version, id=message.id)
    request.inputs = inputs
    if message.outputs:
        request.outputs = [
            RequestedOutput(o.name, _int_parameter(o.parameters, "classification", f"output '{o.name}'"))
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
    for tensor in response.outputs:
        out = message.outputs.add()
        out.name = tensor.name
        out.datatype = tensor.datatype
        out.shape.extend(tensor.shape)
        message.raw_output_contents.append(datatypes.to_raw(tensor.data))
    return message

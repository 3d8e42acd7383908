"""REST bodies <-> core types: KServe v2 JSON and Triton's binary tensor data extension.

A binary request body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data of
each input that has ``parameters.binary_data_size``, in input order. Outputs are returned as binary data when
the output's ``binary_data`` parameter, or the request's ``binary_data_output`` parameter, asks for it
(``tritonclient.http`` does by default).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core import datatypes
from ..core.errors import InvalidArgument
from ..core.shared_memory import shared_memory_ref
from ..core.types import InferRequest, InferResponse, InputTensor, RequestedOutput, SharedMemoryInput

HEADER_LENGTH = "inference-header-content-length"

_KINDS = {"b": "BOOL", "i": "INT", "u": "INT", "f": "FLOAT"}


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"{what}: missing '{key}'")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(f"{what}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _shape(obj: dict[str, Any], what: str) -> tuple[int, ...]:
    shape = _field(obj, "shape", list, what)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"{what}: shape must be a list of non-negative integers")
    datatypes.check_shape(tuple(shape), what)
    return tuple(shape)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [data]
    while stack:  # iterative, row-major
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _json_tensor(data: Any, datatype: datatypes.DataType, shape: tuple[int, ...], what: str) -> NDArray[Any]:
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise InvalidArgument(f"{what}: {len(flat)} values given, but shape {list(shape)} holds {count}")
    if datatype.name == "BYTES":
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode()
            elif isinstance(item, bytes):
                out[i] = item
            else:
                raise InvalidArgument(f"{what}: BYTES values must be strings, got {type(item).__name__}")
        return out.reshape(shape)
    try:
        raw = np.asarray(flat)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: data is not a flat or nested list of numbers ({exc})") from None
    if datatype.name == "UINT64" and raw.dtype.kind == "f" and all(type(v) is int for v in flat):
        try:  # integers past int64's range: numpy guessed float64, which loses their low bits
            raw = np.array(flat, dtype=np.uint64)
        except OverflowError:
            raise InvalidArgument(f"{what}: a value is out of range for {datatype.name}") from None
    want = datatype.dtype.kind
    have = raw.dtype.kind
    if count and not (have == want or (want == "f" and have in "iu") or (want == "u" and have == "i")):
        raise InvalidArgument(f"{what}: data holds {raw.dtype.name} values, not {datatype.name}")
    array = raw.astype(datatype.dtype)
    if want in "iu" and count and not np.array_equal(array, raw):
        raise InvalidArgument(f"{what}: a value is out of range for {datatype.name}")
    return array.reshape(shape)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; InvalidArgument says what is wrong with it."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON in request body: {exc}") from None
    except RecursionError:
        raise InvalidArgument("malformed JSON in request body: nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("request body must be a JSON object")
    return doc


def decode_infer_request(body: bytes, header_length: int | None, model: str, version: str) -> tuple[InferRequest, bool]:
    """Parse an infer request body; every error names the input or field at fault.

    Returns the request and whether outputs not listed in it are wanted as binary data."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    return decode_infer_document(json_object(header), binary, model, version)


def decode_infer_document(
    doc: dict[str, Any], binary: memoryview, model: str, version: str
) -> tuple[InferRequest, bool]:
    """:func:`decode_infer_request` of a body already parsed: its JSON object and the binary data after it."""
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' must be a string")
    params = _field(doc, "parameters", dict, "request", required=False) or {}
    priority = params.get("priority", 0)
    timeout = params.get("timeout", 0)
    for key, value in (("priority", priority), ("timeout", timeout)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"request parameter '{key}' must be a non-negative integer")
    raw_inputs = _field(doc, "inputs", list, "request")
    inputs = []
    in_shared_memory = []
    offset = 0
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidArgument(f"inputs[{index}] must be an object")
        name = _field(item, "name", str, f"inputs[{index}]")
        what = f"input '{name}'"
        datatype = datatypes.by_name(_field(item, "datatype", str, what), what)
        shape = _shape(item, what)
        tparams = _field(item, "parameters", dict, what, required=False) or {}
        size = tparams.get("binary_data_size")
        ref = shared_memory_ref(tparams, what)
        if ref is not None:
            given = [f for f, there in (("'data'", "data" in item), ("'binary_data_size'", size is not None)) if there]
            if given:
                raise InvalidArgument(
                    "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
                    f"'shared_memory_region' in 'parameters'. But set {' '.join(given)} 'shared_memory_region'"
                )
            in_shared_memory.append(SharedMemoryInput(name, datatype.name, shape, ref))
            continue
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"{what}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"{what}: binary_data_size {size} runs past the end of the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            data = datatypes.from_raw(binary[offset : offset + size], datatype, shape, what)
            offset += size
        else:
            if "data" not in item:
                raise InvalidArgument(f"{what}: has neither 'data' nor parameters.binary_data_size")
            data = _json_tensor(item["data"], datatype, shape, what)
        inputs.append(InputTensor(name, datatype.name, shape, data))
    if offset != len(binary):
        raise InvalidArgument(f"binary data: {len(binary) - offset} bytes left over after the last binary input")
    binary_default = bool(params.get("binary_data_output", False))
    outputs = []
    for index, item in enumerate(_field(doc, "outputs", list, "request", required=False) or []):
        if not isinstance(item, dict):
            raise InvalidArgument(f"outputs[{index}] must be an object")
        name = _field(item, "name", str, f"outputs[{index}]")
        oparams = _field(item, "parameters", dict, f"output '{name}'", required=False) or {}
        classification = oparams.get("classification", 0)
        if not isinstance(classification, int) or isinstance(classification, bool) or classification < 0:
            raise InvalidArgument(f"output '{name}': classification must be a non-negative integer")
        binary_out = oparams.get("binary_data")
        place = shared_memory_ref(oparams, f"output '{name}'")
        if place is not None and binary_out:
            raise InvalidArgument("Output can't set both 'shared_memory_region' and 'binary_data'")
        wants_binary = binary_default if binary_out is None else bool(binary_out)
        outputs.append(RequestedOutput(name, classification, wants_binary, place))
    request = InferRequest(
        model,
        version,
        request_id,
        inputs=inputs,
        shared_memory_inputs=in_shared_memory,
        outputs=outputs,
        priority=priority,
        timeout_us=timeout,
        parameters=params,
    )
    return request, binary_default


def _json_data(array: NDArray[Any]) -> list[Any]:
    flat = array.reshape(-1)
    if array.dtype == object:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if array.dtype == np.float16:
        flat = flat.astype(np.float32)
    return flat.tolist()  # type: ignore[no-any-return]


def encode_infer_response(
    response: InferResponse, request: InferRequest, binary_default: bool
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary data follows it."""
    binary_for = {o.name: (binary_default if o.binary is None else o.binary) for o in request.outputs}
    outputs = []
    chunks = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.shared_memory is not None:
            pass  # written into its region; the entry only describes it, as Triton's does
        elif binary_for.get(tensor.name, binary_default):
            raw = datatypes.to_raw(tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor.data)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)

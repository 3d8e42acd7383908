"""Tensor datatypes: KServe v2 names, Triton config names, numpy dtypes and ONNX element types, in one table."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class DataType:
    name: str  # KServe v2 name: "FP32"
    config_name: str  # Triton config enum name: "TYPE_FP32"
    dtype: np.dtype[Any]  # numpy dtype; object for BYTES
    onnx: int  # onnx.TensorProto element type


_TABLE = [
    DataType("BOOL", "TYPE_BOOL", np.dtype(np.bool_), 9),
    DataType("UINT8", "TYPE_UINT8", np.dtype(np.uint8), 2),
    DataType("UINT16", "TYPE_UINT16", np.dtype(np.uint16), 4),
    DataType("UINT32", "TYPE_UINT32", np.dtype(np.uint32), 12),
    DataType("UINT64", "TYPE_UINT64", np.dtype(np.uint64), 13),
    DataType("INT8", "TYPE_INT8", np.dtype(np.int8), 3),
    DataType("INT16", "TYPE_INT16", np.dtype(np.int16), 5),
    DataType("INT32", "TYPE_INT32", np.dtype(np.int32), 6),
    DataType("INT64", "TYPE_INT64", np.dtype(np.int64), 7),
    DataType("FP16", "TYPE_FP16", np.dtype(np.float16), 10),
    DataType("FP32", "TYPE_FP32", np.dtype(np.float32), 1),
    DataType("FP64", "TYPE_FP64", np.dtype(np.float64), 11),
    DataType("BYTES", "TYPE_STRING", np.dtype(object), 8),
]

BY_NAME = {t.name: t for t in _TABLE}
BY_CONFIG_NAME = {t.config_name: t for t in _TABLE}
BY_ONNX = {t.onnx: t for t in _TABLE}
BY_DTYPE = {t.dtype: t for t in _TABLE if t.name != "BYTES"}

_LEN = struct.Struct("<I")


#: The most dimensions a tensor may have (NumPy's limit; Triton's models have a handful).
MAX_RANK = 32

# NumPy refuses a shape whose dimensions other than 0 multiply past this many bytes, even one that holds nothing.
_MAX_BYTES = np.iinfo(np.intp).max


def check_shape(shape: tuple[int, ...], what: str) -> None:
    """A request's shape as the wire gave it: at most MAX_RANK dimensions, none negative, and one NumPy can make
    (a 0 anywhere holds no element, but the other dimensions still may not multiply past NumPy's limit)."""
    if len(shape) > MAX_RANK:
        raise InvalidArgument(f"{what}: shape has {len(shape)} dimensions, more than the {MAX_RANK} supported")
    if shape and min(shape) < 0:
        raise InvalidArgument(f"{what}: shape {list(shape)} has a negative dimension")
    if math.prod(d for d in shape if d) * 8 > _MAX_BYTES:  # 8: the widest element, an object pointer included
        raise InvalidArgument(f"{what}: shape {list(shape)} is larger than any tensor can be")


def by_name(name: str, what: str) -> DataType:
    """The datatype called ``name`` (KServe v2 spelling); ``what`` names the tensor in the error."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise InvalidArgument(f"{what}: unsupported datatype '{name}'") from None


def of_array(array: NDArray[Any]) -> DataType:
    """The datatype of a numpy array (object, str and bytes arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return BY_NAME["BYTES"]
    return BY_DTYPE[array.dtype]


def deserialize_bytes(buffer: bytes | memoryview, count: int, what: str) -> NDArray[Any]:
    """Decode ``count`` length-prefixed (4-byte little-endian) elements of a BYTES tensor."""
    view = memoryview(buffer)
    if count > len(view) // _LEN.size:  # before allocating: a shape's product can be any size
        raise InvalidArgument(
            f"{what}: {len(view)} bytes of BYTES data cannot hold {count} elements (each has a 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidArgument(f"{what}: BYTES data ends after {i} of {count} elements")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(f"{what}: BYTES element {i} runs past the end of the data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidArgument(f"{what}: {len(view) - offset} bytes left over after {count} BYTES elements")
    return out


def serialize_bytes(array: NDArray[Any]) -> bytes:
    """Encode a BYTES tensor as length-prefixed elements, in row-major order."""
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def from_raw(raw: bytes | memoryview, datatype: DataType, shape: tuple[int, ...], what: str) -> NDArray[Any]:
    """A tensor from its raw bytes (binary data extension, gRPC raw contents); checks the size."""
    count = math.prod(shape)
    if datatype.name == "BYTES":
        return deserialize_bytes(raw, count, what).reshape(shape)
    expected = count * datatype.dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"{what}: got {len(raw)} bytes of data, but shape {list(shape)} of {datatype.name} needs {expected}"
        )
    return np.frombuffer(raw, dtype=datatype.dtype).reshape(shape)


def to_raw(array: NDArray[Any]) -> bytes:
    """The raw bytes of a tensor, as the binary data extension and gRPC raw contents carry them."""
    if array.dtype.kind in "OSU":
        return serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()

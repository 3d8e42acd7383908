"""How a response's outputs are written into a shared store (Redis): a small length-prefixed binary format.

Not pickle: whoever can write to the store must not be able to make the appliance run code, so a value is plain
data, and :func:`decode_outputs` checks every length, name, datatype and shape before it trusts one; anything
else is :class:`MalformedEntry`. Integers are little-endian::

    b"APC1"                                   magic and format version
    u32 count                                 tensors, then for each:
      u16 n, n bytes                          name (UTF-8)
      u8 n, n bytes                           datatype (KServe v2 name: "FP32", "BYTES")
      u8 rank, rank x u64                     shape
      u64 n, n bytes                          data: row-major little-endian elements; for BYTES, each element
                                              as a u32 length and its bytes (the binary data extension's layout)

A decoded numeric tensor is a read-only view into the value it came from; nothing is copied.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import datatypes
from .errors import InvalidArgument
from .types import OutputTensor

MAGIC = b"APC1"
MAX_TENSORS = 4096

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class MalformedEntry(ValueError):
    """A stored value that is not in this format (another writer's, truncated, or changed)."""


def encode_outputs(outputs: Sequence[OutputTensor]) -> bytes:
    """The outputs as one value. Raises ValueError for a tensor the format cannot hold (a name over 64 KiB)."""
    parts: list[bytes | memoryview] = [MAGIC, _U32.pack(len(outputs))]
    for tensor in outputs:
        name = tensor.name.encode()
        kind = tensor.datatype.encode()
        if len(name) > 0xFFFF or len(kind) > 0xFF or len(tensor.shape) > datatypes.MAX_RANK:
            raise ValueError(f"output '{tensor.name}' cannot be stored: name, datatype or rank too long")
        parts += [_U16.pack(len(name)), name, _U8.pack(len(kind)), kind, _U8.pack(len(tensor.shape))]
        parts.append(struct.pack(f"<{len(tensor.shape)}Q", *tensor.shape))
        data: bytes | memoryview
        if tensor.datatype == "BYTES":
            data = datatypes.serialize_bytes(tensor.data)
        else:
            dtype = datatypes.BY_NAME[tensor.datatype].dtype.newbyteorder("<")
            data = np.ascontiguousarray(tensor.data, dtype=dtype).reshape(-1).view(np.uint8).data
        parts += [_U64.pack(len(data)), data]
    return b"".join(parts)


def decode_outputs(value: bytes) -> list[OutputTensor]:
    """The outputs :func:`encode_outputs` wrote; :class:`MalformedEntry` for anything else."""
    reader = _Reader(value)
    if reader.take(len(MAGIC)) != MAGIC:
        raise MalformedEntry("not a stored response (no APC1 magic)")
    (count,) = reader.unpack(_U32)
    if count > MAX_TENSORS:
        raise MalformedEntry(f"{count} tensors")
    outputs = []
    for _ in range(count):
        (length,) = reader.unpack(_U16)
        try:
            name = bytes(reader.take(length)).decode()
        except UnicodeDecodeError:
            raise MalformedEntry("a tensor name that is not UTF-8") from None
        (length,) = reader.unpack(_U8)
        datatype = datatypes.BY_NAME.get(bytes(reader.take(length)).decode("ascii", errors="replace"))
        if datatype is None:
            raise MalformedEntry(f"tensor '{name}': unknown datatype")
        (rank,) = reader.unpack(_U8)
        if rank > datatypes.MAX_RANK:
            raise MalformedEntry(f"tensor '{name}': rank {rank}")
        shape = struct.unpack(f"<{rank}Q", reader.take(8 * rank))
        (length,) = reader.unpack(_U64)
        data = reader.take(length)
        try:
            array = _array(data, datatype, shape, name)
        except MalformedEntry:
            raise
        except ValueError as exc:  # NumPy refusing the shape
            raise MalformedEntry(f"tensor '{name}': {exc}") from None
        outputs.append(OutputTensor(name, datatype.name, shape, array))
    if reader.offset != len(value):
        raise MalformedEntry(f"{len(value) - reader.offset} bytes after the last tensor")
    return outputs


def _array(data: memoryview, datatype: datatypes.DataType, shape: tuple[int, ...], name: str) -> NDArray[Any]:
    if datatype.name == "BYTES":
        try:
            array = datatypes.deserialize_bytes(data, math.prod(shape), name).reshape(shape)
        except InvalidArgument as exc:
            raise MalformedEntry(str(exc)) from None
        array.setflags(write=False)
        return array
    dtype = datatype.dtype.newbyteorder("<")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise MalformedEntry(f"tensor '{name}': {len(data)} bytes for shape {list(shape)} of {datatype.name}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if datatype.name == "BOOL" and array.size and data.tobytes().translate(None, b"\x00\x01"):
        raise MalformedEntry(f"tensor '{name}': BOOL bytes other than 0 and 1")
    return array


class _Reader:
    """Reads a value front to back; running past its end is :class:`MalformedEntry`."""

    __slots__ = ("offset", "view")

    def __init__(self, value: bytes) -> None:
        self.view = memoryview(value)
        self.offset = 0

    def take(self, n: int) -> memoryview:
        if n > len(self.view) - self.offset:
            raise MalformedEntry(f"value ends at byte {len(self.view)}, {n} more wanted at byte {self.offset}")
        chunk = self.view[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

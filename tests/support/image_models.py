"""Small ONNX models for image inference, written with Triton-style ``config.pbtxt`` files that declare their
images (``image_*`` parameters), and images made with Pillow.

- ``colour``: a classifier whose logits are the mean of each channel: a red image is "red", a blue one "blue".
- ``boxes``: a detector (YOLOv8 output layout, [batch, 4 + classes, N]) whose output is a constant set of
  candidates, whatever the image: the test knows exactly which boxes come back, in the model's input pixels.
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from .models import _finish

COLOUR_LABELS = ("red", "green", "blue")
DETECTOR_LABELS = ("person", "car")


def colour_classifier(datatype: int = TensorProto.FLOAT) -> bytes:
    """x [N, 3, H, W] -> y [N, 3]: the mean of each channel."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
        "colour",
        [helper.make_tensor_value_info("x", datatype, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", datatype, ["N", 3])],
    )
    return _finish(graph)


def colour_classifier_uint8_nhwc() -> bytes:
    """x [1, H, W, 3] UINT8 -> y [1, 3] FP32: the mean of each channel, in the order the input has them."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["f"], ["y"], axes=[1, 2], keepdims=0),
        ],
        "colour_u8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return _finish(graph)


def constant_detector(candidates: np.ndarray) -> bytes:
    """x [N, 3, H, W] -> y [N, 4 + classes, K]: ``candidates`` [4 + classes, K] for every image."""
    const = numpy_helper.from_array(candidates[None].astype(np.float32), "candidates")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=1),  # [N, 1, 1, 1]
        helper.make_node("Squeeze", ["m", "axis"], ["s"]),  # [N, 1, 1]
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["z", "candidates"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "boxes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *candidates.shape])],
        [
            const,
            numpy_helper.from_array(np.array([3], np.int64), "axis"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    return _finish(graph)


def write_model(repo: Path, name: str, config: str, *, onnx: bytes, labels: tuple[str, ...] = ()) -> None:
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(onnx)
    (folder / "config.pbtxt").write_text(textwrap.dedent(config))
    if labels:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")


def parameters(**values: str) -> str:
    return "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in values.items())


def encoded(colour: tuple[int, int, int], size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    """A plain image of one colour, ``size`` = (width, height), encoded as JPEG or PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels."""
    return _png(width, height, zlib.compress(b"\0" * 64))


def png_bomb(width: int, height: int) -> bytes:
    """A complete black RGB PNG of ``width`` x ``height``: about 1/1000 of its decoded size (12000 x 12000: 420 KB
    that decode to 432 MB)."""
    compressor = zlib.compressobj(6)
    row = b"\0" * (1 + 3 * width)  # filter byte 0, then the pixels
    idat = b"".join([*(compressor.compress(row) for _ in range(height)), compressor.flush()])
    return _png(width, height, idat)

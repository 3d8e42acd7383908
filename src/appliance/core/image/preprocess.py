"""Images into the model's input: resize (stretch or letterbox), colour order, layout, scale, mean and std.

:func:`prepare` runs in a worker thread (Pillow releases the GIL while decoding and resizing): it decodes, resizes
and returns the image's tensor (without the batch dimension) with the :class:`Geometry` that maps the model's
pixels back to the original image's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .decode import decode, open_image
from .spec import ImageSpec, Resize

_DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


@dataclass(frozen=True, slots=True)
class Geometry:
    """Original size, and how the model's input relates to it: ``model = original * scale + pad``, per axis."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float


def fit(spec: ImageSpec, width: int, height: int) -> tuple[int, int, Geometry]:
    """The size the image is resized to (width, height) and its geometry in the model's input."""
    if spec.resize is Resize.STRETCH:
        return spec.width, spec.height, Geometry(width, height, spec.width / width, spec.height / height, 0.0, 0.0)
    ratio = min(spec.width / width, spec.height / height)
    new_w = max(1, min(spec.width, round(width * ratio)))
    new_h = max(1, min(spec.height, round(height * ratio)))
    pad_x = (spec.width - new_w) // 2
    pad_y = (spec.height - new_h) // 2
    return new_w, new_h, Geometry(width, height, new_w / width, new_h / height, float(pad_x), float(pad_y))


def pixels(spec: ImageSpec, image: Image.Image, field: str) -> tuple[NDArray[np.uint8], Geometry]:
    """The decoded image resized into the model's height x width, as RGB uint8 (HWC), and its geometry."""
    width, height = image.size  # the original size, from the header (draft changes image.size)
    new_w, new_h, geometry = fit(spec, width, height)
    image = decode(image, field, (new_w, new_h))
    if image.size != (new_w, new_h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if (new_w, new_h) == (spec.width, spec.height):
        return array, geometry
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, dtype=np.uint8)
    x, y = int(geometry.pad_x), int(geometry.pad_y)
    canvas[y : y + new_h, x : x + new_w] = array
    return canvas, geometry


def to_tensor(spec: ImageSpec, rgb: NDArray[np.uint8]) -> NDArray[Any]:
    """HWC RGB uint8 -> the model's layout, colour order and datatype, normalised as declared."""
    array: NDArray[Any] = rgb[..., ::-1] if spec.bgr else rgb
    if spec.nchw:
        array = array.transpose(2, 0, 1)
    if spec.datatype == "UINT8":
        return np.ascontiguousarray(array)
    # (x * scale - mean) / std as one multiply and one add: x * (scale / std) + (-mean / std), per channel (in the
    # input's channel order, as the tensor has them)
    std = np.asarray(spec.std, dtype=np.float64)
    gain = (spec.scale / std).astype(np.float32)
    offset = (-np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32)
    shape = (3, 1, 1) if spec.nchw else (1, 1, 3)
    out = np.empty(array.shape, dtype=np.float32)
    np.multiply(array, gain.reshape(shape), out=out)
    out += offset.reshape(shape)
    return out if spec.datatype == "FP32" else out.astype(_DTYPES[spec.datatype])


def prepare(spec: ImageSpec, data: bytes, field: str, max_pixels: int) -> tuple[NDArray[Any], Geometry]:
    """One encoded image -> its input tensor (no batch dimension) and geometry; InvalidArgument naming ``field``."""
    image = open_image(data, field, max_pixels)
    rgb, geometry = pixels(spec, image, field)
    return to_tensor(spec, rgb), geometry

"""INT8 calibration data: a folder of ``.npy`` files or images, read as batches for the entropy calibrator.

- ``.npy``: one sample in the input's shape without batch (``3x224x224``), or a stack of them
  (``Nx3x224x224``); cast to the input's dtype.
- Images (``.png .jpg .jpeg .bmp .ppm``, needs Pillow): converted to RGB (or L for one channel), resized to the
  input's height and width, scaled to 0..1 as float32, in CHW or HWC order as the input's shape says.
  Models that expect other preprocessing (mean/std) should be calibrated from ``.npy`` files made with it.

Every error names the file (or the folder, when it has no usable file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import OptimizeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def _layout(shape: tuple[int, ...]) -> str:
    if len(shape) != 3:
        return ""
    if shape[0] in (1, 3):
        return "CHW"
    if shape[-1] in (1, 3):
        return "HWC"
    return ""


class CalibrationData:
    """The samples of one input, ``sample_shape`` without the batch dimension."""

    def __init__(self, folder: Path, sample_shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.folder = folder
        self.sample_shape = tuple(sample_shape)
        self.dtype = np.dtype(dtype)
        if not folder.is_dir():
            raise OptimizeError(f"{folder}: calibration folder does not exist")
        self.files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".npy", *IMAGE_SUFFIXES)
        )
        if not self.files:
            raise OptimizeError(
                f"{folder}: calibration folder has no .npy or image files ({', '.join(('.npy', *IMAGE_SUFFIXES))})"
            )

    def _load_npy(self, path: Path) -> NDArray[Any]:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OptimizeError(f"{path}: not a readable .npy file ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise OptimizeError(f"{path}: has dtype {array.dtype}, calibration needs numbers")
        if array.shape == self.sample_shape:
            array = array[None]
        elif array.shape[1:] != self.sample_shape:
            stack = ", ".join(map(str, ("N", *self.sample_shape)))
            raise OptimizeError(
                f"{path}: shape {list(array.shape)} is neither the input's sample shape "
                f"{list(self.sample_shape)} nor a stack of them [{stack}]"
            )
        return np.asarray(array, dtype=self.dtype)

    def _load_image(self, path: Path) -> NDArray[Any]:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise OptimizeError(
                f"{path}: reading images needs Pillow (pip install pillow), or give .npy files"
            ) from None
        layout = _layout(self.sample_shape)
        if not layout:
            raise OptimizeError(
                f"{path}: an image cannot fill input shape {list(self.sample_shape)} "
                "(images need [3,H,W], [1,H,W], [H,W,3] or [H,W,1]); give .npy files"
            )
        channels = self.sample_shape[0] if layout == "CHW" else self.sample_shape[-1]
        height, width = self.sample_shape[1:] if layout == "CHW" else self.sample_shape[:2]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB" if channels == 3 else "L").resize((width, height)))
        except (OSError, UnidentifiedImageError) as exc:
            raise OptimizeError(f"{path}: not a readable image ({exc})") from None
        array = pixels.astype(np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        if layout == "CHW":
            array = array.transpose(2, 0, 1)
        return array[None].astype(self.dtype)

    def samples(self) -> Iterator[NDArray[Any]]:
        """Each sample as an array of ``[1, *sample_shape]``, file by file."""
        for path in self.files:
            stack = self._load_npy(path) if path.suffix.lower() == ".npy" else self._load_image(path)
            for i in range(stack.shape[0]):
                yield stack[i : i + 1]

    def count(self) -> int:
        return sum(1 for _ in self.samples())

    def batches(self, batch_size: int) -> Iterator[NDArray[Any]]:
        """Contiguous batches of ``batch_size`` samples; a last, partial batch is dropped."""
        pending: list[NDArray[Any]] = []
        produced = 0
        for sample in self.samples():
            pending.append(sample)
            if len(pending) == batch_size:
                produced += 1
                yield np.ascontiguousarray(np.concatenate(pending))
                pending = []
        if not produced:
            raise OptimizeError(
                f"{self.folder}: {len(pending)} calibration samples, fewer than one batch of {batch_size}"
            )

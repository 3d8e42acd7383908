"""Decode + resize of a 1080p JPEG to 224 x 224: Pillow (plain, and with ``draft``) against OpenCV, when ``cv2``
imports, and the appliance's own preprocessing (decode, resize, normalise, NCHW float32) when it imports.

The frame is synthetic but camera-like (gradients, shapes, sensor noise; quality 90, about 300-400 KB). Each
variant runs ``--repeat`` times after a warm-up; the median and the 10th-90th percentiles are printed, in ms.

    .venv/bin/python benchmarks/image_decode.py          # Pillow and the appliance
    /tmp/cv-venv/bin/python benchmarks/image_decode.py   # Pillow and OpenCV (no appliance there)
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE = (1920, 1080)
TARGET = (224, 224)


def camera_frame(seed: int = 0, quality: int = 90) -> bytes:
    """A 1080p JPEG that compresses like a camera frame: smooth regions, edges and noise."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = np.stack([200 * x + 30 * y, 120 + 80 * np.sin(6 * x + 3 * y), 180 * y + 40 * x], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        size = int(rng.integers(20, 300))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + size, y0 + size], fill=colour)
    pixels = np.asarray(image).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def pillow(data: bytes) -> Any:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(image.resize(TARGET, Image.Resampling.BILINEAR))


def pillow_draft(data: bytes) -> Any:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", TARGET)
    return np.asarray(image.convert("RGB").resize(TARGET, Image.Resampling.BILINEAR))


def variants(data: bytes) -> dict[str, Callable[[bytes], Any]]:
    found: dict[str, Callable[[bytes], Any]] = {"pillow": pillow, "pillow + draft": pillow_draft}
    try:
        import cv2
    except ImportError:
        pass
    else:

        def opencv(data: bytes) -> Any:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            return cv2.resize(array, TARGET, interpolation=cv2.INTER_LINEAR)

        def opencv_reduced(data: bytes) -> Any:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
            return cv2.resize(array, TARGET, interpolation=cv2.INTER_LINEAR)

        found[f"opencv {cv2.__version__}"] = opencv
        found["opencv REDUCED_COLOR_4"] = opencv_reduced
    try:
        from appliance.core.image.preprocess import prepare
        from appliance.core.image.spec import ImageSpec, Resize, Task
    except ImportError:
        pass
    else:
        spec = ImageSpec(
            "bench", Task.CLASSIFICATION, "x", "FP32", "y", 224, 224, Resize.STRETCH, 114, False, True, 1 / 255,
            (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 16, False,
        )  # fmt: skip
        found["appliance prepare (draft + FP32 NCHW)"] = lambda data: prepare(spec, data, "image", 50_000_000)
    return found


def measure(call: Callable[[bytes], Any], data: bytes, repeat: int) -> list[float]:
    for _ in range(5):
        call(data)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call(data)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    data = camera_frame()
    import PIL

    print(f"python {sys.version.split()[0]}, Pillow {PIL.__version__}, numpy {np.__version__}")
    print(f"1920x1080 JPEG, {len(data) / 1024:.0f} KiB -> 224x224, {args.repeat} runs each")
    print(f"{'variant':40s} {'median ms':>10s} {'p10':>7s} {'p90':>7s} {'per s':>7s}")
    for name, call in variants(data).items():
        times = sorted(measure(call, data, args.repeat))
        median = statistics.median(times)
        p10, p90 = times[len(times) // 10], times[len(times) * 9 // 10]
        print(f"{name:40s} {median:10.2f} {p10:7.2f} {p90:7.2f} {1000 / median:7.0f}")


if __name__ == "__main__":
    main()

"""Model outputs into what a camera client wants: top-k labels (classification) or boxes (detection).

Detection reads YOLOv8's output, ``[batch, 4 + classes, N]``: per candidate the box centre, width and height in the
model's input pixels, then one score per class. Candidates under the score threshold are dropped, the rest go
through class-aware non-maximum suppression, and the boxes are mapped back to the original image's pixels (undoing
the letterbox's scale and padding) and clipped to it. Everything but NMS's outer loop is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidArgument
from .preprocess import Geometry
from .spec import ImageSpec


@dataclass(frozen=True, slots=True)
class Label:
    """One class of a classification: its label (the index when the model has no labels file) and score."""

    label: str
    index: int
    score: float


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: its class and score, and its box [x1, y1, x2, y2] in the original image's pixels."""

    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]


def _label(labels: tuple[str, ...], index: int) -> str:
    return labels[index] if index < len(labels) else str(index)


def classify(spec: ImageSpec, scores: NDArray[Any]) -> list[Label]:
    """One image's output (any shape; flattened to one score per class) -> the top-k labels over the threshold,
    best first."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if spec.softmax:
        shifted = np.exp(values - values.max())
        values = shifted / shifted.sum()
    k = min(spec.top_k, values.size)
    top = np.argpartition(-values, k - 1)[:k]
    top = top[np.lexsort((top, -values[top]))]  # best first; equal scores by index
    top = top[values[top] >= spec.score_threshold]
    return [Label(_label(spec.labels, int(i)), int(i), float(values[i])) for i in top]


def iou(box: NDArray[np.float64], boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """Intersection over union of one box [x1, y1, x2, y2] with each of ``boxes`` [n, 4]."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(
    boxes: NDArray[np.float64],
    scores: NDArray[np.float64],
    classes: NDArray[np.int64],
    iou_threshold: float,
    limit: int,
) -> NDArray[np.int64]:
    """Class-aware non-maximum suppression: the indexes kept, best first, at most ``limit``. Boxes of different
    classes never suppress each other (each class is shifted by an offset larger than every box)."""
    order = np.argsort(-scores, kind="stable")
    span = float(np.abs(boxes).max()) + 1.0 if boxes.size else 1.0
    shifted = boxes + (classes.astype(np.float64) * 2 * span)[:, None]
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[iou(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def detect(spec: ImageSpec, output: NDArray[Any], geometry: Geometry) -> list[Detection]:
    """One image's YOLOv8 output [4 + classes, N] -> its boxes in the original image's pixels, best first."""
    rows = np.asarray(output, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 5:
        raise InvalidArgument(
            f"model '{spec.model}': a detection output is [4 + classes, N] per image, got {list(rows.shape)}"
        )
    class_scores = rows[4:]
    classes = class_scores.argmax(axis=0)
    scores = class_scores[classes, np.arange(rows.shape[1])]
    chosen = scores >= spec.score_threshold
    if not chosen.any():
        return []
    cx, cy, w, h = rows[0, chosen], rows[1, chosen], rows[2, chosen], rows[3, chosen]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores, classes = scores[chosen], classes[chosen]
    keep = nms(boxes, scores, classes, spec.iou_threshold, spec.max_detections)
    boxes = boxes[keep]
    # model pixels -> original pixels: undo the padding, then the scale; clip to the image
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - geometry.pad_x) / geometry.scale_x, 0, geometry.width)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - geometry.pad_y) / geometry.scale_y, 0, geometry.height)
    return [
        Detection(_label(spec.labels, int(c)), int(c), float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for b, s, c in zip(boxes.tolist(), scores[keep].tolist(), classes[keep].tolist())
    ]

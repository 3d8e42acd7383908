"""What a model declares about the images it takes: the ``image_*`` parameters of its ``config.pbtxt``.

The declaration stays inside Triton's schema (``parameters { key: "image_..." value { string_value: "..." } }``),
so a repository that declares images is still a Triton repository. :func:`image_spec` reads it into a typed
:class:`ImageSpec`; any invalid value is an :class:`~appliance.core.errors.InvalidArgument` naming the parameter and
the model, raised when an image request arrives (tensor inference on the same model is unaffected).

Keys (all optional except ``image_postprocess``):

==========================  ======================================================================================
``image_postprocess``       ``classification`` or ``detection``: what the output means (required)
``image_input``             the input that takes the image (default: the model's first input)
``image_output``            the output read (default: the model's first output)
``image_resize``            ``stretch`` (default) or ``letterbox`` (keep the aspect ratio, pad the rest)
``image_pad_value``         the letterbox padding, 0..255 (default 114)
``image_color_order``       ``RGB`` (default) or ``BGR``
``image_layout``            ``NCHW`` (default) or ``NHWC``
``image_height``            the height, when the input's dims leave it dynamic (-1)
``image_width``             the width, likewise
``image_scale``             pixels (0..255) are multiplied by it; default 1/255 (FP32/FP16 inputs only)
``image_mean``              subtracted after scaling: one value, or one per channel in the input's colour order
                            (``"0.485,0.456,0.406"`` for RGB; default 0)
``image_std``               divided by, after the mean: one value or one per channel, likewise (default 1)
``image_top_k``             classification: labels returned per image (default 5)
``image_softmax``           classification: ``true`` turns the output's logits into probabilities (default false)
``image_score_threshold``   labels / boxes scoring below it are dropped (default: none / 0.25)
``image_iou_threshold``     detection: overlap above which a same-class box is suppressed (default 0.45)
``image_max_detections``    detection: boxes returned per image at most (default 100)
==========================  ======================================================================================

A UINT8 input takes the pixels as they are: ``image_scale``, ``image_mean`` and ``image_std`` are refused there.
Another key starting with ``image_`` is refused too (a typo would otherwise be ignored silently).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..model_config import ModelConfig, TensorSpec

PREFIX = "image_"

#: Every parameter key read here: another key with the prefix is a mistake (a typo) and named as one.
KEYS = frozenset(
    (
        *("image_postprocess", "image_input", "image_output", "image_resize", "image_pad_value"),
        *("image_color_order", "image_layout", "image_height", "image_width", "image_scale", "image_mean"),
        *("image_std", "image_top_k", "image_softmax", "image_score_threshold", "image_iou_threshold"),
        "image_max_detections",
    )
)


class Resize(enum.Enum):
    STRETCH = "stretch"
    LETTERBOX = "letterbox"


class Task(enum.Enum):
    CLASSIFICATION = "classification"
    DETECTION = "detection"


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """How to turn images into the model's input tensor and its output into labels or boxes."""

    model: str
    task: Task
    input_name: str
    datatype: str  # FP32, FP16 or UINT8
    output_name: str
    height: int
    width: int
    resize: Resize
    pad_value: int
    bgr: bool
    nchw: bool
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batched: bool  # the input has a batch dimension (max_batch_size > 0)
    max_batch_size: int  # 0: one image per inference
    leading_one: bool  # max_batch_size 0 with dims [1, ...]: one image with a batch dimension of its own
    labels: tuple[str, ...] = ()
    top_k: int = 5
    softmax: bool = False
    score_threshold: float = -math.inf
    iou_threshold: float = 0.45
    max_detections: int = 100


_DATATYPES = ("FP32", "FP16", "UINT8")


def _fail(model: str, key: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"model '{model}': parameter '{key}' {why}")


class _Params:
    def __init__(self, model: str, config: ModelConfig) -> None:
        self.model = model
        self.values = {k: str(v.string_value) for k, v in config.parameters.items() if k.startswith(PREFIX)}

    def text(self, key: str, default: str) -> str:
        return self.values.get(key, default).strip()

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self.text(key, default)
        folded = {a.lower(): a for a in allowed}
        if value.lower() not in folded:
            raise _fail(self.model, key, f"must be one of {', '.join(allowed)}, got '{value[:32]}'")
        return folded[value.lower()]

    def number(self, key: str, default: float, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
        raw = self.values.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _fail(self.model, key, f"must be a number, got '{raw[:32]}'") from None
        if not math.isfinite(value) or value < low or value > high or (open_low and value == low):
            bound = f"above {low}" if open_low else f"at least {low}"
            limit = f" and at most {high}" if high != math.inf else ""
            raise _fail(self.model, key, f"must be {bound}{limit}, got '{raw[:32]}'")
        return value

    def whole(self, key: str, default: int, low: int, high: int = 2**31 - 1) -> int:
        raw = self.values.get(key)
        if raw is None:
            return default
        if not raw.strip().isascii() or not raw.strip().isdigit() or not low <= int(raw) <= high:
            raise _fail(self.model, key, f"must be a whole number in {low}..{high}, got '{raw[:32]}'")
        return int(raw)

    def triple(self, key: str, default: float, *, positive: bool = False) -> tuple[float, float, float]:
        raw = self.values.get(key)
        if raw is None:
            return (default,) * 3
        parts = [p.strip() for p in raw.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise _fail(self.model, key, f"must be one number or three separated by commas, got '{raw[:32]}'") from None
        if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
            raise _fail(self.model, key, f"must be one number or three separated by commas, got '{raw[:32]}'")
        if positive and any(v <= 0 for v in values):
            raise _fail(self.model, key, f"must be above 0, got '{raw[:32]}'")
        return (values[0],) * 3 if len(values) == 1 else (values[0], values[1], values[2])

    def flag(self, key: str, default: bool) -> bool:
        value = self.text(key, "true" if default else "false").lower()
        if value not in ("true", "false"):
            raise _fail(self.model, key, f"must be true or false, got '{value[:32]}'")
        return value == "true"


def _pick(model: str, specs: Sequence[TensorSpec], key: str, name: str, kind: str) -> TensorSpec:
    if not specs:
        raise InvalidArgument(f"model '{model}' has no {kind}s")
    if not name:
        return specs[0]
    for spec in specs:
        if spec.name == name:
            return spec
    raise _fail(model, key, f"names {kind} '{name[:64]}', which the model does not have")


def image_spec(
    model: str,
    config: ModelConfig,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    labels: dict[str, list[str]],
) -> ImageSpec:
    """The model's image declaration; InvalidArgument naming the parameter when a value is unusable, or saying what
    to declare when the model declares no images at all."""
    p = _Params(model, config)
    if "image_postprocess" not in p.values:
        raise InvalidArgument(
            f"model '{model}' takes no images: its config.pbtxt declares no 'image_postprocess' parameter "
            "(classification or detection; image_resize, image_layout, image_color_order, image_scale, image_mean, "
            "image_std and the others are optional)"
        )
    unknown = sorted(set(p.values) - KEYS)
    if unknown:
        raise _fail(model, unknown[0], f"is not an image parameter (they are {', '.join(sorted(KEYS))})")
    task = Task(p.choice("image_postprocess", "", [t.value for t in Task]))
    tensor = _pick(model, inputs, "image_input", p.text("image_input", ""), "input")
    output = _pick(model, outputs, "image_output", p.text("image_output", ""), "output")
    datatype = tensor.datatype.name
    if datatype not in _DATATYPES:
        raise InvalidArgument(
            f"model '{model}': input '{tensor.name}' is {datatype}; images need an FP32, FP16 or UINT8 input"
        )
    nchw = p.choice("image_layout", "NCHW", ["NCHW", "NHWC"]) == "NCHW"
    dims = tensor.dims  # as the client sends it (a config's reshape is the model's business)
    batched = config.max_batch_size > 0
    leading_one = False
    if not batched and len(dims) == 4 and dims[0] in (1, -1):
        dims, leading_one = dims[1:], True
    if len(dims) != 3:
        raise InvalidArgument(
            f"model '{model}': input '{tensor.name}' has dims {list(tensor.dims)}; an image input has three "
            f"({'channels, height, width' if nchw else 'height, width, channels'}) besides the batch"
        )
    channels, height, width = (dims[0], dims[1], dims[2]) if nchw else (dims[2], dims[0], dims[1])
    if channels != 3:
        layout = "NCHW" if nchw else "NHWC"
        raise InvalidArgument(
            f"model '{model}': input '{tensor.name}' has {channels} channels in layout {layout} (dims "
            f"{list(tensor.dims)}); images have 3 (is 'image_layout' right?)"
        )
    for key, size in (("image_height", height), ("image_width", width)):
        if size == -1 and key not in p.values:
            raise _fail(model, key, f"is needed: input '{tensor.name}' has dims {list(tensor.dims)}, dynamic")
        declared = p.whole(key, size, 1, 16384)
        if size != -1 and declared != size:
            raise _fail(model, key, f"is {declared} but input '{tensor.name}' has {size} (dims {list(tensor.dims)})")
    height = p.whole("image_height", height, 1, 16384)
    width = p.whole("image_width", width, 1, 16384)
    if datatype == "UINT8":
        for key in ("image_scale", "image_mean", "image_std"):
            if key in p.values:
                raise _fail(model, key, f"does not apply: input '{tensor.name}' is UINT8 and takes pixels as they are")
    # classification: no threshold unless declared (logits may be negative); detection: YOLOv8's usual 0.25
    default_threshold = 0.25 if task is Task.DETECTION else -math.inf
    return ImageSpec(
        model=model,
        task=task,
        input_name=tensor.name,
        datatype=datatype,
        output_name=output.name,
        height=height,
        width=width,
        resize=Resize(p.choice("image_resize", "stretch", [r.value for r in Resize])),
        pad_value=p.whole("image_pad_value", 114, 0, 255),
        bgr=p.choice("image_color_order", "RGB", ["RGB", "BGR"]) == "BGR",
        nchw=nchw,
        scale=p.number("image_scale", 1.0 / 255.0, 0.0, open_low=True),
        mean=p.triple("image_mean", 0.0),
        std=p.triple("image_std", 1.0, positive=True),
        batched=batched,
        max_batch_size=config.max_batch_size,
        leading_one=leading_one,
        labels=tuple(labels.get(output.name, ())),
        top_k=p.whole("image_top_k", 5, 1, 1000),
        softmax=p.flag("image_softmax", False),
        score_threshold=p.number("image_score_threshold", default_threshold, -math.inf),
        iou_threshold=p.number("image_iou_threshold", 0.45, 0.0, 1.0),
        max_detections=p.whole("image_max_detections", 100, 1, 10000),
    )

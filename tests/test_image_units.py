"""The image core's pieces on their own: reading the image_* parameters, preprocessing, postprocessing, decoding."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from appliance.core.errors import InvalidArgument
from appliance.core.image.decode import decode, open_image
from appliance.core.image.postprocess import classify, detect, nms
from appliance.core.image.preprocess import Geometry, fit, pixels, prepare, to_tensor
from appliance.core.image.spec import ImageSpec, Resize, Task, image_spec
from appliance.core.model_config import ModelConfig, input_specs, output_specs
from tests.support.image_models import encoded, png_bomb, png_header


def config(dims: str = "[3, 4, 6]", datatype: str = "TYPE_FP32", max_batch_size: int = 4, **params: str) -> ModelConfig:
    text = f"""
        max_batch_size: {max_batch_size}
        input [{{ name: "x", data_type: {datatype}, dims: {dims} }}]
        output [{{ name: "y", data_type: TYPE_FP32, dims: [3] }}]
    """
    text += "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items())
    parsed = ModelConfig()
    text_format.Parse(text, parsed)
    return parsed


def spec_of(cfg: ModelConfig, labels: dict[str, list[str]] | None = None) -> ImageSpec:
    return image_spec("m", cfg, input_specs(cfg, "m"), output_specs(cfg, "m"), labels or {})


def test_the_defaults() -> None:
    spec = spec_of(config(image_postprocess="classification"), {"y": ["a", "b", "c"]})
    assert (spec.task, spec.resize, spec.bgr, spec.nchw, spec.datatype) == (
        Task.CLASSIFICATION,
        Resize.STRETCH,
        False,
        True,
        "FP32",
    )
    assert (spec.height, spec.width, spec.scale, spec.mean, spec.std) == (4, 6, 1 / 255, (0.0,) * 3, (1.0,) * 3)
    assert spec.labels == ("a", "b", "c") and spec.top_k == 5 and spec.batched


def test_every_parameter_is_read() -> None:
    spec = spec_of(
        config(
            "[-1, -1, 3]",
            image_postprocess="Detection",
            image_layout="NHWC",
            image_resize="letterbox",
            image_pad_value="0",
            image_color_order="bgr",
            image_height="8",
            image_width="10",
            image_scale="1",
            image_mean="1,2,3",
            image_std="2",
            image_score_threshold="0.5",
            image_iou_threshold="0.3",
            image_max_detections="7",
        )
    )
    assert (spec.task, spec.nchw, spec.resize, spec.pad_value, spec.bgr) == (
        Task.DETECTION,
        False,
        Resize.LETTERBOX,
        0,
        True,
    )
    assert (spec.height, spec.width, spec.scale, spec.mean, spec.std) == (8, 10, 1.0, (1.0, 2.0, 3.0), (2.0,) * 3)
    assert (spec.score_threshold, spec.iou_threshold, spec.max_detections) == (0.5, 0.3, 7)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"image_postprocess": "segmentation"}, "image_postprocess"),
        ({"image_resize": "squash"}, "image_resize"),
        ({"image_layout": "CHW"}, "image_layout"),
        ({"image_scale": "-1"}, "image_scale"),
        ({"image_scale": "nan"}, "image_scale"),
        ({"image_mean": "1,2"}, "image_mean"),
        ({"image_std": "0"}, "image_std"),
        ({"image_top_k": "0"}, "image_top_k"),
        ({"image_softmax": "yes"}, "image_softmax"),
        ({"image_iou_threshold": "2"}, "image_iou_threshold"),
        ({"image_pad_value": "300"}, "image_pad_value"),
        ({"image_input": "nope"}, "image_input"),
        ({"image_height": "5"}, "image_height"),  # the input's dims say 4
        ({"image_top_kk": "3"}, "image_top_kk"),  # a typo
    ],
)
def test_an_invalid_parameter_is_named_with_the_model(params: dict[str, str], named: str) -> None:
    params = {"image_postprocess": "classification", **params}
    with pytest.raises(InvalidArgument, match=f"model 'm': parameter '{named}'"):
        spec_of(config(**params))  # type: ignore[arg-type]  # every key is an image_* string


def test_inputs_that_cannot_take_images() -> None:
    with pytest.raises(InvalidArgument, match="takes no images"):
        spec_of(config())
    with pytest.raises(InvalidArgument, match="INT32"):
        spec_of(config(datatype="TYPE_INT32", image_postprocess="classification"))
    with pytest.raises(InvalidArgument, match="1 channels"):
        spec_of(config("[1, 4, 4]", image_postprocess="classification"))
    with pytest.raises(InvalidArgument, match="'image_height'"):  # dynamic height and none declared
        spec_of(config("[3, -1, 4]", image_postprocess="classification"))
    with pytest.raises(InvalidArgument, match="'image_scale' does not apply"):
        spec_of(config(datatype="TYPE_UINT8", image_postprocess="classification", image_scale="1"))


def test_a_model_without_batching_may_have_a_leading_one() -> None:
    spec = spec_of(config("[1, 3, 4, 6]", max_batch_size=0, image_postprocess="classification"))
    assert spec.leading_one and not spec.batched and (spec.height, spec.width) == (4, 6)


def test_tensor_layout_colour_order_and_normalisation() -> None:
    spec = spec_of(config(image_postprocess="classification", image_mean="0.5", image_std="0.25"))
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    tensor = to_tensor(spec, rgb)
    assert tensor.shape == (3, 4, 6) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor[:, 0, 0].tolist() == [2.0, -2.0, -2.0]  # (1 - 0.5) / 0.25 and (0 - 0.5) / 0.25
    bgr = dataclasses.replace(spec, bgr=True, nchw=False, mean=(0.0,) * 3, std=(1.0,) * 3, datatype="FP16")
    tensor = to_tensor(bgr, rgb)
    assert tensor.shape == (4, 6, 3) and tensor.dtype == np.float16 and tensor[0, 0].tolist() == [0.0, 0.0, 1.0]
    raw = to_tensor(dataclasses.replace(spec, datatype="UINT8"), rgb)
    assert raw.dtype == np.uint8 and raw[0, 0, 0] == 255


def test_letterbox_geometry_and_padding() -> None:
    spec = dataclasses.replace(
        spec_of(config("[3, 64, 64]", image_postprocess="detection")), resize=Resize.LETTERBOX, pad_value=7
    )
    assert fit(spec, 128, 64) == (64, 32, Geometry(128, 64, 0.5, 0.5, 0.0, 16.0))
    array, geometry = pixels(spec, Image.open(io.BytesIO(encoded((200, 0, 0), (128, 64), "PNG"))), "image")
    assert array.shape == (64, 64, 3) and geometry.pad_y == 16
    assert array[0, 0].tolist() == [7, 7, 7] and array[32, 32].tolist() == [200, 0, 0] and array[63, 0, 0] == 7


def test_a_large_jpeg_is_decoded_at_a_reduced_scale() -> None:
    image = open_image(encoded((0, 0, 255), (1920, 1080)), "image", 10**7)
    decoded = decode(image, "image", (224, 224))
    assert decoded.size == (240, 135) or min(decoded.size) >= 224  # DCT scaling: 1/8 is 240 x 135
    assert decoded.size[0] < 1920
    tensor, geometry = prepare(
        spec_of(config("[3, 224, 224]", image_postprocess="classification")),
        encoded((0, 0, 255), (1920, 1080)),
        "image",
        10**7,
    )
    assert tensor.shape == (3, 224, 224) and (geometry.width, geometry.height) == (1920, 1080)


_PEAK_RISE = """
import resource, sys
import numpy
from appliance.core.errors import InvalidArgument
from appliance.core.image.decode import open_image
from tests.support.image_models import png_bomb
bomb = png_bomb(int(sys.argv[1]), int(sys.argv[1]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    image = open_image(bomb, "image", 10**7 if sys.argv[2] == "refuse" else 2 * 10**8)
    # every pixel at once, as float32 as the model's tensor would hold them: 588 MB for 7000 x 7000, far above the
    # peak the bomb's own making left (147 MB of raw rows), which hid a uint8 copy's rise in one fresh root
    pixels = numpy.asarray(image, dtype=numpy.float32)
    outcome = "decoded"
except InvalidArgument as exc:
    outcome = str(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak, outcome)
"""


def _peak_rise_kib(side: int, mode: str) -> tuple[int, str]:
    """In a fresh process (ru_maxrss is a lifetime peak: other tests would hide a rise): how much the peak
    memory rose, in KiB, around opening and decoding a side x side PNG bomb, and what happened."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RISE, str(side), mode], capture_output=True, text=True, timeout=120, check=True
    )
    rise, outcome = result.stdout.strip().split(" ", 1)
    return int(rise), outcome


def test_a_bomb_is_refused_without_a_large_allocation() -> None:
    # 12000 x 12000 is under Pillow's own refusal (2 x 89 M pixels): 420 KB that would decode to 432 MB
    with pytest.raises(InvalidArgument, match="'image' is 12000x12000 .* over the limit of 10000000 pixels"):
        open_image(png_bomb(12_000, 12_000), "image", 10**7)
    with pytest.raises(InvalidArgument, match="'image'.*pixels"):  # over Pillow's: refused by Image.open
        open_image(png_header(100_000, 100_000), "image", 10**7)
    rise, outcome = _peak_rise_kib(12_000, "refuse")
    assert "over the limit" in outcome and rise < 100 * 1024  # KiB: no 432 MB buffer
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's own global is left alone


def test_the_bomb_check_sees_what_decoding_would_cost() -> None:
    """The measure of the test above sees a bomb's cost: holding a smaller one decoded whole (7000 x 7000, more than
    the imports' own peak) does raise the peak memory. (The appliance's own decode of it need not: Pillow's
    block allocator and draft mode may never hold it all at once.)"""
    rise, outcome = _peak_rise_kib(7_000, "decode")
    assert outcome == "decoded" and rise > 100 * 1024


def test_classification_top_k_softmax_and_threshold() -> None:
    spec = spec_of(config(image_postprocess="classification", image_top_k="2"), {"y": ["a", "b"]})
    labels = classify(spec, np.array([1.0, 3.0, 2.0]))
    assert [(x.label, x.index, x.score) for x in labels] == [("b", 1, 3.0), ("2", 2, 2.0)]
    assert [x.index for x in classify(spec, np.array([-3.0, -1.0, -2.0]))] == [1, 2]  # logits: no default threshold
    soft = classify(dataclasses.replace(spec, softmax=True, top_k=3), np.array([0.0, 0.0, np.log(2.0)]))
    assert [x.index for x in soft] == [2, 0, 1] and soft[0].score == pytest.approx(0.5)
    assert sum(x.score for x in soft) == pytest.approx(1.0)
    kept = classify(dataclasses.replace(spec, softmax=True, top_k=3, score_threshold=0.3), np.array([0, 0, np.log(2)]))
    assert [x.index for x in kept] == [2]


def test_nms_is_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.5, 10).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, 0.5, 2).tolist() == [0, 2]
    assert nms(boxes, scores, np.zeros(4, np.int64), 0.5, 10).tolist() == [0, 3]


def test_detection_maps_boxes_back_and_clips() -> None:
    spec = spec_of(config("[3, 64, 64]", image_postprocess="detection"), {"y": ["p", "c"]})
    output = np.array([[32, 32, 20, 10, 0.9, 0.1], [0, 0, 10, 10, 0.0, 0.3]], np.float32).T
    found = detect(spec, output, Geometry(128, 64, 0.5, 0.5, 0.0, 16.0))
    assert [(d.label, d.index, d.box) for d in found] == [("p", 0, (44.0, 22.0, 84.0, 42.0)), ("c", 1, (0, 0, 10, 0))]
    assert detect(spec, output[:, :0], Geometry(1, 1, 1, 1, 0, 0)) == []
    with pytest.raises(InvalidArgument, match="detection output"):
        detect(spec, np.zeros((3, 2)), Geometry(1, 1, 1, 1, 0, 0))

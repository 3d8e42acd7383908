"""Image inference over REST on a real server: JPEG / PNG bodies and multipart batches into a classifier and a
detector that declare their images in config.pbtxt, routes, auth, and every kind of bad image."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from appliance.core.auth import keys as keymod
from appliance.core.auth.roles import Role
from tests.support.appliance import ServerProcess, running_server
from tests.support.image_models import (
    COLOUR_LABELS,
    DETECTOR_LABELS,
    colour_classifier,
    colour_classifier_uint8_nhwc,
    constant_detector,
    encoded,
    parameters,
    png_bomb,
    png_header,
    write_model,
)

MAX_PIXELS = 4_000_000
MAX_BYTES = 2_000_000

COLOUR_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{{ name: "x", data_type: TYPE_FP32, dims: [3, 32, 32] }}]
output [{{ name: "y", data_type: TYPE_FP32, dims: [3], label_filename: "labels.txt" }}]
dynamic_batching {{ }}
"""

# Candidates in the detector's 64 x 64 input pixels: cx, cy, w, h, then the scores of "person" and "car".
CANDIDATES = np.array(
    [
        [32, 32, 20, 10, 0.9, 0.0],  # A: person, kept
        [33, 32, 20, 10, 0.8, 0.0],  # B: person over A: suppressed
        [32, 32, 20, 10, 0.0, 0.7],  # C: car over A: kept (another class)
        [10, 50, 4, 4, 0.1, 0.0],  # D: under the score threshold
        [60, 10, 20, 20, 0.0, 0.6],  # E: car, reaching out of the picture: clipped
    ],
    dtype=np.float32,
).T

DETECTOR_CONFIG = """
name: "boxes"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [{ name: "x", data_type: TYPE_FP32, dims: [3, 64, 64] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [6, 5], label_filename: "labels.txt" }]
"""


def build_repo(repo: Path) -> None:
    colour = colour_classifier()
    write_model(
        repo,
        "colour",
        COLOUR_CONFIG.format(name="colour") + parameters(image_postprocess="classification", image_top_k="3"),
        labels=COLOUR_LABELS,
        onnx=colour,
    )
    write_model(repo, "plain", COLOUR_CONFIG.format(name="plain"), labels=COLOUR_LABELS, onnx=colour)
    write_model(
        repo,
        "misdeclared",
        COLOUR_CONFIG.format(name="misdeclared")
        + parameters(image_postprocess="classification", image_resize="squash"),
        labels=COLOUR_LABELS,
        onnx=colour,
    )
    write_model(
        repo,
        "bgr",
        """
        name: "bgr"
        platform: "onnxruntime_onnx"
        max_batch_size: 0
        input [{ name: "x", data_type: TYPE_UINT8, dims: [1, 16, 24, 3] }]
        output [{ name: "y", data_type: TYPE_FP32, dims: [1, 3], label_filename: "labels.txt" }]
        """
        + parameters(image_postprocess="classification", image_layout="NHWC", image_color_order="BGR"),
        labels=COLOUR_LABELS[::-1],
        onnx=colour_classifier_uint8_nhwc(),
    )
    write_model(
        repo,
        "boxes",
        DETECTOR_CONFIG + parameters(image_postprocess="detection", image_resize="letterbox"),
        labels=DETECTOR_LABELS,
        onnx=constant_detector(CANDIDATES),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("images")
    build_repo(root / "repo")
    flags = ["--image-max-pixels", str(MAX_PIXELS), "--max-request-bytes", str(MAX_BYTES)]
    flags += ["--model-control-mode", "explicit", "--load-model", "*", "--routes-file", str(root / "routes.json")]
    with running_server(root / "repo", root / "server.log", *flags) as process:
        yield process


def post(server: ServerProcess, model: str, body: bytes, content_type: str = "image/jpeg", **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base}/v2/models/{model}/infer/image",
        content=body,
        headers={"Content-Type": content_type, **kw.pop("headers", {})},
        timeout=30,
        **kw,
    )


def post_files(server: ServerProcess, model: str, images: list[bytes], path: str = "") -> httpx.Response:
    files = [("image", (f"frame{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    return httpx.post(f"{server.base}/v2/models/{model}{path}/infer/image", files=files, timeout=30)


def error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    message: str = answer.json()["error"]
    return message


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour", "label", "fmt"),
    [((250, 10, 10), "red", "JPEG"), ((10, 240, 10), "green", "PNG"), ((0, 0, 255), "blue", "PNG")],
)
def test_the_top_label_is_the_image_colour(server: ServerProcess, colour: Any, label: str, fmt: str) -> None:
    answer = post(server, "colour", encoded(colour, (320, 180), fmt), f"image/{fmt.lower()}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "colour" and body["model_version"] == "1"
    [result] = body["results"]
    assert (result["width"], result["height"]) == (320, 180)
    labels = result["labels"]
    assert [x["label"] for x in labels][0] == label and len(labels) == 3  # image_top_k
    top = labels[0]
    assert top["index"] == COLOUR_LABELS.index(label)
    assert top["score"] == pytest.approx(max(colour) / 255, abs=0.03)  # the default scale, 1/255
    assert [x["score"] for x in labels] == sorted((x["score"] for x in labels), reverse=True)


def test_a_multipart_request_with_two_images_is_a_batch_of_two(server: ServerProcess) -> None:
    images = [encoded((255, 0, 0), (1920, 1080)), encoded((0, 0, 255), (640, 480))]
    answer = post_files(server, "colour", images, "/versions/1")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["labels"][0]["label"] for r in results] == ["red", "blue"]
    assert [(r["width"], r["height"]) for r in results] == [(1920, 1080), (640, 480)]
    stats = httpx.get(f"{server.base}/v2/models/colour/stats").json()["model_stats"][0]
    assert any(b["batch_size"] == 2 for b in stats["batch_stats"])  # one inference of two images


def test_a_model_without_batching_takes_uint8_bgr_nhwc_one_image_an_inference(server: ServerProcess) -> None:
    answer = post_files(server, "bgr", [encoded((250, 0, 0), (320, 240), "PNG"), encoded((0, 0, 250), (10, 10), "PNG")])
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["results"]
    assert first["labels"][0] == {"label": "red", "index": 2, "score": 250.0}  # BGR: red is the third channel
    assert second["labels"][0] == {"label": "blue", "index": 0, "score": 250.0}  # UINT8: pixels as they are
    stats = httpx.get(f"{server.base}/v2/models/bgr/stats").json()["model_stats"][0]
    assert stats["inference_count"] == 2 and stats["execution_count"] == 2


def test_more_images_than_max_batch_size_are_split_into_batches(server: ServerProcess) -> None:
    answer = post_files(server, "boxes", [encoded((0, 0, 0), (128, 64))] * 6)  # max_batch_size 4
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 6 and all(r["boxes"][0]["box"] == [44.0, 22.0, 84.0, 42.0] for r in results)


def test_a_route_takes_images_with_its_stable_arms_declaration(server: ServerProcess) -> None:
    declared = httpx.put(f"{server.base}/v2/routes/camera", json={"arms": [{"model": "colour", "weight": 1}]})
    assert declared.status_code == 200, declared.text
    answer = post(server, "camera", encoded((0, 250, 0), (100, 100)))
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["labels"][0]["label"] == "green"


# -- detection -----------------------------------------------------------------------------------


def test_boxes_come_back_in_the_original_pixels_after_nms(server: ServerProcess) -> None:
    # 128 x 64 into 64 x 64, letterboxed: scale 0.5 and 16 rows of padding above (and below)
    answer = post(server, "boxes", encoded((90, 90, 90), (128, 64)))
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    boxes = [(b["label"], b["index"], round(b["score"], 3), b["box"]) for b in result["boxes"]]
    assert boxes == [
        ("person", 0, 0.9, [44.0, 22.0, 84.0, 42.0]),  # A; B, the same class over it, is gone
        ("car", 1, 0.7, [44.0, 22.0, 84.0, 42.0]),  # C: another class over A stays
        ("car", 1, 0.6, [100.0, 0.0, 128.0, 8.0]),  # E, clipped to the image; D was under 0.25
    ]


def test_each_image_of_a_batch_is_mapped_back_with_its_own_letterbox(server: ServerProcess) -> None:
    answer = post_files(server, "boxes", [encoded((0, 0, 0), (128, 64)), encoded((0, 0, 0), (64, 128))])
    assert answer.status_code == 200, answer.text
    wide, tall = answer.json()["results"]
    assert wide["boxes"][0]["box"] == [44.0, 22.0, 84.0, 42.0]
    # 64 x 128: scale 0.5, 16 columns of padding on the left
    assert tall["boxes"][0]["box"] == [12.0, 54.0, 52.0, 74.0]
    assert (tall["width"], tall["height"]) == (64, 128)


# -- bad input -----------------------------------------------------------------------------------


def test_not_an_image_is_400_naming_the_field(server: ServerProcess) -> None:
    assert "'image' is not a JPEG or PNG" in error(post(server, "colour", b"GIF89a not really"), 400)
    assert "'image' is empty" in error(post(server, "colour", b""), 400)


def test_a_truncated_image_is_400(server: ServerProcess) -> None:
    data = encoded((10, 200, 30), (640, 480))
    noisy = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(noisy, "PNG")
    for body, kind in ((data[: len(data) // 2], "image/jpeg"), (noisy.getvalue()[:20000], "image/png")):
        message = error(post(server, "colour", body, kind), 400)
        assert "'image'" in message and ("truncated" in message or "not a JPEG or PNG" in message)


def test_an_image_with_no_pixels_is_400(server: ServerProcess) -> None:
    message = error(post(server, "colour", png_header(0, 0), "image/png"), 400)
    assert "'image'" in message


def test_a_decompression_bomb_is_refused_from_its_header(server: ServerProcess) -> None:
    message = error(post(server, "colour", png_header(100_000, 100_000), "image/png"), 400)
    assert "'image'" in message and "pixels" in message
    message = error(post(server, "colour", png_bomb(2500, 2000), "image/png"), 400)  # 5 M pixels, over 4 M
    assert f"over the limit of {MAX_PIXELS} pixels" in message and "2500x2000" in message
    assert server.alive()


def test_a_body_over_the_limit_is_413_naming_the_field(server: ServerProcess) -> None:
    message = error(post(server, "colour", b"\xff" * (MAX_BYTES + 1)), 413)
    assert "'image'" in message


def test_a_wrong_content_type_is_400_naming_it(server: ServerProcess) -> None:
    message = error(post(server, "colour", encoded((1, 2, 3), (8, 8)), "text/plain"), 400)
    assert "Content-Type 'text/plain'" in message


def test_a_multipart_body_without_images_is_400(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.base}/v2/models/colour/infer/image", files=[("picture", ("a.jpg", b"x"))])
    assert "no 'image' field" in error(answer, 400)
    answer = httpx.post(
        f"{server.base}/v2/models/colour/infer/image", data={"image": "text"}, files=[("picture", ("a.jpg", b"x"))]
    )
    assert "file part" in error(answer, 400)
    assert "boundary" in error(post(server, "colour", b"--x\r\n", "multipart/form-data"), 400)


def test_one_bad_image_of_a_batch_is_named(server: ServerProcess) -> None:
    message = error(post_files(server, "colour", [encoded((0, 0, 0), (8, 8)), b"nope"]), 400)
    assert "'image[1]'" in message


def test_a_model_without_image_parameters_says_what_it_needs(server: ServerProcess) -> None:
    message = error(post(server, "plain", encoded((0, 0, 0), (8, 8))), 400)
    assert "model 'plain' takes no images" in message and "image_postprocess" in message


def test_an_invalid_parameter_is_400_naming_it_and_tensors_still_work(server: ServerProcess) -> None:
    message = error(post(server, "misdeclared", encoded((0, 0, 0), (8, 8))), 400)
    assert "model 'misdeclared'" in message and "'image_resize'" in message and "squash" in message
    tensor = {"inputs": [{"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}
    answer = httpx.post(f"{server.base}/v2/models/misdeclared/infer", json=tensor, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == pytest.approx([0.5, 0.5, 0.5])


def test_an_unknown_model_is_404(server: ServerProcess) -> None:
    assert "nosuch" in error(post(server, "nosuch", encoded((0, 0, 0), (8, 8))), 404)


# -- auth ----------------------------------------------------------------------------------------


def test_image_inference_is_the_infer_operation(tmp_path: Path) -> None:
    build_repo(tmp_path / "repo")
    keys_file = tmp_path / "keys.json"
    now = dt.datetime.now(dt.UTC)
    keys, records = {}, {}
    for role in (Role.READ, Role.INFER):
        keys[role], record = keymod.new_key(role.name.lower(), role, now)
        records[record.id] = record
    keymod.write_keys(keys_file, records)
    flags = ["--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(tmp_path / "audit.jsonl")]
    with running_server(tmp_path / "repo", tmp_path / "server.log", *flags) as process:
        image = encoded((255, 0, 0), (16, 16))
        assert post(process, "colour", image).status_code == 401
        bearer = {"Authorization": f"Bearer {keys[Role.READ]}"}
        assert post(process, "colour", image, headers=bearer).status_code == 403
        bearer = {"Authorization": f"Bearer {keys[Role.INFER]}"}
        answer = post(process, "colour", image, headers=bearer)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["labels"][0]["label"] == "red"

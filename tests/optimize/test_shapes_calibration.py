"""Shape profiles (flags, config.pbtxt, choice by batch size) and calibration data from real files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from appliance.optimize.calibration import CalibrationData
from appliance.optimize.errors import OptimizeError
from appliance.optimize.manifest import TensorInfo
from appliance.optimize.shapes import (
    check_profiles,
    choose_profile,
    parse_shapes,
    profile_from_flags,
    profiles_from_config,
)

IMAGE_INPUT = [TensorInfo("image", "TYPE_FP32", [-1, 3, 8, 8])]


def test_shapes_from_flags() -> None:
    assert parse_shapes("image:1x3x8x8,mask:1X8", "--min") == {"image": [1, 3, 8, 8], "mask": [1, 8]}
    profile = profile_from_flags("image:1x3x8x8", None, "image:16x3x8x8")
    assert profile == {"image": {"min": [1, 3, 8, 8], "opt": [16, 3, 8, 8], "max": [16, 3, 8, 8]}}
    with pytest.raises(OptimizeError, match=r"--min 'image1x3': expected NAME:DxDxD"):
        parse_shapes("image1x3", "--min")
    with pytest.raises(OptimizeError, match=r"min <= opt <= max"):
        profile_from_flags("image:8x3x8x8", "image:4x3x8x8", "image:16x3x8x8")
    with pytest.raises(OptimizeError, match=r"must name the same inputs"):
        profile_from_flags("image:1x3x8x8", None, "other:1x3x8x8")


def test_profiles_from_config_follow_preferred_batch_sizes() -> None:
    config = text_format.Parse(
        "max_batch_size: 16 dynamic_batching { preferred_batch_size: [4, 8] } "
        'input { name: "image" data_type: TYPE_FP32 dims: [3, 8, 8] }',
        mc.ModelConfig(),
    )
    profiles = profiles_from_config(config, "config.pbtxt", IMAGE_INPUT)
    assert [(p["image"]["min"][0], p["image"]["opt"][0], p["image"]["max"][0]) for p in profiles] == [
        (1, 4, 4),
        (5, 8, 8),
        (9, 16, 16),
    ]
    assert profiles[0]["image"]["min"] == [1, 3, 8, 8]
    check_profiles(profiles, IMAGE_INPUT, Path("m.onnx"))
    ranges = [{"image": (p["image"]["min"], p["image"]["max"])} for p in profiles]
    assert [choose_profile(ranges, {"image": (b, 3, 8, 8)}) for b in (1, 4, 5, 8, 9, 16, 17)] == [0, 0, 1, 1, 2, 2, -1]
    # no dims in the config: they come from the ONNX file
    plain = text_format.Parse("max_batch_size: 8", mc.ModelConfig())
    assert profiles_from_config(plain, "c", IMAGE_INPUT) == [
        {"image": {"min": [1, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [8, 3, 8, 8]}}
    ]
    assert profiles_from_config(mc.ModelConfig(), "c", IMAGE_INPUT) == []


def test_profile_errors_name_input_and_file() -> None:
    dynamic = text_format.Parse(
        'max_batch_size: 8 input { name: "image" data_type: TYPE_FP32 dims: [3, -1, -1] }', mc.ModelConfig()
    )
    with pytest.raises(OptimizeError, match=r"cfg/config.pbtxt: input 'image' has dynamic dims \[3, -1, -1\]"):
        profiles_from_config(dynamic, "cfg/config.pbtxt", IMAGE_INPUT)
    with pytest.raises(OptimizeError, match=r"m.onnx: inputs 'image' \[-1, 3, 8, 8\] have dynamic dims"):
        check_profiles([], IMAGE_INPUT, Path("m.onnx"))
    wrong = [profile_from_flags("image:1x3x9x9", None, "image:4x3x9x9")]
    with pytest.raises(OptimizeError, match=r"min shape \[1, 3, 9, 9\] of 'image' does not fit its ONNX shape"):
        check_profiles(wrong, IMAGE_INPUT, Path("m.onnx"))
    with pytest.raises(OptimizeError, match=r"'mask' is not an input of m.onnx"):
        check_profiles([profile_from_flags("mask:1x3", None, "mask:2x3")], IMAGE_INPUT, Path("m.onnx"))


def test_npy_samples_single_and_stacked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((3, 8, 8)))  # one sample, float64: cast
    np.save(tmp_path / "b.npy", rng.standard_normal((5, 3, 8, 8)).astype(np.float32))
    (tmp_path / "notes.txt").write_text("ignored")
    data = CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32))
    assert data.count() == 6
    batches = list(data.batches(4))
    assert len(batches) == 1 and batches[0].shape == (4, 3, 8, 8) and batches[0].dtype == np.float32
    assert batches[0].flags["C_CONTIGUOUS"]
    assert np.allclose(batches[0][0], np.load(tmp_path / "a.npy"))


def test_wrong_shape_names_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 8, 8), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 9, 8), np.float32))
    data = CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32))
    with pytest.raises(OptimizeError, match=rf"{tmp_path / 'b.npy'}: shape \[3, 9, 8\] is neither"):
        list(data.batches(1))
    np.save(tmp_path / "b.npy", np.array(["x"]))
    with pytest.raises(OptimizeError, match=r"b.npy: has dtype <U1, calibration needs numbers"):
        list(data.batches(1))


def test_empty_or_missing_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no data")
    with pytest.raises(OptimizeError, match=rf"{tmp_path}: calibration folder has no .npy or image files"):
        CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32))
    with pytest.raises(OptimizeError, match=r"nope: calibration folder does not exist"):
        CalibrationData(tmp_path / "nope", (3, 8, 8), np.dtype(np.float32))
    np.save(tmp_path / "one.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(OptimizeError, match=r"1 calibration samples, fewer than one batch of 8"):
        list(CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32)).batches(8))


def test_images_are_resized_scaled_and_laid_out(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    image_module.fromarray(pixels).save(tmp_path / "red.png")
    image_module.fromarray(pixels).save(tmp_path / "red.jpg")
    chw = list(CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32)).samples())
    assert len(chw) == 2 and chw[0].shape == (1, 3, 8, 8)
    assert np.allclose(chw[1][0, 0], 1.0) and np.allclose(chw[1][0, 1:], 0.0)
    hwc = next(CalibrationData(tmp_path, (8, 8, 3), np.dtype(np.float32)).samples())
    assert hwc.shape == (1, 8, 8, 3) and np.allclose(hwc[0, :, :, 0], 1.0, atol=0.02)  # red.jpg: lossy
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OptimizeError, match=r"broken.png: not a readable image"):
        list(CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32)).samples())
    with pytest.raises(OptimizeError, match=r"broken.png: an image cannot fill input shape \[16\]"):
        list(CalibrationData(tmp_path, (16,), np.dtype(np.float32)).samples())


def test_images_without_pillow_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)  # as on a machine without Pillow
    with pytest.raises(OptimizeError, match=r"cat.png: reading images needs Pillow"):
        list(CalibrationData(tmp_path, (3, 8, 8), np.dtype(np.float32)).samples())

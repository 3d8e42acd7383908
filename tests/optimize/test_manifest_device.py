"""Manifests, the verification of an engine against its files and a device, and reading device facts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance.optimize.buildspec import BuildResult, BuildSpec
from appliance.optimize.device import DeviceInfo, describe_device, read_device_json
from appliance.optimize.errors import OptimizeError
from appliance.optimize.manifest import read_manifest, verify_engine
from appliance.optimize.repository import EngineSource, write_engine
from appliance.optimize.shapes import onnx_io

from .conftest import ORIN_AGX, mlp, save


def _engine(tmp_path: Path, dla_core: int | None = None) -> Path:
    folder = tmp_path / "repo" / "mlp" / "1"
    onnx_path = save(mlp(), folder / "model.onnx")
    spec = BuildSpec(
        onnx_path=onnx_path,
        precision="fp16",
        dla_core=dla_core,
        profiles=[{"input": {"min": [1, 16], "opt": [8, 16], "max": [8, 16]}}],
    )
    result = BuildResult(plan=b"plan bytes", builder_flags=["FP16"], tensorrt_version="10.3.0")
    write_engine(folder, spec, result, ORIN_AGX, EngineSource(*onnx_io(onnx_path)))
    return folder


def test_manifest_records_what_the_engine_depends_on(tmp_path: Path) -> None:
    folder = _engine(tmp_path)
    m = read_manifest(folder / "model.plan.json")
    assert (m.tensorrt_version, m.gpu_name, m.compute_capability, m.precision) == (
        "10.3.0",
        "Orin (nvgpu)",
        "8.7",
        "fp16",
    )
    assert m.builder_flags == ["FP16"]
    assert m.profiles == [{"input": {"min": [1, 16], "opt": [8, 16], "max": [8, 16]}}]
    assert len(m.onnx_sha256) == len(m.plan_sha256) == 64
    assert m.created.endswith("Z") and m.tool_version
    assert [(t.name, t.datatype, t.dims) for t in m.inputs] == [("input", "TYPE_FP32", [-1, 16])]
    assert verify_engine(m, folder, ORIN_AGX) == []


def test_verify_lists_each_difference(tmp_path: Path) -> None:
    folder = _engine(tmp_path, dla_core=1)
    m = read_manifest(folder / "model.plan.json")
    (folder / "model.plan").write_bytes(b"tampered")
    save(mlp(seed=5), folder / "model.onnx")
    other = DeviceInfo(tensorrt_version="10.7.0", gpu_name="NVIDIA H100", compute_capability="9.0", dla_cores=0)
    diffs = {d.what: (d.expected, d.actual) for d in verify_engine(m, folder, other)}
    assert set(diffs) == {
        "sha256 of model.plan",
        "sha256 of model.onnx",
        "TensorRT version",
        "GPU name",
        "compute capability",
        "DLA core",
    }
    assert diffs["TensorRT version"] == ("10.3.0", "10.7.0")
    assert diffs["compute capability"] == ("8.7", "9.0")
    assert diffs["DLA core"] == ("1", "0 DLA cores on this device")
    text = [str(d) for d in verify_engine(m, folder, other)]
    assert "TensorRT version: manifest has 10.3.0, found 10.7.0" in text


def test_verify_missing_plan_and_unknown_tensorrt(tmp_path: Path) -> None:
    folder = _engine(tmp_path)
    (folder / "model.plan").unlink()
    m = read_manifest(folder / "model.plan.json")
    no_trt = dataclasses.replace(ORIN_AGX, tensorrt_version="")
    assert [str(d) for d in verify_engine(m, folder, no_trt)] == [
        "plan file: manifest has model.plan, found no such file",
        "TensorRT version: manifest has 10.3.0, found (unknown on this device)",
    ]


def test_bad_manifests_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "model.plan.json"
    path.write_text('{\n  "precision": "fp16",\n  oops\n}\n')
    with pytest.raises(OptimizeError, match=rf"{path}:3: manifest is not valid JSON"):
        read_manifest(path)
    path.write_text('{"precision": "fp16"}')
    with pytest.raises(OptimizeError, match=rf"{path}: manifest lacks tensorrt_version, gpu_name"):
        read_manifest(path)


def test_device_from_a_jetson_file_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n"
    )
    dt = root / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00")
    (dt / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    for dla in ("15880000.nvdla0", "158c0000.nvdla1"):
        (root / "sys" / "devices" / "platform" / "bus@0" / "13e00000.host1x" / dla).mkdir(parents=True)
    libs = root / "usr" / "lib" / "aarch64-linux-gnu"
    libs.mkdir(parents=True)
    for name in ("libnvinfer.so.10", "libnvinfer.so.10.3.0", "libnvinfer.so.8.6.2"):
        (libs / name).touch()
    device = describe_device(root)
    assert device == ORIN_AGX
    path = tmp_path / "agx.json"
    path.write_text(device.to_json())
    assert read_device_json(path) == device


def test_device_of_a_machine_without_jetson_files(tmp_path: Path) -> None:
    assert describe_device(tmp_path) == DeviceInfo()


def test_bad_device_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"tensorrt_version": "10.3.0",\n"gpu": 1}')
    with pytest.raises(OptimizeError, match=r"d.json: unknown keys \['gpu'\]"):
        read_device_json(path)
    path.write_text('{"tensorrt_version": "10.3.0",\n\n,}')
    with pytest.raises(OptimizeError, match=r"d.json:3: not valid JSON"):
        read_device_json(path)
    with pytest.raises(OptimizeError, match=r"missing.json: cannot read device description"):
        read_device_json(tmp_path / "missing.json")


class FakeTensorRTModuleForTests:
    """A FAKE ``tensorrt`` module (no TensorRT here): its version and a builder that reports DLA cores."""

    def __init__(self, version: str) -> None:
        self.__version__ = version

    class Logger:
        ERROR = 0

        def __init__(self, level: int) -> None:
            pass

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger: object) -> None:
            pass


def test_the_tensorrt_binding_must_pair_with_the_runtime_library(tmp_path: Path) -> None:
    libs = tmp_path / "usr" / "lib" / "aarch64-linux-gnu"
    libs.mkdir(parents=True)
    (libs / "libnvinfer.so.10.16.2").touch()
    # The image's pair: python3-tensorrt's 10.13.3 bindings built against tensorrt-core 10.16.2 report 10.16.2.10.
    paired = describe_device(tmp_path, FakeTensorRTModuleForTests("10.16.2.10"))  # type: ignore[arg-type]
    assert paired.tensorrt_version == "10.16.2.10" and paired.dla_cores == 2
    with pytest.raises(OptimizeError, match=r"binding reports 10.13.3 but the runtime library is libnvinfer 10.16.2"):
        describe_device(tmp_path, FakeTensorRTModuleForTests("10.13.3"))  # type: ignore[arg-type]

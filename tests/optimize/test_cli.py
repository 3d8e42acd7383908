"""``trt-optimize`` from the command line: what build writes, verify's report, and errors that name the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.core.model_config import read_config
from appliance.optimize.cli import main
from appliance.optimize.manifest import read_manifest
from appliance.optimize.validate import onnxruntime_runner

from .conftest import ORIN_AGX, FakeTensorRTBuilderForTests, read_json, save, write_device

BIN = Path(sys.executable).parent
SHAPES = ["--min", "input:1x16", "--opt", "input:4x16", "--max", "input:8x16"]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path, **kw: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv], **kw)  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    return code, out, err


def FakeTensorRTRunnerForTests(plan: Path, outputs: list[str]):  # type: ignore[no-untyped-def]  # noqa: N802
    """Stands in for running the engine on TensorRT: runs the ONNX beside the plan with ONNX Runtime."""
    return onnxruntime_runner(plan.parent / "model.onnx")


def test_build_writes_engine_manifest_and_config(
    tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    device = write_device(ORIN_AGX, tmp_path / "agx.json")
    builder = FakeTensorRTBuilderForTests()
    code, out, err = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        repo,
        "--model",
        "mlp",
        "--precision",
        "fp16",
        *SHAPES,
        "--workspace",
        "1G",
        "--dla-core",
        "0",
        "--timing-cache",
        tmp_path / "t.cache",
        "--device",
        device,
        "--validate",
        "--profile",
        "1,8",
        "--iterations",
        "5",
        builder=builder,
        runner_factory=FakeTensorRTRunnerForTests,
    )
    assert code == 0, err
    folder = repo / "mlp" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.plan", "model.plan.json"]
    manifest = read_json(folder / "model.plan.json")
    assert manifest["builder_flags"] == ["FP16", "GPU_FALLBACK"] and manifest["dla_core"] == 0
    assert manifest["workspace_bytes"] == 1 << 30 and manifest["module"] == ORIN_AGX.module
    assert manifest["profiles"] == [{"input": {"min": [1, 16], "opt": [4, 16], "max": [8, 16]}}]
    spec = builder.specs[0]
    assert spec.timing_cache == tmp_path / "t.cache" and not spec.strongly_typed
    config = read_config(repo / "mlp" / "config.pbtxt")
    assert (config.name, config.backend, config.max_batch_size) == ("mlp", "tensorrt", 8)
    assert "validation against ONNX Runtime (fp16" in out and "logits: ok" in out
    assert "batch    1: p50" in out and "batch    8: p50" in out
    assert "Building engine: done" in err


def test_build_from_config_profiles_keeps_the_config(
    tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "repo" / "mlp"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 16\ndynamic_batching { preferred_batch_size: [4] }\n'
        "instance_group { count: 2 }\n"
    )
    code, out, err = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        tmp_path / "repo",
        "--model",
        "mlp",
        "--precision",
        "fp32",
        builder=FakeTensorRTBuilderForTests(),
    )
    assert code == 0, err
    manifest = read_manifest(model_dir / "1" / "model.plan.json")
    assert [p["input"]["max"] for p in manifest.profiles] == [[4, 16], [16, 16]]
    config = read_config(model_dir / "config.pbtxt")
    assert config.backend == "tensorrt" and config.max_batch_size == 16 and config.instance_group[0].count == 2


def test_validation_failure_exits_1(tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def wrong_engine(plan: Path, outputs: list[str]):  # type: ignore[no-untyped-def]
        return lambda inputs: {"logits": np.zeros((inputs["input"].shape[0], 10), np.float32)}

    code, out, _ = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        tmp_path / "r",
        "--model",
        "m",
        *SHAPES,
        "--precision",
        "fp32",
        "--validate",
        builder=FakeTensorRTBuilderForTests(),
        runner_factory=wrong_engine,
    )
    assert code == 1 and "logits: FAILED" in out


def qdq_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dequant"),
        helper.make_node("MatMul", ["dq", "w"], ["logits"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 16])],
        [
            w,
            numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_onnx_builds_strongly_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = save(qdq_model(), tmp_path / "qdq.onnx")
    builder = FakeTensorRTBuilderForTests()
    code, _, err = run(
        capsys,
        "build",
        onnx_path,
        "--repository",
        tmp_path / "r",
        "--model",
        "q",
        *SHAPES,
        "--precision",
        "int8",
        builder=builder,
    )
    assert code == 0, err
    assert builder.specs[0].strongly_typed and builder.specs[0].calibration_cache is None
    manifest = read_manifest(tmp_path / "r" / "q" / "1" / "model.plan.json")
    assert manifest.strongly_typed and manifest.builder_flags == []
    code, _, err = run(
        capsys,
        "build",
        onnx_path,
        "--repository",
        tmp_path / "r",
        "--model",
        "q",
        *SHAPES,
        "--precision",
        "fp16",
        builder=builder,
    )
    assert code == 1 and "has QuantizeLinear/DequantizeLinear nodes" in err


def test_int8_calibration_settings(tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "calib"
    data.mkdir()
    np.save(data / "batch.npy", np.zeros((16, 16), np.float32))
    builder = FakeTensorRTBuilderForTests()
    code, _, err = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        tmp_path / "r",
        "--model",
        "m",
        *SHAPES,
        "--precision",
        "int8",
        "--calibration-data",
        data,
        builder=builder,
    )
    assert code == 0, err
    spec = builder.specs[0]
    assert spec.calibration is not None and spec.calibration.sample_shape == (16,)
    assert spec.calibration_cache == tmp_path / "r" / "m" / "1" / "calibration.cache"
    assert read_manifest(tmp_path / "r" / "m" / "1" / "model.plan.json").calibration_cache == "calibration.cache"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min", "input:1x16"], "--min and --max go together"),
        (["--min", "input=1x16", "--max", "input:8x16"], "--min 'input=1x16': expected NAME:DxDxD"),
        ([], "inputs 'input' [-1, 16] have dynamic dims; give --min/--opt/--max"),
        ([*SHAPES, "--precision", "int8"], "precision int8 needs --calibration-data DIR"),
        ([*SHAPES, "--precision", "fp32", "--dla-core", "0"], "the DLA runs FP16 and INT8 only"),
    ],
)
def test_build_errors(
    tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        tmp_path / "r",
        "--model",
        "m",
        *extra,
        builder=FakeTensorRTBuilderForTests(),
    )
    assert code == 1 and message in err and "Traceback" not in err


def test_errors_name_the_file(tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.onnx"
    assert (
        run(capsys, "build", missing, "--repository", tmp_path, "--model", "m")[2]
        == f"trt-optimize: {missing}: no such ONNX file\n"
    )
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx at all")
    err = run(capsys, "build", junk, "--repository", tmp_path, "--model", "m")[2]
    assert f"{junk}: not a readable ONNX model" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        capsys,
        "build",
        mlp_onnx,
        "--repository",
        tmp_path / "r",
        "--model",
        "m",
        *SHAPES,
        "--precision",
        "int8",
        "--calibration-data",
        empty,
    )
    assert code == 1 and f"{empty}: calibration folder has no .npy or image files" in err
    config = tmp_path / "bad.pbtxt"
    config.write_text('max_batch_size: 8\ninput {\n  name: "input"\n  dimz: [16]\n}\n')
    code, _, err = run(capsys, "build", mlp_onnx, "--repository", tmp_path / "r", "--model", "m", "--config", config)
    assert code == 1 and f"{config}: 4:3 : " in err  # the core's config parser: file, line:column
    device = tmp_path / "device.json"
    device.write_text('{\n"tensorrt_version": 10\n"gpu_name": "x"}')
    code, _, err = run(capsys, "verify", tmp_path, "--device", device)
    assert code == 1 and f"{device}:3: not valid JSON" in err


def test_verify_lists_differences_and_exits_1(
    tmp_path: Path, mlp_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert (
        run(
            capsys,
            "build",
            mlp_onnx,
            "--repository",
            repo,
            "--model",
            "mlp",
            *SHAPES,
            "--device",
            write_device(ORIN_AGX, tmp_path / "agx.json"),
            builder=FakeTensorRTBuilderForTests(),
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "verify", repo, "--device", tmp_path / "agx.json")
    assert code == 0 and out.splitlines() == ["mlp/1/model.plan: ok", "1 of 1 engines match this device"]
    (repo / "mlp" / "1" / "model.plan").write_bytes(b"corrupt")
    code, out, _ = run(capsys, "verify", repo)  # this machine: no TensorRT, no GPU
    lines = out.splitlines()
    assert code == 1 and lines[0] == "mlp/1/model.plan: MISMATCH"
    assert lines[1].startswith("  - sha256 of model.plan: manifest has ")
    assert lines[2:5] == [
        "  - TensorRT version: manifest has 10.3.0, found (unknown on this device)",
        "  - GPU name: manifest has Orin (nvgpu), found (unknown on this device)",
        "  - compute capability: manifest has 8.7, found (unknown on this device)",
    ]
    assert lines[-1] == "0 of 1 engines match this device"


def test_real_commands_without_tensorrt(tmp_path: Path, mlp_onnx: Path) -> None:
    """The installed console scripts on this machine, which has no TensorRT: one clear line, exit 1."""
    done = subprocess.run(
        [BIN / "trt-optimize", "build", mlp_onnx, "--repository", tmp_path / "r", "--model", "m", *SHAPES],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("trt-optimize: TensorRT is not installed here")
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [BIN / "appliance", "optimize", "verify", tmp_path / "nowhere"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == f"appliance optimize: {tmp_path / 'nowhere'}: model repository does not exist\n"

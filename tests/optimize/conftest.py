"""Helpers for the trt-optimize tests: small seeded ONNX models, device descriptions, and the one stand-in.

Nothing here imports TensorRT (this machine has none). The only stand-in is ``FakeTensorRTBuilderForTests``,
which takes the place of :func:`appliance.optimize.builder.build_engine` (the thin TensorRT layer): it returns
bytes that are not an engine, so only the flow around a build is tested with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.optimize.buildspec import BuildResult, BuildSpec
from appliance.optimize.device import DeviceInfo

ORIN_AGX = DeviceInfo(
    tensorrt_version="10.3.0",
    gpu_name="Orin (nvgpu)",
    compute_capability="8.7",
    dla_cores=2,
    l4t_release="36.4.0",
    module="NVIDIA Jetson AGX Orin Developer Kit",
)
ORIN_NANO = dataclasses.replace(ORIN_AGX, dla_cores=0, module="NVIDIA Jetson Orin Nano Developer Kit")


def mlp(
    weights: dict[str, np.ndarray] | None = None, seed: int = 0, features: int = 16, classes: int = 10
) -> onnx.ModelProto:
    """``input [B,features] -> logits [B,classes]``: Gemm, Relu, Gemm, seeded (or given) weights."""
    rng = np.random.default_rng(seed)
    w = weights or {
        "w1": (rng.standard_normal((features, 32)) / 4).astype(np.float32),
        "b1": (rng.standard_normal(32) / 10).astype(np.float32),
        "w2": (rng.standard_normal((32, classes)) / 4).astype(np.float32),
        "b2": np.zeros(classes, np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_weights(seed: int = 0) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in mlp(seed=seed).graph.initializer}


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_device(device: DeviceInfo, path: Path) -> Path:
    path.write_text(device.to_json())
    return path


class FakeTensorRTBuilderForTests:
    """Stands in for TensorRT's builder: records the specs, returns a fake plan, or fails like a real build."""

    def __init__(self, tensorrt_version: str = "10.3.0", fail: str = "") -> None:
        self.tensorrt_version = tensorrt_version
        self.fail = fail
        self.specs: list[BuildSpec] = []

    def __call__(self, spec: BuildSpec, progress: object) -> BuildResult:
        from appliance.optimize.buildspec import builder_flags
        from appliance.optimize.errors import OptimizeError

        self.specs.append(spec)
        flags = builder_flags(spec, fast_fp16=True, fast_int8=True)
        progress.phase_start("Building engine", None, 2)  # type: ignore[attr-defined]
        progress.step_complete("Building engine", 0)  # type: ignore[attr-defined]
        if self.fail:
            raise OptimizeError(self.fail)
        progress.step_complete("Building engine", 1)  # type: ignore[attr-defined]
        progress.phase_finish("Building engine")  # type: ignore[attr-defined]
        plan = b"FAKE TENSORRT PLAN FOR TESTS " + spec.onnx_path.read_bytes()[:64]
        return BuildResult(plan=plan, builder_flags=flags, tensorrt_version=self.tensorrt_version)


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    return save(mlp(), tmp_path / "src" / "mlp.onnx")


def read_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())

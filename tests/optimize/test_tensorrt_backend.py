"""The TensorRT backend's parts that need no TensorRT: selection, config completion from the manifest, the clear
error on a machine without TensorRT, and instances added and retired in place (with FAKE tensorrt and pycuda).
(Running an engine needs a GPU: not tested here.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from appliance.backends import factory_for
from appliance.backends.tensorrt import TensorRTFactory
from appliance.core.backend import LoadError
from appliance.core.repository import LoadOptions

from .test_boot import build_repo  # a repository built through FakeTensorRTBuilderForTests (no real engine)


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_tensorrt_configs_select_the_in_process_backend() -> None:
    assert factory_for(_config('backend: "tensorrt"')).name == "tensorrt"
    assert factory_for(_config('platform: "tensorrt_plan"')).name == "tensorrt"
    routed = 'platform: "tensorrt_plan" parameters { key: "appliance_backend" value { string_value: "tensorrt" } }'
    assert factory_for(_config(routed), triton_url="127.0.0.1:8001").name == "tensorrt"
    assert factory_for(_config('backend: "onnxruntime"')).name == "onnxruntime"


def test_config_completed_from_the_manifest(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    config = mc.ModelConfig(backend="tensorrt")  # nothing but the backend
    TensorRTFactory().complete_config(config, repo / "mlp", 1)
    assert config.max_batch_size == 8
    assert [(t.name, list(t.dims), mc.DataType.Name(t.data_type)) for t in config.input] == [
        ("input", [16], "TYPE_FP32")
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]


def test_load_without_tensorrt_says_what_is_missing(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    factory = TensorRTFactory()
    config = mc.ModelConfig(backend="tensorrt")
    factory.complete_config(config, repo / "mlp", 1)
    with pytest.raises(
        LoadError,
        match=r"model.plan: the tensorrt backend needs the Python packages 'tensorrt' \(10\) "
        r"and 'pycuda', and '(tensorrt|pycuda)' is not installed",
    ):
        factory.load(config, repo / "mlp", 1, LoadOptions())
    with pytest.raises(LoadError, match=r"engine file .*2/model.plan not found"):
        factory.load(config, repo / "mlp", 2, LoadOptions())
    (repo / "mlp" / "1" / "model.plan.json").unlink()
    with pytest.raises(LoadError, match=r"list the inputs and outputs, or keep the manifest model.plan.json"):
        factory.complete_config(mc.ModelConfig(backend="tensorrt"), repo / "mlp", 1)


class FakeCudaForTests:
    """Stands in for ``pycuda.driver`` (no GPU here): counts context pushes and pops, allocations and frees."""

    def __init__(self) -> None:
        self.depth = 0  # the primary context pushed now
        self.live: set[int] = set()  # device allocations not yet freed
        self.freed_outside_context = 0
        fake = self

        class Context:
            def push(self) -> None:
                fake.depth += 1

            def pop(self) -> None:
                fake.depth -= 1

        class Device:
            def __init__(self, index: int) -> None:
                assert index == 0

            def retain_primary_context(self) -> Context:
                return Context()

        class Allocation:
            def __init__(self) -> None:
                fake.live.add(id(self))

            def free(self) -> None:
                fake.freed_outside_context += fake.depth == 0
                fake.live.discard(id(self))

        self.Device, self.Allocation = Device, Allocation

    def init(self) -> None:
        pass

    def Stream(self) -> object:  # noqa: N802 - pycuda's name
        return object()


class FakeTensorRTForTests:
    """Stands in for ``tensorrt`` (10): an engine with one input and one output that counts its live contexts."""

    class TensorIOMode:
        INPUT, OUTPUT = 0, 1

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    def __init__(self, cuda: FakeCudaForTests) -> None:
        self.contexts_made = 0
        fake = self

        class Engine:
            num_io_tensors = 2
            num_optimization_profiles = 1

            def get_tensor_name(self, i: int) -> str:
                return ["x", "y"][i]

            def get_tensor_mode(self, name: str) -> int:
                return 0 if name == "x" else 1

            def get_tensor_dtype(self, name: str) -> str:
                return "float32"

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
                return [[1, 4], [4, 4], [8, 4]]

            def create_execution_context(self) -> object:
                assert cuda.depth > 0, "an execution context is made with the CUDA context current"
                fake.contexts_made += 1
                return object()

        class Runtime:
            def __init__(self, logger: object) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Engine:
                return Engine()

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype: str) -> type:
        return np.float32


def test_execution_contexts_come_and_go_in_place(tmp_path: Path) -> None:
    """What the autoscaler's instance call does to a TensorRT model, with FAKE tensorrt and pycuda (no GPU here):
    new contexts are made with the CUDA context current, retired instances free their device buffers inside it,
    and every push is popped."""
    from appliance.backends.tensorrt import TensorRTBackend
    from appliance.optimize.engine import Engine

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"fake plan")
    cuda = FakeCudaForTests()
    trt = FakeTensorRTForTests(cuda)
    backend = TensorRTBackend(Engine(trt, cuda, plan, 2))
    assert backend.resizable and backend.instance_count == 2 and trt.contexts_made == 2
    backend.resize(4)
    assert backend.instance_count == 4 and trt.contexts_made == 4 and cuda.depth == 0
    engine = backend._engine  # noqa: SLF001 - give the last instances device buffers, as execute() would
    for instance in engine._instances[1:]:  # noqa: SLF001
        instance.device["x"] = cuda.Allocation()
    assert len(cuda.live) == 3
    backend.resize(1)
    assert backend.instance_count == 1 and cuda.live == set() and cuda.freed_outside_context == 0
    assert cuda.depth == 0
    backend.resize(0)  # never below one instance
    assert backend.instance_count == 1

"""The two kinds of backend, in process through the real ModelRepository and the real ``factory_for``.

A batch backend (ONNX Runtime) gets a batcher with one thread per instance and is closed when its version
stops; a self-scheduling backend (the real tritonserver) gets each request directly, with its priority and
timeout, no batcher and no thread, and is unloaded from Triton at the end. A batch backend whose ``model_warmup``
fails is closed; one whose implicit warm-up fails serves (a fake GPU backend: this machine has no GPU to run out
of memory on).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from appliance import reference_triton
from appliance.backends import factory_for
from appliance.core.backend import BackendFactory, BackendOptions, BatchBackend
from appliance.core.errors import Unavailable
from appliance.core.model import BatchedModelVersion, DirectModelVersion
from appliance.core.repository import LoadOptions, ModelRepository
from appliance.core.stats import Metrics
from appliance.core.types import InferRequest, InputTensor
from appliance.demo import write_demo_repository
from tests.support.models import scale_model

SCALE_CONFIG = """
backend: "onnxruntime"
max_batch_size: 4
input { name: "x" data_type: TYPE_FP32 dims: [ 2, 2 ] }
output { name: "y" data_type: TYPE_FP32 dims: [ 2, 2 ] }
instance_group { count: 2 kind: KIND_CPU }
"""


def threads_of(name: str) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(f"{name}#"))


def test_a_batch_backend_runs_on_instance_threads_and_is_closed(tmp_path: Path) -> None:
    (tmp_path / "scale" / "1").mkdir(parents=True)
    (tmp_path / "scale" / "config.pbtxt").write_text(SCALE_CONFIG)
    (tmp_path / "scale" / "1" / "model.onnx").write_bytes(scale_model(batched=True))
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)

    async def go() -> None:
        repo = ModelRepository(tmp_path, LoadOptions(), Metrics(), factory_for)
        await repo.load("scale")
        served = repo.get("scale")
        assert isinstance(served, BatchedModelVersion)
        assert threads_of("scale/1") == ["scale/1#0", "scale/1#1"]
        response = await served.infer(InferRequest("scale", inputs=[InputTensor("x", "FP32", (1, 2, 2), x)]))
        np.testing.assert_array_equal(response.outputs[0].data, x * 2)
        await repo.unload("scale")
        assert not threads_of("scale/1")

    asyncio.run(go())


def test_a_self_scheduling_backend_gets_requests_directly(tmp_path: Path) -> None:
    onnx_repo = write_demo_repository(tmp_path / "onnx")[0].parent
    triton_repo = reference_triton.write_python_backend_repository(onnx_repo, tmp_path / "triton", models=["mlp"])
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)

    async def go(url: str, triton: grpcclient.InferenceServerClient) -> None:
        repo = ModelRepository(triton_repo, LoadOptions(triton_url=url), Metrics(), factory_for)
        await repo.load("mlp")
        served = repo.get("mlp")
        assert isinstance(served, DirectModelVersion)
        assert triton.is_model_ready("mlp") and not threads_of("mlp/1")
        request = InferRequest("mlp", inputs=[InputTensor("input", "FP32", (1, 64), x)], priority=1, timeout_us=10**6)
        response = await served.infer(request)
        assert response.outputs[0].name == "logits" and response.outputs[0].data.shape == (1, 10)
        await repo.unload("mlp")
        assert not triton.is_model_ready("mlp")

    with reference_triton.running_tritonserver(triton_repo, tmp_path / "t", model_control_mode="explicit") as server:
        asyncio.run(go(server.grpc_url, grpcclient.InferenceServerClient(server.grpc_url)))


class FakeGpuBackend(BatchBackend):
    """Stands in for a GPU backend (TensorRT) that runs out of device memory: this machine has no GPU."""

    def __init__(self) -> None:
        self.closed = False

    @property
    def instance_count(self) -> int:
        return 1

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        raise RuntimeError("out of device memory")

    def close(self) -> None:
        self.closed = True


class FakeGpuFactory:
    name = "fake-gpu"

    def __init__(self, backend: FakeGpuBackend) -> None:
        self.backend = backend

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        pass

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> FakeGpuBackend:
        return self.backend


GPU_CONFIG = SCALE_CONFIG.replace(
    "instance_group { count: 2 kind: KIND_CPU }", "instance_group { count: 1 kind: KIND_GPU }"
)
EXPLICIT_WARMUP = """
model_warmup { name: "zeros" batch_size: 1
  inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 2, 2 ] zero_data: true } } }
"""


def fake_gpu_repository(root: Path, config: str, backend: FakeGpuBackend) -> ModelRepository:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text(config)

    def fake_gpu_factory_for(config: mc.ModelConfig, triton_url: str) -> BackendFactory:
        return FakeGpuFactory(backend)

    return ModelRepository(root, LoadOptions(), Metrics(), fake_gpu_factory_for)


def test_a_failed_model_warmup_closes_the_batch_backend(tmp_path: Path) -> None:
    backend = FakeGpuBackend()

    async def go() -> None:
        repo = fake_gpu_repository(tmp_path, GPU_CONFIG + EXPLICIT_WARMUP, backend)
        with pytest.raises(Exception, match="warm-up 'zeros' failed: out of device memory"):
            await repo.load("m")
        assert backend.closed
        with pytest.raises(Unavailable):
            repo.get("m")

    asyncio.run(go())


def test_a_failed_implicit_warm_up_is_logged_and_the_model_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeGpuBackend()

    async def go() -> None:
        repo = fake_gpu_repository(tmp_path, GPU_CONFIG, backend)
        await repo.load("m")
        assert isinstance(repo.get("m"), BatchedModelVersion) and not backend.closed
        await repo.unload("m")

    asyncio.run(go())
    assert "implicit warm-up (batch 1 of zeros; the config has no model_warmup) failed" in caplog.text
    assert "out of device memory" in caplog.text

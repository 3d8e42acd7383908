"""The two kinds of backend, through the real ModelRepository with fake backends handed in as ``factory_for``.

A batch backend is warmed up on every instance, gets a batcher with one thread per instance, and is closed when
its version stops; a self-scheduling backend gets each request directly (with its priority and timeout), no
warm-up, no batcher and no thread, and is followed by ``refresh`` (is_ready, reload) and unloaded at the end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from appliance.core.backend import Backend, BackendFactory, BackendOptions, BatchBackend, SelfSchedulingBackend
from appliance.core.errors import Unavailable
from appliance.core.model import BatchedModelVersion, DirectModelVersion
from appliance.core.repository import LoadOptions, ModelRepository
from appliance.core.stats import Metrics
from appliance.core.types import InferRequest, InputTensor

CONFIG = """
max_batch_size: 4
input { name: "x" data_type: TYPE_FP32 dims: [ 2 ] }
output { name: "y" data_type: TYPE_FP32 dims: [ 2 ] }
instance_group { count: 2 }
"""


class FakeBatchBackend(BatchBackend):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.executed: list[tuple[int, tuple[int, ...]]] = []
        self.closed = False

    @property
    def instance_count(self) -> int:
        return 2

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        self.executed.append((instance, inputs["x"].shape))
        if self.fail:
            raise RuntimeError("out of device memory")
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.closed = True


class FakeSelfSchedulingBackend(SelfSchedulingBackend):
    def __init__(self) -> None:
        self.requests: list[tuple[int, int]] = []
        self.ready = True
        self.reloads = 0
        self.unloaded = False

    async def infer(
        self, inputs: dict[str, NDArray[Any]], outputs: Sequence[str], priority: int, timeout_us: int
    ) -> dict[str, NDArray[Any]]:
        self.requests.append((priority, timeout_us))
        return {"y": inputs["x"] * 3}

    async def is_ready(self) -> bool:
        return self.ready

    async def reload(self) -> bool:
        self.reloads += 1
        self.ready = True
        return True

    async def unload(self) -> None:
        self.unloaded = True


class FakeFactory:
    name = "fake"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        pass

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> Backend:
        return self.backend


def repository(tmp_path: Path, backend: Backend) -> ModelRepository:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text(CONFIG)

    def factory_for(config: mc.ModelConfig, triton_url: str) -> BackendFactory:
        return FakeFactory(backend)

    return ModelRepository(tmp_path, LoadOptions(), Metrics(), factory_for)


def request(priority: int = 0, timeout_us: int = 0) -> InferRequest:
    x = np.ones((1, 2), np.float32)
    return InferRequest("m", inputs=[InputTensor("x", "FP32", (1, 2), x)], priority=priority, timeout_us=timeout_us)


def threads_of(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"{name}#")]


def test_a_batch_backend_is_warmed_up_batched_on_instance_threads_and_closed(tmp_path: Path) -> None:
    backend = FakeBatchBackend()

    async def go() -> None:
        repo = repository(tmp_path, backend)
        await repo.load("m")
        assert sorted(backend.executed) == [(0, (1, 2)), (1, (1, 2))]  # warm-up: batch 1 of zeros, every instance
        served = repo.get("m")
        assert isinstance(served, BatchedModelVersion)
        assert sorted(threads_of("m/1")) == ["m/1#0", "m/1#1"]
        response = await served.infer(request())
        np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 2), 2, np.float32))
        await repo.unload("m")
        assert backend.closed and not threads_of("m/1")

    asyncio.run(go())


def test_a_failed_warm_up_closes_the_batch_backend(tmp_path: Path) -> None:
    backend = FakeBatchBackend(fail=True)

    async def go() -> None:
        repo = repository(tmp_path, backend)
        with pytest.raises(Exception, match="warm-up 'zeros' failed: out of device memory"):
            await repo.load("m")
        assert backend.closed
        with pytest.raises(Unavailable):
            repo.get("m")

    asyncio.run(go())


def test_a_self_scheduling_backend_gets_requests_directly_and_is_followed(tmp_path: Path) -> None:
    backend = FakeSelfSchedulingBackend()

    async def go() -> None:
        repo = repository(tmp_path, backend)
        await repo.load("m")
        served = repo.get("m")
        assert isinstance(served, DirectModelVersion)
        assert not hasattr(served, "batcher") and not threads_of("m/1")
        response = await served.infer(request(priority=2, timeout_us=5000))
        np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 2), 3, np.float32))
        assert backend.requests == [(2, 5000)]

        backend.ready = False  # Triton restarted without the model
        await repo.refresh()
        with pytest.raises(Unavailable, match="version 1 is not ready: UNAVAILABLE not ready in Triton"):
            repo.get("m", "1")
        await repo.refresh()  # reloaded there
        assert backend.reloads == 1 and repo.get("m") is served

        await repo.unload("m")
        assert backend.unloaded

    asyncio.run(go())


def test_a_backend_missing_part_of_its_interface_cannot_be_built() -> None:
    class NoReload(SelfSchedulingBackend):
        async def infer(
            self, inputs: dict[str, NDArray[Any]], outputs: Sequence[str], priority: int, timeout_us: int
        ) -> dict[str, NDArray[Any]]:
            return {}

        async def is_ready(self) -> bool:
            return True

        async def unload(self) -> None:
            pass

    with pytest.raises(TypeError, match="reload"):
        NoReload()  # type: ignore[abstract]

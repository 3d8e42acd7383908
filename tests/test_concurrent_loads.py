"""Concurrent load calls for one model (issue 10, item 4; Triton loads twice, its issue #7018): they run one at a
time, and a call made while a load of the same model and config is under way shares that load and its outcome.
In process, through the real ModelRepository and the real ONNX Runtime factory, counted as it loads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from appliance.backends import factory_for
from appliance.core.backend import Backend, BackendFactory, BackendOptions, LoadError
from appliance.core.repository import LoadOptions, ModelRepository
from appliance.core.stats import Metrics
from tests.support import models


class CountedFactory:
    """The real factory of a config, counting the versions it starts to load (each waits for ``release``)."""

    def __init__(self, inner: BackendFactory, loads: list[int], release: threading.Event) -> None:
        self.name = inner.name
        self._inner = inner
        self._loads = loads
        self._release = release

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        self._loads.append(version)  # the first step of every load
        self._release.wait(30)
        self._inner.complete_config(config, model_dir, version)

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> Backend:
        return self._inner.load(config, model_dir, version, options)


def repository(root: Path) -> tuple[ModelRepository, list[int], threading.Event]:
    loads: list[int] = []
    release = threading.Event()

    def counted(config: mc.ModelConfig, triton_url: str) -> BackendFactory:
        return CountedFactory(factory_for(config, triton_url), loads, release)

    return ModelRepository(root, LoadOptions(), Metrics(), counted), loads, release


async def started(count: int, *calls: Any) -> list[asyncio.Future[Any]]:
    """Start the calls, then let the loop run until each has reached its first wait."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(count):
        await asyncio.sleep(0.01)
    return tasks


def test_calls_during_a_load_share_it(tmp_path: Path) -> None:
    models.write_identity(tmp_path, "FP32", batched=True)

    async def go() -> None:
        repo, loads, release = repository(tmp_path)
        tasks = await started(5, *(repo.load("identity_fp32") for _ in range(4)))
        release.set()
        await asyncio.gather(*tasks)
        assert loads == [1]  # one load of version 1 for four calls
        assert repo.get("identity_fp32").version == 1
        await repo.load("identity_fp32")  # a call after it ends loads again
        assert loads == [1, 1]
        await repo.unload_all()

    asyncio.run(go())


def test_a_call_with_another_config_waits_and_then_loads(tmp_path: Path) -> None:
    models.write_identity(tmp_path, "FP32", batched=True)
    other = '{"max_batch_size": 2, "dynamic_batching": {}}'

    async def go() -> None:
        repo, loads, release = repository(tmp_path)
        tasks = await started(5, repo.load("identity_fp32"), repo.load("identity_fp32", other))
        assert loads == [1]  # the second waits for the first, not beside it
        release.set()
        await asyncio.gather(*tasks)
        assert loads == [1, 1]
        assert repo.get("identity_fp32").max_batch_size == 2  # the later call's config won
        await repo.unload_all()

    asyncio.run(go())


def test_a_shared_load_shares_its_error(tmp_path: Path) -> None:
    models.write_identity(tmp_path, "FP32", batched=True)
    (tmp_path / "identity_fp32" / "1" / "model.onnx").write_bytes(b"not an onnx file")

    async def go() -> None:
        repo, loads, release = repository(tmp_path)
        tasks = await started(5, repo.load("identity_fp32"), repo.load("identity_fp32"))
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, LoadError) for r in results), results
        assert loads == [1]
        await repo.unload_all()

    asyncio.run(go())


def test_a_caller_that_goes_away_does_not_stop_the_load(tmp_path: Path) -> None:
    models.write_identity(tmp_path, "FP32", batched=True)

    async def go() -> None:
        repo, loads, release = repository(tmp_path)
        (caller,) = await started(5, repo.load("identity_fp32"))
        caller.cancel()  # as when a REST client disconnects
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        for _ in range(500):
            if repo.models["identity_fp32"].ready_versions():
                break
            await asyncio.sleep(0.01)
        assert repo.get("identity_fp32").version == 1
        await repo.unload_all()

    asyncio.run(go())

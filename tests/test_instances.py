"""Changing a model's execution instances while it serves (the autoscaler's lever): the batcher grows and shrinks
in place, a shrinking instance finishes its batch first, no request fails; on a real server through
``POST /v2/repository/models/{name}/instances`` with ``{"count": N}``, under load, with its bad input and auth."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from appliance.core.batching import DynamicBatcher, Execution
from appliance.core.model_config import BatchingPolicy
from tests.support.autoscaler import create_key


class Slow:
    """An execute function that records which instance ran each batch, and can hold instances busy."""

    def __init__(self) -> None:
        self.instances: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def __call__(self, instance: int, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        with self.lock:
            self.instances.append(instance)
        self.release.wait(10)
        return {"y": inputs["x"] * 2}


def _batcher(execute: Slow, count: int) -> DynamicBatcher:
    executions: list[Execution] = []
    return DynamicBatcher(
        BatchingPolicy(max_batch_size=1, combine=False), execute, count, ["x"], ["y"], executions.append, name="m/1"
    )


async def _submit(batcher: DynamicBatcher, i: int) -> float:
    outputs, _, _ = await batcher.submit({"x": np.full((1, 1), i, np.float32)}, 1)
    return float(outputs["y"][0, 0])


def test_batcher_grows_in_place_and_new_instances_take_batches() -> None:
    async def run() -> None:
        execute = Slow()
        batcher = _batcher(execute, 1)
        batcher.start()
        sizes: list[int] = []
        await batcher.resize(3, sizes.append)
        assert sizes == [3] and batcher.instance_count == 3
        execute.release.clear()  # hold every instance: three requests run at once, one on each
        tasks = [asyncio.ensure_future(_submit(batcher, i)) for i in range(3)]
        while len(execute.instances) < 3:
            await asyncio.sleep(0.01)
        assert sorted(execute.instances) == [0, 1, 2]
        execute.release.set()
        assert await asyncio.gather(*tasks) == [0.0, 2.0, 4.0]
        await batcher.stop()

    asyncio.run(run())


def test_batcher_shrinks_after_the_retiring_instance_finishes_its_batch() -> None:
    async def run() -> None:
        execute = Slow()
        batcher = _batcher(execute, 2)
        batcher.start()
        execute.release.clear()
        held = [asyncio.ensure_future(_submit(batcher, i)) for i in range(2)]  # both instances busy
        while len(execute.instances) < 2:
            await asyncio.sleep(0.01)
        sizes: list[int] = []
        shrink = asyncio.ensure_future(batcher.resize(1, sizes.append))
        await asyncio.sleep(0.1)
        assert not shrink.done() and sizes == []  # instance 1 is still running its batch: not released yet
        execute.release.set()
        await shrink
        assert sizes == [1] and batcher.instance_count == 1
        assert await asyncio.gather(*held) == [0.0, 2.0]  # the batches in flight completed
        before = len(execute.instances)
        assert await asyncio.gather(*(_submit(batcher, i) for i in range(5))) == [0.0, 2.0, 4.0, 6.0, 8.0]
        assert set(execute.instances[before:]) == {0}  # the retired instance never runs again
        with pytest.raises(ValueError, match="at least 1"):
            await batcher.resize(0, sizes.append)
        await batcher.stop()

    asyncio.run(run())


def _instances(client: httpx.Client, model: str, body: Any, **kw: Any) -> httpx.Response:
    return client.post(f"/v2/repository/models/{model}/instances", json=body, **kw)


def _config_count(client: httpx.Client, model: str, **kw: Any) -> int:
    groups = client.get(f"/v2/models/{model}/config", **kw).json()["instance_group"]
    return sum(int(g.get("count", 1)) for g in groups)


def test_instances_change_under_load_with_no_failed_request(demo_repo: Path, server_factory: Any):
    server = server_factory(demo_repo)
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def load() -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
        inputs = [httpclient.InferInput("input", [1, 64], "FP32")]
        inputs[0].set_data_from_numpy(x)
        while not stop.is_set():
            try:
                result = client.infer("mlp", inputs)
                assert result.as_numpy("logits").shape == (1, 10)
                done[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                failures.append(repr(exc))
                time.sleep(0.1)

    with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=server.base, timeout=60) as client:
        workers = [pool.submit(load) for _ in range(6)]
        try:
            for count in (4, 1, 3, 2, 1):
                before = done[0]
                response = _instances(client, "mlp", {"count": count})
                assert response.status_code == 200, response.text
                assert response.json() == {"model": "mlp", "instances": count, "in_place": True}
                assert _config_count(client, "mlp") == count
                metric = f'appliance_model_instances{{model="mlp",version="1"}} {float(count)}'
                assert metric in client.get("/metrics").text
                deadline = time.monotonic() + 30
                while done[0] < before + 50 and time.monotonic() < deadline:  # requests flow on the new count
                    time.sleep(0.01)
        finally:
            stop.set()
        for worker in workers:
            worker.result()
    assert failures == []
    assert done[0] > 250


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"count": 0}, 400, "'count' must be between 1 and 64, got 0"),
        ({"count": 65}, 400, "'count' must be between 1 and 64, got 65"),
        ({"count": "2"}, 400, "'count' must be a whole number of instances, got \"2\""),
        ({"count": True}, 400, "'count' must be a whole number of instances, got true"),
        ({"count": 2.5}, 400, "'count' must be a whole number of instances, got 2.5"),
        ({}, 400, "'count' must be a whole number of instances, got null"),
    ],
)
def test_bad_counts_name_the_field(demo_repo: Path, server_factory: Any, body: Any, status: int, text: str):
    server = server_factory(demo_repo)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        response = _instances(client, "mlp", body)
        assert (response.status_code, response.json()) == (status, {"error": text})
        assert _config_count(client, "mlp") == 1  # unchanged


def test_unknown_model_and_auth(demo_repo: Path, tmp_path: Path, server_factory: Any):
    keys_file, audit_file = tmp_path / "keys.json", tmp_path / "audit.jsonl"

    admin, infer = create_key(keys_file, "admin"), create_key(keys_file, "infer")
    server = server_factory(
        demo_repo, "--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(audit_file)
    )
    with httpx.Client(base_url=server.base, timeout=30) as client:
        as_admin = {"headers": {"Authorization": f"Bearer {admin}"}}
        response = _instances(client, "nope", {"count": 2}, **as_admin)
        assert (response.status_code, response.json()) == (
            404,
            {"error": "Request for unknown model: 'nope' is not found"},
        )
        assert _instances(client, "mlp", {"count": 2}).status_code == 401
        assert _instances(client, "mlp", {"count": 2}, headers={"Authorization": f"Bearer {infer}"}).status_code == 403
        assert _instances(client, "mlp", {"count": 2}, **as_admin).status_code == 200
        assert _config_count(client, "mlp", **as_admin) == 2
    entries = [line for line in audit_file.read_text().splitlines() if '"model_instances"' in line]
    assert any('"target": "mlp"' in e and '"result": "ok"' in e for e in entries)
    assert any('"key": "infer"' in e and "denied" in e for e in entries)

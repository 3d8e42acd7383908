"""Where the batcher runs a batch: inline on the event loop (tiny compute, or a lone request on an idle model)
or on the instance thread.

These drive ``DynamicBatcher`` directly with real threads and a real event loop; the "model" is a Python
function whose compute time the test chooses.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from appliance.core.batching import DynamicBatcher, Execution, Placement
from appliance.core.model_config import BatchingPolicy


class Recorder:
    """An execute function that takes ``compute_s`` of wall time and records its thread and batch size."""

    def __init__(self, compute_s: float) -> None:
        self.compute_s = compute_s
        self.threads: list[str] = []
        self.batch_sizes: list[int] = []

    def __call__(self, instance: int, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        self.batch_sizes.append(len(inputs["x"]))
        end = time.perf_counter() + self.compute_s
        while time.perf_counter() < end:  # busy, as a CPU model is; time.sleep would release the GIL
            pass
        return {"y": inputs["x"] * 2}


async def _one_at_a_time(
    recorder: Recorder,
    requests: int,
    inline_compute_us: int = 100,
    alone_compute_us: int = 0,
    idle_s: float = 0.0,
) -> list[Execution]:
    """``requests`` requests, each sent when the last has answered, ``idle_s`` after it."""
    executions: list[Execution] = []
    batcher = DynamicBatcher(
        BatchingPolicy(max_batch_size=8, combine=True),
        recorder,
        1,
        ["x"],
        ["y"],
        executions.append,
        placement=Placement(inline_compute_us, alone_compute_us),
        name="m/1",
    )
    batcher.start()

    for i in range(requests):
        if idle_s:
            await asyncio.sleep(idle_s)
        outputs, _, _ = await batcher.submit({"x": np.full((1, 2), i, np.float32)}, 1)
        assert outputs["y"].tolist() == [[2 * i, 2 * i]]
    await batcher.stop()
    assert [e.batch_size for e in executions] == [1] * requests
    return executions


def expected_inline(executions: Sequence[Execution], inline_compute_us: int) -> list[bool]:
    """Which of these batches (all of one size) the batcher should have run inline, by its rule: inline once
    the compute floor it measured (each measured time, the floor growing 5% a batch) is under the threshold."""
    floor = float("inf")
    inline = []
    for execution in executions:
        inline.append(floor < inline_compute_us / 1e6)
        floor = min(execution.input_s + execution.infer_s + execution.output_s, floor * 1.05)
    return inline


def test_tiny_batches_run_inline_once_measured() -> None:
    # A batch of nothing measures some microseconds, but a loaded machine can stretch one past any threshold:
    # the threshold is far above a tiny batch, and placement is checked against the times the batcher saw.
    threshold_us = 20_000
    recorder = Recorder(compute_s=0.0)
    executions = asyncio.run(_one_at_a_time(recorder, requests=5, inline_compute_us=threshold_us))
    ran_inline = [thread == threading.main_thread().name for thread in recorder.threads]
    assert ran_inline == expected_inline(executions, threshold_us), (recorder.threads, executions)
    assert set(recorder.threads) <= {"m/1#0", threading.main_thread().name}
    # The first batch has no measured compute time yet, so it goes to the instance thread; then inline.
    assert recorder.threads[0] == "m/1#0"
    assert threading.main_thread().name in recorder.threads[1:]


def test_batches_over_the_threshold_stay_on_the_instance_thread() -> None:
    recorder = Recorder(compute_s=0.0005)  # 500 us, over the 100 us default
    asyncio.run(_one_at_a_time(recorder, requests=5))
    assert set(recorder.threads) == {"m/1#0"}


@pytest.mark.parametrize(("compute_s", "alone_compute_us"), [(0.002, 0), (0.002, 1000), (0.0005, 1000)])
def test_slow_batches_on_the_thread_let_requests_queue_and_batch(compute_s: float, alone_compute_us: int) -> None:
    # While a batch runs on the instance thread the loop stays free: the requests behind it queue and go as one
    # batch. Inline (threshold above the compute time) each would run alone as it arrives. Requests that follow
    # each other closely are never "alone", whatever the cap for lone requests.
    recorder = Recorder(compute_s=compute_s)

    async def staggered() -> None:
        executions: list[Execution] = []
        batcher = DynamicBatcher(
            BatchingPolicy(max_batch_size=8, combine=True),
            recorder,
            1,
            ["x"],
            ["y"],
            executions.append,
            Placement(100, alone_compute_us),
            "m/1",
        )
        batcher.start()

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.0002)  # arrivals spread over 1.6 ms, as from a network
            await batcher.submit({"x": np.full((1, 2), i, np.float32)}, 1)

        await asyncio.gather(*(one(i) for i in range(9)))
        await batcher.stop()

    asyncio.run(staggered())
    assert len(recorder.batch_sizes) < 9
    assert max(recorder.batch_sizes) > 1
    assert sum(recorder.batch_sizes) == 9


def test_a_lone_request_on_an_idle_model_runs_inline() -> None:
    # 500 us of compute: over the 100 us threshold, under the cap for a lone request (5 ms here, so that a
    # loaded machine cannot stretch a measured batch past it). One client sends a request 10 ms after the last
    # answer: the model is idle longer than the batch takes, so once its compute time is measured (the first
    # batch, on the thread) each request runs inline, with no hand-off to wait for.
    recorder = Recorder(compute_s=0.0005)
    asyncio.run(_one_at_a_time(recorder, requests=5, alone_compute_us=5000, idle_s=0.010))
    main = threading.main_thread().name
    assert recorder.threads[0] == "m/1#0"
    assert recorder.threads[1:] == [main] * 4, recorder.threads


def test_lone_requests_over_the_cap_stay_on_the_instance_thread() -> None:
    # 2 ms of compute, over the 1 ms cap: however long the model idles, the loop is not blocked that long.
    recorder = Recorder(compute_s=0.002)
    asyncio.run(_one_at_a_time(recorder, requests=4, alone_compute_us=1000, idle_s=0.005))
    assert set(recorder.threads) == {"m/1#0"}


def test_back_to_back_requests_are_not_alone() -> None:
    # Sent as soon as the last answered: the loop idles for far less than a 4 ms batch takes (under the 10 ms
    # cap), so each batch goes to the instance thread, as under load, where requests queue there and batch.
    # (A loop thread waiting for a core counts as idle: the batch is long, so that a loaded machine's pause
    # between two requests cannot pass for a lone client.)
    recorder = Recorder(compute_s=0.004)
    asyncio.run(_one_at_a_time(recorder, requests=5, alone_compute_us=10_000))
    assert set(recorder.threads) == {"m/1#0"}


def test_lone_requests_stay_on_the_thread_for_a_second_after_requests_batched() -> None:
    # Requests that batched together show a load that batches: lone requests right after it go to the instance
    # thread even when the model and the loop idle, so that a pause in a loaded pipeline does not start running
    # batches inline (where nothing can join them).
    recorder = Recorder(compute_s=0.0005)

    async def run() -> None:
        batcher = DynamicBatcher(
            BatchingPolicy(max_batch_size=8, combine=True),
            recorder,
            1,
            ["x"],
            ["y"],
            lambda execution: None,
            Placement(100, 5000),
            "m/1",
        )
        batcher.start()
        await asyncio.gather(*(batcher.submit({"x": np.full((1, 2), i, np.float32)}, 1) for i in range(3)))
        for i in range(4):
            await asyncio.sleep(0.010)
            await batcher.submit({"x": np.full((1, 2), i, np.float32)}, 1)
        await batcher.stop()

    asyncio.run(run())
    assert recorder.batch_sizes == [3, 1, 1, 1, 1]
    assert set(recorder.threads) == {"m/1#0"}, recorder.threads

"""The dynamic batcher, driven through the real server with the slow model.

The slow model's second input ``n`` sets how many chained MatMuls a batch runs, so a "blocker" request keeps
the single instance busy while a test fills the queue behind it. Assertions are about what happened (batch
sizes in the statistics, completion order, which requests failed with which status, and whether a timeout
fired before the blocker finished), never about speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.appliance import ServerProcess, running_server
from tests.support.onnx_reference import assert_same, iterations_for, ort_run

SLOW_MODELS = {
    # name: (max_batch_size, dynamic_batching body)
    "slow_batch": (4, "max_queue_delay_microseconds: 0"),
    "slow_preferred": (8, "preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 0"),
    "slow_delay_lone": (8, "max_queue_delay_microseconds: 400000"),
    "slow_delay_group": (8, "max_queue_delay_microseconds: 400000"),
    "slow_prio": (1, "priority_levels: 3 default_priority_level: 3"),
    "slow_reject": (
        1,
        "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 200000 }",
    ),
    "slow_override": (
        1,
        "default_queue_policy { timeout_action: REJECT allow_timeout_override: true }",
    ),
    "slow_no_override": (
        1,
        "default_queue_policy { timeout_action: REJECT allow_timeout_override: false }",
    ),
    "slow_delay_action": (
        1,
        "default_queue_policy { timeout_action: DELAY allow_timeout_override: true }",
    ),
    "slow_qsize": (1, "default_queue_policy { max_queue_size: 2 }"),
    "slow_cancel": (1, ""),
}

BLOCK_S = 1.5  # how long a blocker keeps the instance busy
STEP_S = 0.08  # how long a queued request runs where a test checks completion order: client threads on a
# loaded machine may see responses that arrive a few milliseconds apart in either order


def step() -> int:
    return iterations_for(STEP_S)


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slow") / "repo"
    root.mkdir()
    for name, (mbs, body) in SLOW_MODELS.items():
        models.write_slow(root, name, max_batch_size=mbs, dynamic_batching=body)
    return root


@pytest.fixture(scope="module")
def slow_server(slow_repo: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    with running_server(slow_repo, tmp_path_factory.mktemp("logs") / "slow-server.log") as server:
        yield server


def infer(server: ServerProcess, model: str, transport: str, n: int, value: float = 0.0, **kwargs: Any) -> np.ndarray:
    x = np.full((1, 4), value, np.float32)
    count = np.full((1, 1), n, np.int64)
    lib = httpclient if transport == "http" else grpcclient
    inputs = [lib.InferInput("x", [1, 4], "FP32"), lib.InferInput("n", [1, 1], "INT64")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(count)
    client = server.http(network_timeout=60, connection_timeout=60) if transport == "http" else server.grpc()
    return client.infer(model, inputs, **kwargs).as_numpy("y")


@dataclass
class Calls:
    """Requests run on threads; records the order they finished in and how."""

    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(32))
    order: list[str] = field(default_factory=list)
    outcomes: dict[str, Any] = field(default_factory=dict)
    finished_at: dict[str, float] = field(default_factory=dict)
    futures: dict[str, Future] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, label: str, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                outcome: Any = fn()
            except Exception as exc:  # noqa: BLE001 - recorded for the test to check
                outcome = exc
            with self.lock:
                self.order.append(label)
                self.outcomes[label] = outcome
                self.finished_at[label] = time.monotonic()

        self.futures[label] = self.pool.submit(run)

    def wait(self, timeout: float = 60) -> None:
        for future in self.futures.values():
            future.result(timeout)
        self.pool.shutdown()


def status_of(outcome: Any) -> str:
    if isinstance(outcome, InferenceServerException):
        return str(outcome.status())
    return "ok" if isinstance(outcome, np.ndarray) else repr(outcome)


def stats(server: ServerProcess, model: str) -> dict[str, Any]:
    (s,) = server.http().get_inference_statistics(model)["model_stats"]
    return s


def batch_sizes(server: ServerProcess, model: str) -> dict[int, int]:
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats(server, model)["batch_stats"]}


@dataclass
class Counts:
    """What the server has counted for one model so far: its statistics and its /metrics series.

    The module's server is shared, so tests assert on the change they made (``after - before``), which holds
    whatever ran before them."""

    inference_count: int
    execution_count: int
    queue_ns: int
    batch_sizes: dict[int, int]
    series: dict[str, float]  # a /metrics sample line without its value -> the value

    @classmethod
    def of(cls, server: ServerProcess, model: str) -> Counts:
        s = stats(server, model)
        label = f'model="{model}"'
        series = {}
        for line in httpx.get(f"{server.base}/metrics").text.splitlines():
            if not line.startswith("#") and label in line:
                key, value = line.rsplit(" ", 1)
                series[key] = float(value)
        return cls(
            s["inference_count"],
            s["execution_count"],
            s["inference_stats"]["queue"]["ns"],
            batch_sizes(server, model),
            series,
        )

    def __sub__(self, before: Counts) -> Counts:
        sizes = {b: n - before.batch_sizes.get(b, 0) for b, n in self.batch_sizes.items()}
        return Counts(
            self.inference_count - before.inference_count,
            self.execution_count - before.execution_count,
            self.queue_ns - before.queue_ns,
            {b: n for b, n in sizes.items() if n},
            {k: v - before.series.get(k, 0.0) for k, v in self.series.items()},
        )

    def metric(self, name: str, **labels: str) -> float:
        """The one series of ``name`` with these labels (besides the model's); 0 when there is none yet."""
        found = [
            v
            for k, v in self.series.items()
            if k.startswith(name + "{") and all(f'{a}="{b}"' in k for a, b in labels.items())
        ]
        assert len(found) <= 1, (name, labels, self.series)
        return found[0] if found else 0.0


def start_blocker(calls: Calls, server: ServerProcess, model: str, transport: str = "grpc", **kwargs: Any) -> None:
    """Send a request that keeps the instance busy for about BLOCK_S; return once it is executing.

    "Executing" is seen from the server process's CPU time: idle, the server uses next to none, so 0.15 s of
    CPU means the blocker's MatMuls are running (a sleep would race on a loaded machine)."""
    n = iterations_for(BLOCK_S)  # calibrated here, not on the thread: it takes a moment the first time
    process = psutil.Process(server.process.pid)
    base = sum(process.cpu_times()[:2])
    calls.submit("blocker", lambda: infer(server, model, transport, n, **kwargs))
    deadline = time.monotonic() + 30
    while sum(process.cpu_times()[:2]) - base < 0.15:
        assert time.monotonic() < deadline, "the blocker never started executing"
        assert "blocker" not in calls.outcomes, calls.outcomes
        time.sleep(0.01)


# -- batches form, up to the maximum -------------------------------------------------------------


def test_batches_form_up_to_max_batch_size(slow_server: ServerProcess):
    before = Counts.of(slow_server, "slow_batch")
    calls = Calls()
    start_blocker(calls, slow_server, "slow_batch")
    n = step()
    for i in range(10):
        calls.submit(f"r{i}", partial(infer, slow_server, "slow_batch", "grpc", n, value=float(i)))
    calls.wait()
    for i in range(10):
        assert_same(calls.outcomes[f"r{i}"], np.full((1, 4), float(i), np.float32))
    assert calls.order[0] == "blocker", calls.order
    # Ten requests queued behind the blocker: 4 + 4 + 2, never more than max_batch_size 4.
    change = Counts.of(slow_server, "slow_batch") - before
    assert change.batch_sizes == {1: 1, 4: 2, 2: 1}
    assert change.inference_count == 11 and change.execution_count == 4
    assert change.metric("appliance_inference_count_total", version="1") == 11
    assert change.metric("appliance_execution_count_total", version="1") == 4
    assert change.metric("appliance_batch_size_count", version="1") == 4
    assert change.metric("appliance_batch_size_bucket", version="1", le="2.0") == 2
    assert change.metric("appliance_request_success_total", version="1") == 11


def test_batched_outputs_equal_onnxruntime(slow_server: ServerProcess):
    """Each request of a combined batch gets its own rows of what ORT computes for the whole batch."""
    calls = Calls()
    start_blocker(calls, slow_server, "slow_batch", transport="http")
    values = [0.5, -2.0, 7.25]
    for i, v in enumerate(values):
        calls.submit(f"r{i}", partial(infer, slow_server, "slow_batch", "http", 2, value=v))
    calls.wait()
    x = np.array([[v] * 4 for v in values], np.float32)
    expected = ort_run(models.slow_model(), {"x": x, "n": np.full((3, 1), 2, np.int64)})["y"]
    for i in range(3):
        assert_same(calls.outcomes[f"r{i}"], expected[i : i + 1])


def test_preferred_batch_size(slow_server: ServerProcess):
    before = Counts.of(slow_server, "slow_preferred")
    calls = Calls()
    start_blocker(calls, slow_server, "slow_preferred")
    for i in range(5):
        calls.submit(f"r{i}", lambda: infer(slow_server, "slow_preferred", "grpc", 1))
    calls.wait()
    assert all(status_of(o) == "ok" for o in calls.outcomes.values())
    sizes = (Counts.of(slow_server, "slow_preferred") - before).batch_sizes
    assert sizes == {1: 2, 2: 2}, sizes  # the blocker, then 2 + 2 + 1 of the five queued


# -- queue delay ---------------------------------------------------------------------------------


def test_lone_request_waits_about_the_queue_delay(slow_server: ServerProcess):
    before = Counts.of(slow_server, "slow_delay_lone")
    start = time.monotonic()
    infer(slow_server, "slow_delay_lone", "grpc", 1)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.39, elapsed  # max_queue_delay_microseconds 400000: it waited for company
    assert elapsed < 0.4 + 3.0, elapsed  # ... and then ran alone instead of waiting forever
    change = Counts.of(slow_server, "slow_delay_lone") - before
    assert change.execution_count == 1 and change.queue_ns >= 390_000_000


def test_requests_within_the_delay_are_batched_together(slow_server: ServerProcess):
    before = Counts.of(slow_server, "slow_delay_group")
    calls = Calls()
    for i in range(3):
        calls.submit(f"r{i}", lambda: infer(slow_server, "slow_delay_group", "http", 1))
        time.sleep(0.05)  # well within the 400 ms delay
    calls.wait()
    assert all(status_of(o) == "ok" for o in calls.outcomes.values()), calls.outcomes
    assert (Counts.of(slow_server, "slow_delay_group") - before).batch_sizes == {3: 1}


# -- priorities ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_priorities_are_served_in_order(server_factory, slow_repo: Path, transport):
    server = server_factory(slow_repo)
    calls = Calls()
    start_blocker(calls, server, "slow_prio", transport=transport)
    n = step()
    plan = [("low0", 3), ("low1", 0), ("mid0", 2), ("high0", 1), ("low2", 3), ("mid1", 2), ("high1", 1)]
    for label, priority in plan:  # priority 0 takes default_priority_level 3
        calls.submit(label, partial(infer, server, "slow_prio", transport, n, priority=priority))
        time.sleep(0.06)
    calls.wait()
    assert all(status_of(o) == "ok" for o in calls.outcomes.values()), calls.outcomes
    # Level by level; within a level arrival order decides, which threads on a loaded machine do not fix.
    levels = [calls.order[:1], calls.order[1:3], calls.order[3:5], calls.order[5:]]
    assert [sorted(level) for level in levels] == [
        ["blocker"],
        ["high0", "high1"],
        ["mid0", "mid1"],
        ["low0", "low1", "low2"],
    ], calls.order


# -- queue timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport, expected", [("grpc", "StatusCode.DEADLINE_EXCEEDED"), ("http", "504")])
def test_reject_timeout_fires_while_the_instance_is_busy(slow_server: ServerProcess, transport, expected):
    calls = Calls()
    start_blocker(calls, slow_server, "slow_reject", transport=transport)
    sent = time.monotonic()
    calls.submit("late", lambda: infer(slow_server, "slow_reject", transport, 1))
    calls.wait()
    late = calls.outcomes["late"]
    assert status_of(late) == expected, late
    assert "timed out" in late.message()
    # It failed at its deadline (200 ms), while the blocker still held the only instance.
    assert calls.order == ["late", "blocker"]
    assert calls.finished_at["late"] - sent >= 0.19
    assert status_of(calls.outcomes["blocker"]) == "ok"


@pytest.mark.parametrize("transport, expected", [("grpc", "StatusCode.DEADLINE_EXCEEDED"), ("http", "504")])
def test_per_request_timeout_override(slow_server: ServerProcess, transport, expected):
    """tritonclient's ``timeout=`` (microseconds): honoured with allow_timeout_override, ignored without."""
    calls = Calls()
    start_blocker(calls, slow_server, "slow_override", transport=transport)
    calls.submit("short", lambda: infer(slow_server, "slow_override", transport, 1, timeout=150_000))
    calls.wait()
    assert status_of(calls.outcomes["short"]) == expected
    assert calls.order == ["short", "blocker"]

    calls = Calls()
    start_blocker(calls, slow_server, "slow_no_override", transport=transport)
    n = step()
    calls.submit("short", lambda: infer(slow_server, "slow_no_override", transport, n, timeout=150_000))
    calls.wait()
    assert status_of(calls.outcomes["short"]) == "ok"  # its 150 ms timeout was ignored: it waited ~1.3 s


def test_delay_timeout_is_served_after_the_others(slow_server: ServerProcess):
    calls = Calls()
    start_blocker(calls, slow_server, "slow_delay_action")
    n = step()
    calls.submit("delayed", lambda: infer(slow_server, "slow_delay_action", "grpc", n, timeout=100_000))
    time.sleep(0.05)
    calls.submit("other0", lambda: infer(slow_server, "slow_delay_action", "grpc", n))
    time.sleep(0.05)
    calls.submit("other1", lambda: infer(slow_server, "slow_delay_action", "http", n))
    calls.wait()
    assert all(status_of(o) == "ok" for o in calls.outcomes.values()), calls.outcomes
    assert calls.order[0] == "blocker" and calls.order[-1] == "delayed", (
        calls.order,
        calls.outcomes,
        calls.finished_at,
    )


def test_timeouts_and_rejections_are_counted(slow_server: ServerProcess):
    """A request that timed out in the queue shows in /metrics as a failure with reason "deadline_exceeded"."""
    before = Counts.of(slow_server, "slow_reject")
    calls = Calls()
    start_blocker(calls, slow_server, "slow_reject")
    calls.submit("late", lambda: infer(slow_server, "slow_reject", "grpc", 1))
    calls.wait()
    assert status_of(calls.outcomes["late"]) == "StatusCode.DEADLINE_EXCEEDED", calls.outcomes
    change = Counts.of(slow_server, "slow_reject") - before
    assert change.metric("appliance_request_failure_total", version="1", reason="deadline_exceeded") == 1


# -- queue size ----------------------------------------------------------------------------------


def test_max_queue_size_rejects(slow_server: ServerProcess):
    before = Counts.of(slow_server, "slow_qsize")
    calls = Calls()
    start_blocker(calls, slow_server, "slow_qsize")
    calls.submit("q0", lambda: infer(slow_server, "slow_qsize", "grpc", 1))
    calls.submit("q1", lambda: infer(slow_server, "slow_qsize", "http", 1))
    time.sleep(0.2)
    calls.submit("over_grpc", lambda: infer(slow_server, "slow_qsize", "grpc", 1))
    calls.submit("over_http", lambda: infer(slow_server, "slow_qsize", "http", 1))
    calls.wait()
    assert status_of(calls.outcomes["over_grpc"]) == "StatusCode.UNAVAILABLE"
    assert status_of(calls.outcomes["over_http"]) == "503"
    assert "max_queue_size" in calls.outcomes["over_http"].message()
    assert calls.order.index("over_grpc") < calls.order.index("blocker")
    assert calls.order.index("over_http") < calls.order.index("blocker")
    assert [status_of(calls.outcomes[k]) for k in ("blocker", "q0", "q1")] == ["ok"] * 3
    change = Counts.of(slow_server, "slow_qsize") - before
    assert change.metric("appliance_request_failure_total", version="1", reason="queue_full") == 2


# -- clients that go away ------------------------------------------------------------------------


def test_cancelled_clients_requests_never_run(slow_server: ServerProcess):
    """A gRPC client whose deadline passes and an HTTP client that hangs up, both while queued: their
    requests are dropped before reaching a batch (inference_count shows they never ran)."""
    before = Counts.of(slow_server, "slow_cancel")
    calls = Calls()
    start_blocker(calls, slow_server, "slow_cancel")
    calls.submit("grpc_gone", lambda: infer(slow_server, "slow_cancel", "grpc", 1, client_timeout=0.2))

    def http_gone() -> Any:
        body = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]},
                {"name": "n", "datatype": "INT64", "shape": [1, 1], "data": [1]},
            ]
        }
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{slow_server.base}/v2/models/slow_cancel/infer", json=body, timeout=0.2)
        return "hung up"

    calls.submit("http_gone", http_gone)
    calls.wait()
    assert status_of(calls.outcomes["grpc_gone"]) == "StatusCode.DEADLINE_EXCEEDED"
    assert calls.outcomes["http_gone"] == "hung up"
    assert status_of(calls.outcomes["blocker"]) == "ok"
    infer(slow_server, "slow_cancel", "http", 1)  # the queue is free, and a new request runs
    change = Counts.of(slow_server, "slow_cancel") - before
    assert change.inference_count == 2 and change.execution_count == 2, change
    assert change.metric("appliance_request_failure_total", version="1", reason="cancelled") == 2

"""The autoscaler under generated load traces, against a real service with the real daemon: a step, a ramp, a
burst and a sawtooth of concurrent clients. The instance count converges, never flaps (at most one change of
direction, never back), ignores a burst shorter than its up window, and scaling fails no request and changes no
answer.

Windows are compressed (a look every 0.2 s, up after 1 s of agreement, down after 2.5 s) so a trace takes
seconds; the policy is the one the device runs with its own windows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.autoscaler import start_daemon, stop_daemon, wait_for
from tests.support.models import write_slow

CONFIG = """\
service_url = "{url}"
interval_s = 0.2
[models.slow]
min_instances = 1
max_instances = 4
target_ongoing_requests = 1.0
scale_up_delay_s = 1.0
scale_down_delay_s = 2.5
"""
CLIENTS = 4


def step(t: float) -> int:
    return 1 if t < 2 else (CLIENTS if t < 9 else 1)


def ramp(t: float) -> int:
    return min(1 + int(t / 2.5), CLIENTS)


def burst(t: float) -> int:
    return CLIENTS if 3 <= t < 3.4 else 1


def sawtooth(t: float) -> int:
    return CLIENTS if (t % 3) < 1.6 else 1  # high 1.6 s (> the up window), low 1.4 s (< the down window)


TRACES: dict[str, tuple[Callable[[float], int], float]] = {
    "step": (step, 14.0),
    "ramp": (ramp, 11.0),
    "burst": (burst, 7.0),
    "sawtooth": (sawtooth, 12.0),
}


def _directions(counts: list[int]) -> list[int]:
    """The signs of the changes of a series, with repeats merged: [1, -1] is up then down."""
    signs = [1 if b > a else -1 for a, b in zip(counts, counts[1:]) if b != a]
    return [s for i, s in enumerate(signs) if i == 0 or s != signs[i - 1]]


@pytest.mark.parametrize("trace", sorted(TRACES))
def test_the_count_follows_the_trend_never_the_swings(tmp_path: Path, server_factory: Any, trace: str) -> None:
    shape, duration = TRACES[trace]
    repo = tmp_path / "repo"
    write_slow(repo, "slow", max_batch_size=1, dynamic_batching=None)
    server = server_factory(repo)
    process, log = start_daemon(tmp_path, CONFIG.format(url=server.base), None)
    failures: list[str] = []
    answered = [0] * CLIENTS
    start = [0.0]
    done = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=server.base, timeout=60) as http:
            i = 0
            while not done.is_set():
                if index >= shape(time.monotonic() - start[0]):
                    time.sleep(0.02)
                    continue
                x = [float(index), float(i), 0.5, -1.0]
                body = {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x},
                        {"name": "n", "datatype": "INT64", "shape": [1, 1], "data": [3]},
                    ]
                }
                response = http.post("/v2/models/slow/infer", json=body)
                if response.status_code != 200 or response.json()["outputs"][0]["data"] != x:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                answered[index] += 1
                i += 1

    counts: list[int] = []
    with httpx.Client(base_url=server.base, timeout=60) as admin:

        def instances() -> int:
            return int(admin.get("/v2/models/slow/config").json()["instance_group"][0].get("count", 1))

        try:
            wait_for(lambda: "autoscaling slow" in log.read_text(), 30, "the daemon did not start", log)
            time.sleep(0.5)  # its first look
            start[0] = time.monotonic()
            workers = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            for worker in workers:
                worker.start()
            while time.monotonic() - start[0] < duration:
                counts.append(instances())
                time.sleep(0.05)
            done.set()
            for worker in workers:
                worker.join(60)
        finally:
            done.set()
            assert stop_daemon(process) == 0, log.read_text()
    assert failures == [] and sum(answered) > 100, failures[:5]
    moves = _directions(counts)
    if trace == "burst":
        assert moves == [], counts  # 0.4 s of burst never outlasts the 1 s up window
    elif trace in ("ramp", "sawtooth"):
        # up with the load (the sawtooth's peaks); at most one step back once more instances shorten the requests
        # in flight (then a count that serves the peaks), never up again: no flapping; settled by the end
        assert moves in ([1], [1, -1]) and max(counts) >= 3 and len(set(counts[-20:])) == 1, counts
    else:
        assert moves == [1, -1] and max(counts) >= 3 and counts[-1] < max(counts), counts  # up once, down once

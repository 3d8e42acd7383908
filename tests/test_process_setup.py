"""What ``appliance serve`` sets up in its process (``appliance/process.py``): its threads run under the Linux
scheduling policy of ``cpu_scheduling_policy`` (SCHED_BATCH by default, so that grpc's completion-queue thread
does not preempt the event loop), and large buffers freed by one request are reused by the next instead of
being faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.appliance import running_server

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies and glibc")


def _policies(pid: int) -> dict[int, int]:
    """Each thread's scheduling policy."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies[int(tid)] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return policies


def _infer_grpc(port: int) -> None:
    """One gRPC request, so that grpc's threads and the model's instance thread have all started."""
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = grpcclient.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 64), np.float32))
        assert client.infer("mlp", [tensor]).as_numpy("logits").shape == (1, 10)


@pytest.mark.parametrize(
    ("args", "expected"),
    [((), os.SCHED_BATCH), (("--cpu-scheduling-policy", "other"), os.SCHED_OTHER)],
    ids=["default-batch", "other"],
)
def test_every_thread_runs_under_the_policy(tmp_path: Path, demo_repo: Path, args: tuple[str, ...], expected: int):
    with running_server(demo_repo, tmp_path / "server.log", *args) as server:
        _infer_grpc(server.grpc_port)
        policies = _policies(server.process.pid)
        assert len(policies) > 3  # the loop, grpc's threads, instance threads
        assert set(policies.values()) == {expected}, policies


def test_policy_from_the_config_file(tmp_path: Path, demo_repo: Path):
    config = tmp_path / "appliance.toml"
    config.write_text('cpu_scheduling_policy = "other"\n')
    with running_server(demo_repo, tmp_path / "server.log", "--config", str(config)) as server:
        assert set(_policies(server.process.pid).values()) == {os.SCHED_OTHER}


def test_unknown_policy_is_refused(tmp_path: Path, demo_repo: Path):
    config = tmp_path / "appliance.toml"
    config.write_text('cpu_scheduling_policy = "fifo"\n')
    with pytest.raises(AssertionError, match="cpu_scheduling_policy"):
        with running_server(demo_repo, tmp_path / "server.log", "--config", str(config)):
            pass


# A request's life in buffers: four 1 MiB buffers (message, bytes, body, batch) allocated, written, freed
# together, 50 times; prints the page faults of the loop.
_REQUESTS = """
import resource, sys
from appliance.process import set_allocator_thresholds
if sys.argv[1] == "set":
    assert set_allocator_thresholds()
def request():
    buffers = [bytearray(1 << 20) for _ in range(4)]
    del buffers
request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", _REQUESTS, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_large_buffers_are_reused_not_faulted_in_again():
    pages = 50 * 4 * (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert _faults("default") > pages // 2  # glibc's own thresholds: the heap is trimmed and faulted in again
    assert _faults("set") < 100

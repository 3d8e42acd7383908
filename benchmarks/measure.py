"""Measurements: one load point in a client subprocess (with client/server/other CPU over the exact
window), the in-process ONNX Runtime reference, and the RSS soak.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.servers import RunningServer, tree_cpu_seconds, tree_rss_bytes, tree_thread_cpu_seconds

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


@dataclass
class Point:
    """One measured point: a target, model, transport, queue delay, concurrency and samples a request."""

    target: str
    model: str
    transport: str
    max_queue_delay_us: int
    concurrency: int
    batch_size: int = 1  # samples a request
    client_mode: str = ""
    rps: float = 0.0  # requests a second
    samples_per_s: float = 0.0  # rps x batch_size
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0
    client_cpu_pct: float = 0.0  # % of one core
    server_cpu_pct: float = 0.0  # % of one core, server and all its child processes
    other_cpu_pct: float = 0.0  # % of one core used by everything else on the machine (noise)
    # % of one core used by the server's busiest thread (the appliance's: its event loop): where it nears 100, one
    # process is the limit however many cores there are
    top_thread_cpu_pct: float = 0.0
    # Samples a batch the server executed in the window (inference count / execution count of its statistics
    # extension); None where the server has no statistics (MLServer, the grpc-floor) or ran no batch
    samples_per_execution: float | None = None
    loadavg_before: float = 0.0


@dataclass
class SoakResult:
    model: str
    transport: str
    concurrency: int
    duration_s: float
    interval_s: float
    rps: float = 0.0
    p99_ms: float | None = None
    errors: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS bytes)

    def drift(self) -> dict[str, float]:
        """First/last/min/max RSS (MiB), last-first drift, and the slope over the second half (MiB/min)."""
        if not self.samples:
            return {}
        t = np.array([s[0] for s in self.samples])
        rss = np.array([s[1] for s in self.samples], dtype=np.float64) / 2**20
        half = t >= t[-1] / 2
        slope = float(np.polyfit(t[half], rss[half], 1)[0] * 60) if half.sum() >= 3 else float("nan")
        return {
            "first_mib": float(rss[0]),
            "last_mib": float(rss[-1]),
            "min_mib": float(rss.min()),
            "max_mib": float(rss.max()),
            "drift_mib": float(rss[-1] - rss[0]),
            "drift_pct": float((rss[-1] - rss[0]) / rss[0] * 100),
            "second_half_slope_mib_per_min": slope,
        }


class _Client:
    """A loadgen subprocess whose stdout lines arrive on a queue (so the caller can sample meanwhile)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(LOADGEN), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, word: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise TimeoutError(f"client: no {word} in {timeout_s:.0f} s\n{self.error_tail()}") from None
            if line is None:
                raise RuntimeError(f"client exited before {word}:\n{self.error_tail()}")
            if line.startswith(word):
                return line[len(word) :].strip()

    def error_tail(self) -> str:
        self.stderr.seek(0)
        return "\n".join(self.stderr.read().decode(errors="replace").splitlines()[-20:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stderr.close()


def _cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (everything but idle and iowait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _server_threads(server: RunningServer) -> dict[tuple[int, int], float]:
    return tree_thread_cpu_seconds(server.process.pid) if server.process is not None else {}


def _server_cpu_seconds(server: RunningServer) -> float:
    """CPU seconds of the server's process tree; 0 for a remote server (its CPU is not seen from here)."""
    return tree_cpu_seconds(server.process.pid) if server.process is not None else 0.0


def _execution_counts(server: RunningServer, model: str) -> tuple[int, int] | None:
    """The model's inference and execution counts, all versions, from the statistics extension
    (``GET /v2/models/{model}/stats``, the same on Triton and the appliance); None where the server has none."""
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats", timeout=5) as response:
            stats = json.load(response)["model_stats"]
        return sum(int(s["inference_count"]) for s in stats), sum(int(s["execution_count"]) for s in stats)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_point(
    server: RunningServer,
    model: str,
    transport: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_queue_delay_us: int,
    client_mode: str = "",
    batch_size: int = 1,
) -> Point:
    """Run one closed-loop point from a fresh client process; CPU is sampled at the window's edges."""
    spec = {
        "transport": transport,
        "url": server.url(transport),
        "model": model,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "mode": client_mode,
        "batch_size": batch_size,
    }
    point = Point(
        server.target, model, transport, max_queue_delay_us, concurrency, batch_size, loadavg_before=os.getloadavg()[0]
    )
    client = _Client(spec)
    try:
        client.expect("START", timeout_s=warmup_s + 60)
        wall0, busy0 = time.perf_counter(), _cpu_busy_seconds()
        server0, client0 = _server_cpu_seconds(server), tree_cpu_seconds(client.process.pid)
        threads0 = _server_threads(server)
        counts0 = _execution_counts(server, model)
        client.expect("STOP", timeout_s=duration_s + 60)
        wall1, busy1 = time.perf_counter(), _cpu_busy_seconds()
        server1, client1 = _server_cpu_seconds(server), tree_cpu_seconds(client.process.pid)
        threads1 = _server_threads(server)
        counts1 = _execution_counts(server, model)
        result = json.loads(client.expect("RESULT", timeout_s=120))
    finally:
        client.close()
    wall = max(wall1 - wall0, 1e-9)
    point.client_cpu_pct = (client1 - client0) / wall * 100
    point.server_cpu_pct = (server1 - server0) / wall * 100
    busiest = max((t - threads0.get(key, 0.0) for key, t in threads1.items()), default=0.0)
    point.top_thread_cpu_pct = busiest / wall * 100
    point.other_cpu_pct = max((busy1 - busy0) / wall * 100 - point.client_cpu_pct - point.server_cpu_pct, 0.0)
    if counts0 is not None and counts1 is not None and counts1[1] > counts0[1]:
        point.samples_per_execution = (counts1[0] - counts0[0]) / (counts1[1] - counts0[1])
    point.client_mode = result["spec"]["mode"]
    point.samples_per_s = result["rps"] * batch_size
    for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "requests", "errors", "first_error", "elapsed_s"):
        setattr(point, key, result[key])
    return point


def run_soak(
    server: RunningServer,
    model: str,
    duration_s: float,
    warmup_s: float,
    interval_s: float = 10.0,
    concurrency: int = 64,
    transport: str = "grpc",
    echo: Callable[[str], None] = print,
) -> SoakResult:
    """Closed-loop load for ``duration_s``; the server tree's RSS is sampled every ``interval_s``."""
    if server.process is None:
        raise ValueError("the soak reads the server's RSS: it needs a server started here, not --url")
    process = server.process
    soak = SoakResult(model, transport, concurrency, duration_s, interval_s)
    spec = {
        "transport": transport,
        "url": server.url(transport),
        "model": model,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
    }
    client = _Client(spec)
    try:
        client.expect("START", timeout_s=warmup_s + 60)
        start = time.monotonic()
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                rss = tree_rss_bytes(process.pid)
                soak.samples.append((now - start, rss))
                echo(f"  soak t={now - start:7.1f} s  RSS {rss / 2**20:8.1f} MiB")
                next_sample += interval_s
            try:
                line = client.lines.get(timeout=max(next_sample - time.monotonic(), 0.001))
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"client exited during the soak:\n{client.error_tail()}")
            if line.startswith("STOP"):
                break
        rss = tree_rss_bytes(process.pid)
        soak.samples.append((time.monotonic() - start, rss))
        echo(f"  soak t={time.monotonic() - start:7.1f} s  RSS {rss / 2**20:8.1f} MiB (end)")
        result = json.loads(client.expect("RESULT", timeout_s=120))
    finally:
        client.close()
    soak.rps, soak.p99_ms, soak.errors = result["rps"], result["p99_ms"], result["errors"]
    return soak


def onnxruntime_reference(
    model_path: Path, batch: int = 32, duration_s: float = 10.0, threads: int | None = None
) -> dict[str, Any]:
    """In-process ONNX Runtime: samples/s at ``batch`` with ``threads`` intra-op threads (default: cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for item in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else batch for d in item.shape]
        feed[item.name] = rng.random(shape).astype(np.float32)
    for _ in range(5):
        session.run(None, feed)
    runs = 0
    cpu0, start = time.process_time(), time.perf_counter()
    end = start + duration_s
    while (now := time.perf_counter()) < end or runs == 0:
        session.run(None, feed)
        runs += 1
    elapsed = now - start
    cpu = time.process_time() - cpu0
    del session
    return {
        "batch": batch,
        "threads": options.intra_op_num_threads,
        "runs": runs,
        "elapsed_s": elapsed,
        "samples_per_s": runs * batch / elapsed,
        "ms_per_batch": elapsed / runs * 1e3,
        "cpu_pct": cpu / elapsed * 100,
    }


def as_dict(obj: Point | SoakResult) -> dict[str, Any]:
    data = asdict(obj)
    if isinstance(obj, SoakResult):
        data["drift"] = obj.drift()
    return data

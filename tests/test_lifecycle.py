"""Lifecycle: SIGTERM under load drains every accepted request (zero lost), readiness goes false, new requests
are refused cleanly, and the process exits 0 within the exit timeout."""

from __future__ import annotations

import errno
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from appliance.demo import write_demo_repository
from tests.support import models
from tests.support.appliance import ServerProcess
from tests.support.onnx_reference import iterations_for


@pytest.fixture(scope="module")
def drain_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drain") / "repo"
    write_demo_repository(root)
    models.write_slow(root, "slow", max_batch_size=8, dynamic_batching="max_queue_delay_microseconds: 2000")
    models.write_slow(root, "slow_block", max_batch_size=1, dynamic_batching="")
    return root


def slow_inputs(lib: Any, n: int, value: float) -> list[Any]:
    inputs = [lib.InferInput("x", [1, 4], "FP32"), lib.InferInput("n", [1, 1], "INT64")]
    inputs[0].set_data_from_numpy(np.full((1, 4), value, np.float32))
    inputs[1].set_data_from_numpy(np.full((1, 1), n, np.int64))
    return inputs


@dataclass
class Outcome:
    transport: str
    sent: float
    done: float
    kind: str  # "ok", "refused" (503 / UNAVAILABLE / connection refused) or "lost: <what>"


def classify(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        if exc.status() in ("503", "StatusCode.UNAVAILABLE"):
            return "refused"
        return f"lost: {exc.status()} {exc.message()}"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "refused"
    return f"lost: {type(exc).__name__}: {exc}"


def worker(
    server: ServerProcess, transport: str, n: int, stop: threading.Event, out: list[Outcome], lock: threading.Lock
) -> None:
    value = 0.0
    while not stop.is_set():
        value += 1
        sent = time.monotonic()
        try:
            if transport == "http":
                client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
                result = client.infer("slow", slow_inputs(httpclient, n, value))
            else:
                client = grpcclient.InferenceServerClient(server.grpc_url)
                result = client.infer("slow", slow_inputs(grpcclient, n, value), client_timeout=60)
            kind = (
                "ok"
                if np.array_equal(result.as_numpy("y"), np.full((1, 4), value, np.float32))
                else "lost: wrong answer"
            )
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            kind = classify(exc)
        finally:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        with lock:
            out.append(Outcome(transport, sent, time.monotonic(), kind))
        if kind != "ok":
            return


@pytest.mark.slow
def test_sigterm_under_load_loses_nothing(server_factory, drain_repo: Path):
    server = server_factory(drain_repo, "--exit-timeout-secs", "30")
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    n = iterations_for(0.01)
    threads = [
        threading.Thread(target=worker, args=(server, transport, n, stop, outcomes, lock), daemon=True)
        for transport in ("grpc", "http")
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    # A long request that is certainly accepted before the signal and still running after it.
    block: dict[str, Any] = {}

    def blocker() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            block["result"] = client.infer(
                "slow_block", slow_inputs(grpcclient, iterations_for(2.5), 42.0), client_timeout=60
            )
        except Exception as exc:  # noqa: BLE001
            block["error"] = exc

    blocker_thread = threading.Thread(target=blocker, daemon=True)
    blocker_thread.start()
    time.sleep(1.0)
    with lock:
        before = sum(o.kind == "ok" for o in outcomes)
    assert before > 0, "no load reached the server"

    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # While the blocker keeps it draining: readiness is false on both transports, new inference is refused.
    ready_http = httpx.get(f"{server.base}/v2/health/ready", timeout=10).status_code
    ready_top = httpx.get(f"{server.base}/ready", timeout=10).status_code
    ready_grpc = grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()
    with pytest.raises(InferenceServerException) as refused_http:
        httpclient.InferenceServerClient(server.http_url).infer("mlp", mlp_inputs(httpclient))
    with pytest.raises(InferenceServerException) as refused_grpc:
        grpcclient.InferenceServerClient(server.grpc_url).infer("mlp", mlp_inputs(grpcclient))
    live = httpx.get(f"{server.base}/v2/health/live", timeout=10).status_code

    rc = server.process.wait(40)
    exited = time.monotonic()
    stop.set()
    for thread in [*threads, blocker_thread]:
        thread.join(60)
        assert not thread.is_alive(), "a client hung"

    assert (ready_http, ready_top, ready_grpc, live) == (400, 503, False, 200)
    assert refused_http.value.status() == "503"
    assert refused_grpc.value.status() == "StatusCode.UNAVAILABLE"
    assert "error" not in block, block
    assert np.array_equal(block["result"].as_numpy("y"), np.full((1, 4), 42.0, np.float32))
    assert rc == 0, server.log()[-3000:]
    assert exited - signalled < 30
    lost = [o for o in outcomes if o.kind.startswith("lost")]
    assert not lost, lost[:5]
    # Requests sent well before the signal were accepted, so they must all have succeeded.
    early_failures = [o for o in outcomes if o.sent < signalled - 0.2 and o.kind != "ok"]
    assert not early_failures, early_failures[:5]
    assert sum(o.kind == "ok" for o in outcomes) > before
    log = server.log()
    assert "Traceback" not in log and "stopped" in log


def mlp_inputs(lib: Any) -> list[Any]:
    inp = lib.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    return [inp]


def test_sigterm_when_idle_exits_zero_and_closes_ports(server_factory, demo_repo: Path):
    server = server_factory(demo_repo, "--exit-timeout-secs", "10")
    assert server.http().is_server_ready()
    assert server.stop(timeout=15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base}/v2/health/live", timeout=2)
    with grpc.insecure_channel(server.grpc_url) as channel:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=1)


def test_exit_timeout_bounds_the_drain(server_factory, drain_repo: Path):
    """A request longer than --exit-timeout-secs does not hold the process: it exits once the timeout is up."""
    server = server_factory(drain_repo, "--exit-timeout-secs", "1")
    errors: list[Any] = []

    def long_request() -> None:
        try:
            grpcclient.InferenceServerClient(server.grpc_url).infer(
                "slow_block", slow_inputs(grpcclient, iterations_for(6.0), 1.0), client_timeout=60
            )
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    time.sleep(0.3)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)
    assert time.monotonic() - signalled < 5.0, "exit timeout of 1 s not honoured"
    assert "drain" in server.log()

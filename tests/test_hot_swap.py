"""Hot-swap under load (issue 10, item 4): a model reloaded 20 times while 16 clients (REST and gRPC, the real
tritonclient) keep sending requests, in both ways a reload happens: through the repository API (EXPLICIT mode)
and by a change on disk that the server finds by itself (POLL mode). No request fails, readiness never blinks,
and every request sent after a reload is answered by the new model: after the load call returned (EXPLICIT), or
after the new model's first answer (POLL, where no call tells when the swap happened)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support import models

CLIENTS = 16
SWAPS = 20
X = np.array([[1.0, 2.0]], np.float32)
POLL_SECS = "0.1"
SWAP_DEADLINE_S = 60


def write_atomically(path: Path, data: bytes) -> None:
    """As a deployment tool should: the new file appears whole or not at all."""
    part = path.with_suffix(".part")
    part.write_bytes(data)
    os.replace(part, path)


def _wait_for_answer(client: httpclient.InferenceServerClient, adds: float) -> None:
    """Until the model answers with the new value (POLL mode: the server reloads when it sees the change)."""
    tensor = httpclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(X)
    deadline = time.monotonic() + SWAP_DEADLINE_S
    while time.monotonic() < deadline:
        if float(client.infer("swap", [tensor]).as_numpy("y")[0, 0] - X[0, 0]) == adds:
            return
        time.sleep(0.02)
    raise AssertionError(f"the model did not change to +{adds} within {SWAP_DEADLINE_S} s of the change on disk")


class _Traffic:
    """``clients`` threads (gRPC and REST alternately, the real tritonclient) sending to 'swap' back to back, and
    one thread asking whether the model and the server are ready, until :meth:`stop`."""

    def __init__(self, server: Any, clients: int = CLIENTS) -> None:
        self.server = server
        self.answers: list[tuple[float, float, float]] = []  # (sent, answered, what the model added)
        self.failures: list[str] = []
        self.not_ready: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        self._threads.append(threading.Thread(target=self._watch_readiness))
        for thread in self._threads:
            thread.start()

    def _client(self, index: int) -> None:
        grpc = index % 2 == 0
        module = grpcclient if grpc else httpclient
        connection = module.InferenceServerClient(self.server.grpc_url if grpc else self.server.http_url)
        tensor = module.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(X)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    added = float(connection.infer("swap", [tensor]).as_numpy("y")[0, 0] - X[0, 0])
                except Exception as exc:  # every failure is reported by the assertion below
                    with self._lock:
                        self.failures.append(f"{'gRPC' if grpc else 'REST'}: {exc}")
                    continue
                with self._lock:
                    self.answers.append((sent, time.monotonic(), added))
        finally:
            connection.close()  # in this thread: tritonclient.http's gevent pool cannot close from another

    def _watch_readiness(self) -> None:
        probe = httpclient.InferenceServerClient(self.server.http_url)
        try:
            while not self._stop.is_set():
                if not (probe.is_model_ready("swap") and probe.is_server_ready()):
                    self.not_ready.append(time.monotonic())
        finally:
            probe.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_twenty_reloads_under_load_from_16_clients(server_factory, tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_versioned(repo, "swap", "{ latest: { num_versions: 1 } }", versions=(1,))  # adds 1
    if mode == "explicit":
        server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "swap")
    else:
        server = server_factory(repo, "--model-control-mode", "poll", "--repository-poll-secs", POLL_SECS)
    traffic = _Traffic(server)
    swapped: list[tuple[float, float]] = []  # (when the reload was seen done, what the new model adds)
    admin = httpclient.InferenceServerClient(server.http_url)
    try:
        time.sleep(0.2)
        for value in range(2, SWAPS + 2):
            write_atomically(repo / "swap" / "1" / "model.onnx", models.add_model(float(value)))
            if mode == "explicit":
                admin.load_model("swap")
            else:
                _wait_for_answer(admin, float(value))
            swapped.append((time.monotonic(), float(value)))
            time.sleep(0.05)
    finally:
        traffic.stop()
    assert traffic.failures == []
    assert traffic.not_ready == []  # readiness never blinked
    assert len(traffic.answers) > 10 * SWAPS  # the load ran through every swap
    for done, adds in swapped:
        later = [added for sent, _, added in traffic.answers if sent > done]
        assert later and min(later) >= adds, f"a request sent after the swap to +{adds} got +{min(later)}"
    assert admin.is_model_ready("swap")


def _slow_loading(repo: Path, adds: float) -> None:
    """'swap' as a model whose load takes about a second: 600 warm-up runs of 1-3 ms each (2-core machines)."""
    (repo / "swap" / "1").mkdir(parents=True, exist_ok=True)
    write_atomically(repo / "swap" / "1" / "model.onnx", models.slow_add_model(adds))
    (repo / "swap" / "config.pbtxt").write_text(
        """
        name: "swap"
        backend: "onnxruntime"
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
        model_warmup [ {
          name: "slow" batch_size: 1 count: 600
          inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } }
        } ]
        """
    )


def test_a_model_that_takes_a_second_to_load_swaps_beside_the_old_one(server_factory, tmp_path: Path) -> None:
    """The new version loads and warms up while the old one keeps answering; then the switch is at once, and the
    old one finishes what it has before it goes. Nothing fails and readiness never blinks."""
    repo = tmp_path / "repo"
    _slow_loading(repo, 1.0)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "swap")
    traffic = _Traffic(server, clients=8)
    admin = httpclient.InferenceServerClient(server.http_url)
    loads: list[tuple[float, float, float]] = []  # (load called, load returned, what the new model adds)
    try:
        time.sleep(0.2)
        for value in (2.0, 3.0, 4.0):
            _slow_loading(repo, value)
            called = time.monotonic()
            admin.load_model("swap")
            loads.append((called, time.monotonic(), value))
            time.sleep(0.1)
    finally:
        traffic.stop()
    assert traffic.failures == []
    assert traffic.not_ready == []
    for called, returned, adds in loads:
        assert returned - called > 0.3, "the load was not slow: this test proves nothing"
        during = [added for sent, answered, added in traffic.answers if sent > called and answered < returned]
        # The old version answered while the new one loaded; the new one only once it had (the switch comes
        # before the load call returns: it waits for the old one to finish what it had)
        assert during.count(adds - 1) > 20 and set(during) <= {adds - 1, adds}
        later = [added for sent, _, added in traffic.answers if sent > returned]
        assert later and min(later) >= adds

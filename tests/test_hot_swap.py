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


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_twenty_reloads_under_load_from_16_clients(server_factory, tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_versioned(repo, "swap", "{ latest: { num_versions: 1 } }", versions=(1,))  # adds 1
    if mode == "explicit":
        server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "swap")
    else:
        server = server_factory(repo, "--model-control-mode", "poll", "--repository-poll-secs", POLL_SECS)
    stop = threading.Event()
    answers: list[tuple[float, float]] = []  # (when the request was sent, what it added)
    failures: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        grpc = index % 2 == 0
        module = grpcclient if grpc else httpclient
        connection = module.InferenceServerClient(server.grpc_url if grpc else server.http_url)
        tensor = module.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(X)
        try:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    added = float(connection.infer("swap", [tensor]).as_numpy("y")[0, 0] - X[0, 0])
                except Exception as exc:  # every failure is reported by the assertion below
                    with lock:
                        failures.append(f"{'gRPC' if grpc else 'REST'}: {exc}")
                    continue
                with lock:
                    answers.append((sent, added))
        finally:
            connection.close()  # in this thread: tritonclient.http's gevent pool cannot close from another

    not_ready: list[float] = []

    def watch_readiness() -> None:
        probe = httpclient.InferenceServerClient(server.http_url)
        try:
            while not stop.is_set():
                if not (probe.is_model_ready("swap") and probe.is_server_ready()):
                    not_ready.append(time.monotonic())
        finally:
            probe.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=watch_readiness))
    for thread in threads:
        thread.start()
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
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert not_ready == []  # readiness never blinked
    assert len(answers) > 10 * SWAPS  # the load ran through every swap
    for done, adds in swapped:
        later = [added for sent, added in answers if sent > done]
        assert later and min(later) >= adds, f"a request sent after the swap to +{adds} got +{min(later)}"
    assert admin.is_model_ready("swap")

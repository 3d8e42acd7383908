"""Streaming inference over a WebSocket (``/v2/models/{model}/infer/ws``) on a real server, with the real
``websockets`` client: pipelined requests answered by id, bad messages answered with errors on a socket that goes
on, unknown models, routes, the message size limit, auth at the handshake and per message, a client that never
reads (held back by TCP while the server's accepted work stays bounded) and one that goes away mid-stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from appliance.demo import write_demo_repository
from tests.support import models
from tests.support.appliance import ServerProcess, running_server

MAX_IN_FLIGHT = 4
MAX_REQUEST_BYTES = 1024 * 1024
BYTES_MODEL = "identity_bytes_nobatch"
LOG_PROBLEMS = ("Traceback", "Task exception was never retrieved", "ERROR")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws") / "repo"
    write_demo_repository(root)
    models.write_identity(root, "BYTES", batched=False)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("ws-logs") / "server.log"
    flags = ("--websocket-max-in-flight", str(MAX_IN_FLIGHT), "--max-request-bytes", str(MAX_REQUEST_BYTES))
    with running_server(repo, log, *flags) as server:
        yield server


def url(server: ServerProcess, model: str = "mlp", version: str = "") -> str:
    versioned = f"/versions/{version}" if version else ""
    return f"ws://{server.http_url}/v2/models/{model}{versioned}/infer/ws"


def mlp_body(request_id: str | None, seed: int) -> dict[str, Any]:
    data = np.random.default_rng(seed).standard_normal(64).astype(np.float32).tolist()
    body: dict[str, Any] = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": data}]}
    if request_id is not None:
        body["id"] = request_id
    return body


def bytes_body(request_id: str, size: int) -> str:
    text = (request_id + ":").ljust(size, "x")
    return json.dumps(
        {"id": request_id, "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    )


def rest_infer(server: ServerProcess, model: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base}/v2/models/{model}/infer", json=body, timeout=30)


def successes(server: ServerProcess, model: str) -> int:
    stats = httpx.get(f"{server.base}/v2/models/{model}/stats", timeout=30).json()
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats["model_stats"])


def receive(ws: ClientConnection) -> dict[str, Any]:
    doc = json.loads(ws.recv(timeout=60))
    assert isinstance(doc, dict)
    return doc


def settled(read: Callable[[], int], at_least: int) -> int:
    """The value once it is at least ``at_least`` and has not changed over ten reads 0.2 s apart."""
    deadline = time.monotonic() + 60
    last, same = read(), 0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
        same = same + 1 if value == last and value >= at_least else 0
        last = value
        if same >= 10:
            return value
    raise AssertionError(f"never settled at {at_least} or more: last read {last}")


def assert_clean_log(server: ServerProcess) -> None:
    log = server.log()
    for problem in LOG_PROBLEMS:
        assert problem not in log, log[-3000:]


# -- the protocol ----------------------------------------------------------------------------------


def test_pipelined_requests_come_back_by_id_with_the_outputs_rest_gives(server: ServerProcess) -> None:
    count = 60
    before = successes(server, "mlp")
    expected = {}
    for i in range(count):
        answer = rest_infer(server, "mlp", mlp_body(f"r{i}", i))
        assert answer.status_code == 200, answer.text
        expected[f"r{i}"] = answer.json()
    with connect(url(server)) as ws:
        for i in range(count):
            ws.send(json.dumps(mlp_body(f"r{i}", i)))
        got = [receive(ws) for _ in range(count)]
    assert sorted(doc["id"] for doc in got) == sorted(expected)
    for doc in got:
        assert doc == expected[doc["id"]]  # the REST response body, byte for byte as JSON
    # They count as inference requests, as REST's do
    assert successes(server, "mlp") - before == 2 * count
    with connect(url(server, version="1")) as ws:
        ws.send(json.dumps(mlp_body("v1", 7)))
        doc = receive(ws)
    assert doc["id"] == "v1" and doc["model_version"] == "1" and doc["outputs"] == expected["r7"]["outputs"]


def test_bad_messages_get_errors_naming_the_fault_and_the_socket_goes_on(server: ServerProcess) -> None:
    bad_tensor = mlp_body("shape", 1)
    bad_tensor["inputs"][0]["shape"] = [1, 63]
    rest_error = rest_infer(server, "mlp", bad_tensor)
    assert rest_error.status_code == 400
    no_datatype = {"id": "nodt", "inputs": [{"name": "input", "shape": [1, 64], "data": [0.0] * 64}]}
    binary_out = {**mlp_body("bin", 2), "parameters": {"binary_data_output": True}}
    with connect(url(server)) as ws:
        ws.send("not json {")
        assert receive(ws) == {"id": None, "error": receive_error_text(server, b"not json {"), "status": 400}
        ws.send(json.dumps(mlp_body(None, 1)))
        doc = receive(ws)
        assert doc["id"] is None and doc["status"] == 400 and "missing 'id'" in doc["error"]
        assert "out of order" in doc["error"] or "as they complete" in doc["error"]
        ws.send(json.dumps(bad_tensor))
        assert receive(ws) == {"id": "shape", "error": rest_error.json()["error"], "status": 400}
        ws.send(json.dumps(no_datatype))
        assert receive(ws) == {"id": "nodt", "error": "input 'input': missing 'datatype'", "status": 400}
        ws.send(json.dumps(binary_out))
        doc = receive(ws)
        assert doc["id"] == "bin" and doc["status"] == 400 and "binary_data" in doc["error"]
        ws.send(b"\x00\x01binary")
        doc = receive(ws)
        assert doc["id"] is None and doc["status"] == 400 and "binary frames" in doc["error"]
        ws.send(json.dumps(mlp_body("after", 3)))
        doc = receive(ws)
        assert doc["id"] == "after" and doc["outputs"][0]["name"] == "logits"


def receive_error_text(server: ServerProcess, body: bytes) -> str:
    """REST's error text for the same body."""
    answer = httpx.post(f"{server.base}/v2/models/mlp/infer", content=body, timeout=30)
    assert answer.status_code == 400
    text = answer.json()["error"]
    assert isinstance(text, str)
    return text


def test_unknown_models_and_versions_are_answered_per_message_with_tritons_text(server: ServerProcess) -> None:
    with connect(url(server, "nosuch")) as ws:
        for i in range(2):  # the socket stays open: a model loaded meanwhile would be served
            ws.send(json.dumps(mlp_body(f"u{i}", i)))
            assert receive(ws) == {
                "id": f"u{i}",
                "error": "Request for unknown model: 'nosuch' is not found",
                "status": 404,
            }
    with connect(url(server, "mlp", "9")) as ws:
        ws.send(json.dumps(mlp_body("v9", 1)))
        assert receive(ws) == {
            "id": "v9",
            "error": "Request for unknown model: 'mlp' version 9 is not found",
            "status": 404,
        }


def test_a_route_name_works_like_a_model(server: ServerProcess) -> None:
    declared = httpx.put(
        f"{server.base}/v2/routes/ws-route", json={"arms": [{"model": "mlp", "weight": 1}]}, timeout=30
    )
    assert declared.status_code == 200, declared.text
    expected = rest_infer(server, "mlp", mlp_body("x", 5)).json()["outputs"]
    with connect(url(server, "ws-route")) as ws:
        ws.send(json.dumps(mlp_body("routed", 5)))
        doc = receive(ws)
    assert doc["id"] == "routed" and doc["outputs"] == expected


def test_a_message_over_max_request_bytes_closes_the_socket_as_too_big(server: ServerProcess) -> None:
    with connect(url(server, BYTES_MODEL), max_size=None, compression=None) as ws:
        ws.send(bytes_body("fits", MAX_REQUEST_BYTES // 2))
        assert receive(ws)["id"] == "fits"
    # The server judges a frame by the length in its header and closes at once: a client still writing the
    # payload may then be reset before it reads the close frame (a race of TCP, seen in a fresh root). So the
    # oversized frame is announced by its header alone, on a socket of our own, and the answer read.
    sock = socket.create_connection((server.host, server.http_port), timeout=30)
    try:
        path = url(server, BYTES_MODEL).split(server.http_url, 1)[1]
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {server.http_url}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
        rest = answer.split(b"\r\n\r\n", 1)[1]
        # FIN + text frame, masked, 64-bit length: one byte over the limit; no payload follows.
        sock.sendall(bytes([0x81, 0x80 | 127]) + (MAX_REQUEST_BYTES + 1).to_bytes(8, "big") + os.urandom(4))
        while len(rest) < 4:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the socket without a close frame"
            rest += chunk
    finally:
        sock.close()
    assert rest[0] == 0x88, rest[:8]  # a close frame
    assert int.from_bytes(rest[2:4], "big") == 1009  # message too big


# -- flow control ----------------------------------------------------------------------------------


def _small_receive_buffer(server: ServerProcess, size: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.connect((server.host, server.http_port))
    return sock


def _tcp_send_buffer_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def test_a_client_that_never_reads_is_held_back_and_others_are_served(server: ServerProcess) -> None:
    """The server runs at most MAX_IN_FLIGHT requests of a socket beyond what the TCP buffers between it and the
    client hold of their answers; it then stops reading, and the rest of the requests wait in the client's and the
    server's kernel buffers (or in the client's send call), not in the server's memory. Reading resumes it.

    The asyncio client: the sync client's reader thread blocks writing a pong into a full socket, and a client
    that stops reading while the server waits for it to read is stuck for good."""
    size, count, rcvbuf = 256 * 1024, 120, 64 * 1024
    before = successes(server, BYTES_MODEL)
    # Answers the buffers can hold: the server's kernel send buffer (at most tcp_wmem's max), the client's receive
    # buffer (the kernel doubles SO_RCVBUF), the server transport's high-water mark and the client's read chunk
    # (64 KiB each), plus one message each in the client's queue, its parser and the server's write.
    buffered = _tcp_send_buffer_max() + 2 * rcvbuf + 2 * 64 * 1024
    bound = MAX_IN_FLIGHT + math.ceil(buffered / size) + 3
    assert bound < count

    async def accepted() -> int:
        return await asyncio.to_thread(successes, server, BYTES_MODEL) - before

    async def scenario() -> None:
        sock = _small_receive_buffer(server, rcvbuf)
        sock.setblocking(False)
        async with aconnect(url(server, BYTES_MODEL), sock=sock, compression=None, max_queue=1, max_size=None) as slow:

            async def send_all() -> None:
                for i in range(count):
                    await slow.send(bytes_body(f"s{i}", size))

            sender = asyncio.ensure_future(send_all())
            try:
                held = await settled_async(accepted, MAX_IN_FLIGHT)
                assert MAX_IN_FLIGHT <= held <= bound, (held, bound)
                assert not sender.done()  # the client's sends are held back too
                # Another socket on the same server is answered meanwhile
                other_ids = await asyncio.to_thread(_five_on_another_socket, server)
                assert other_ids == [f"o{i}" for i in range(5)]
                assert await accepted() <= bound
                # Reading resumes the stream: every request is answered, none lost
                ids = set()
                for _ in range(count):
                    doc = json.loads(await asyncio.wait_for(slow.recv(), 60))
                    data = doc["outputs"][0]["data"][0]
                    assert data.startswith(doc["id"] + ":") and len(data) == size
                    ids.add(doc["id"])
                assert ids == {f"s{i}" for i in range(count)}
                await asyncio.wait_for(sender, 60)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender

    asyncio.run(scenario())
    assert_clean_log(server)


def _five_on_another_socket(server: ServerProcess) -> list[str]:
    with connect(url(server)) as other:
        for i in range(5):
            other.send(json.dumps(mlp_body(f"o{i}", i)))
        return sorted(receive(other)["id"] for _ in range(5))


async def settled_async(read: Callable[[], Awaitable[int]], at_least: int) -> int:
    """:func:`settled` for a coroutine."""
    deadline = time.monotonic() + 60
    last, same = await read(), 0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await read()
        same = same + 1 if value == last and value >= at_least else 0
        last = value
        if same >= 10:
            return value
    raise AssertionError(f"never settled at {at_least} or more: last read {last}")


def test_a_client_gone_mid_stream_leaves_the_server_healthy(server: ServerProcess) -> None:
    sock = _small_receive_buffer(server, 64 * 1024)
    with (
        contextlib.suppress(ConnectionClosed, OSError),
        connect(url(server, BYTES_MODEL), sock=sock, compression=None, max_queue=1, max_size=None) as ws,
    ):
        for i in range(30):
            ws.send(bytes_body(f"g{i}", 128 * 1024))
        settled(lambda: successes(server, BYTES_MODEL), 1)  # at the bound, answers unread
        sock.shutdown(socket.SHUT_RDWR)  # gone without a close handshake
    with connect(url(server)) as again:
        again.send(json.dumps(mlp_body("again", 1)))
        assert receive(again)["id"] == "again"
    assert httpx.get(f"{server.base}/v2/health/ready", timeout=30).status_code == 200
    settled(lambda: successes(server, BYTES_MODEL), 1)  # nothing left running
    assert_clean_log(server)


# -- auth ------------------------------------------------------------------------------------------


def _create_key(path: Path, role: str, name: str, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "keys", "create", "--keys-file", str(path), "--role", role]
        + ["--name", name, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def auth_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    root = tmp_path_factory.mktemp("ws-auth")
    keys_file = root / "keys.json"
    keys = {role: _create_key(keys_file, role, role) for role in ("read", "infer")}
    keys["limited"] = _create_key(keys_file, "infer", "limited", "--rate", "0.2", "--burst", "2")
    with running_server(repo, root / "server.log", "--auth", "true", "--keys-file", str(keys_file)) as server:
        yield server, keys


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_auth_is_checked_at_the_handshake(auth_server: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = auth_server
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server))
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in json.loads(refused.value.response.body or b"{}")
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server), additional_headers=_bearer(keys["read"]))
    assert refused.value.response.status_code == 403
    with connect(url(server), additional_headers=_bearer(keys["infer"])) as ws:
        ws.send(json.dumps(mlp_body("ok", 1)))
        assert receive(ws)["id"] == "ok"


def test_each_message_draws_on_the_rate_limit(auth_server: tuple[ServerProcess, dict[str, str]]) -> None:
    """Burst 2 at 0.2 per second: the handshake takes the first token (its first message is free, as a gRPC
    stream's), the second message the second; the third is refused with retry_after, on a socket that stays open."""
    server, keys = auth_server
    with connect(url(server), additional_headers=_bearer(keys["limited"])) as ws:
        for i in range(3):
            ws.send(json.dumps(mlp_body(f"m{i}", i)))
        answers = {doc["id"]: doc for doc in (receive(ws) for _ in range(3))}
        assert "outputs" in answers["m0"] and "outputs" in answers["m1"]
        limited = answers["m2"]
        assert limited["status"] == 429 and "rate limit of key 'limited' exceeded" in limited["error"]
        assert isinstance(limited["retry_after"], int) and limited["retry_after"] >= 1
        ws.send("still open?")
        assert receive(ws)["status"] == 400  # parsed before the limit is answered

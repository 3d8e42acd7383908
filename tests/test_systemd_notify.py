"""The service under ``Type=notify``: a real AF_UNIX datagram socket stands where systemd's would be
(``NOTIFY_SOCKET``); the service says ``READY=1`` once its models are loaded and it listens, feeds the watchdog
from its event loop at half of ``WATCHDOG_USEC``, and says ``STOPPING=1`` when it begins to drain."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest


def _receive(sock: socket.socket, until: float) -> list[str]:
    messages = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return messages


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_watchdog_and_stopping(demo_repo: Path, tmp_path: Path, server_factory: Any, abstract: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"appliance-test-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify")
        sock.bind(address)
    with sock:
        server = server_factory(demo_repo, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        messages = _receive(sock, time.monotonic() + 1.5)
        assert messages[0] == "READY=1\nSTATUS=serving 2 of 2 model versions"
        # every 0.1 s: about 15 in 1.5 s, however busy this machine is, more than a few
        assert messages[1:] and set(messages[1:]) == {"WATCHDOG=1"} and len(messages) > 5
        assert server.stop() == 0
        assert "STOPPING=1\nSTATUS=draining" in _receive(sock, time.monotonic() + 2)


def test_outside_systemd_nothing_is_sent_and_a_watchdog_for_another_process_is_not_fed(
    demo_repo: Path, tmp_path: Path, server_factory: Any
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    with sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
        server_factory(demo_repo, env=env)
        assert _receive(sock, time.monotonic() + 1.0) == ["READY=1\nSTATUS=serving 2 of 2 model versions"]
    server = server_factory(demo_repo, env={"NOTIFY_SOCKET": ""})  # not under systemd: serves all the same
    assert server.http().is_server_ready()

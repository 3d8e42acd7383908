"""A real ``redis-server`` for a test: its own process on a free loopback port, no persistence, killed at the end.

``scripts/setup.sh test`` installs Debian's ``redis-server`` when run as root; without it these tests fail and say
so rather than skip. :func:`redis_call` sends one command with the appliance's own client (:mod:`appliance.core.resp`).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.core.resp import RedisConnection, Reply

START_TIMEOUT_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """The path of ``redis-server``; an AssertionError that says how to get it when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError(
            "redis-server is not installed, and the Redis response cache tests need a real one: install Debian's "
            "'redis-server' package (scripts/setup.sh test does, as root) or put redis-server on PATH"
        )
    return binary


@dataclass
class RedisProcess:
    """``redis-server`` on ``127.0.0.1:port``; :meth:`kill` and :meth:`start` again keep the port."""

    log_path: Path
    port: int = field(default_factory=free_port)
    maxmemory: int = 64 * 1024 * 1024
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        """Start it and wait until it answers PING."""
        command = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            str(self.maxmemory),
            "--maxmemory-policy",
            "allkeys-lru",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited ({self.process.returncode}):\n{self.log_path.read_text()}")
            try:
                if redis_call(self.port, b"PING") == b"PONG":
                    return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer on port {self.port}:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: gone at once, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def call(self, *args: bytes) -> Reply:
        return redis_call(self.port, *args)


def redis_call(port: int, *args: bytes) -> Reply:
    """One command on a new connection to ``127.0.0.1:port``; its reply (an error reply raises RedisError)."""

    async def go() -> Reply:
        connection = await RedisConnection.open("127.0.0.1", port, 1.0, 5.0)
        try:
            return await connection.call(*args)
        finally:
            connection.close()

    return asyncio.run(go())

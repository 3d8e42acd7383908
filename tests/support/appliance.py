"""The real appliance as a subprocess: ``appliance serve`` on port 0, its ports read from its ready line.

Every server started here is in ``live_servers`` while it runs, so that conftest can attach the logs of all
of them to a failing test's report.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.reference_triton import ServerAddress

READY_LINE = re.compile(r"appliance ready: REST on ([\d.]+):(\d+), gRPC on ([\d.]+):(\d+)")
START_TIMEOUT_S = 60

live_servers: list[ServerProcess] = []


@dataclass
class ServerProcess(ServerAddress):
    """``appliance serve`` started by a test; its ports are 0 until its ready line has been read."""

    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = field(default="127.0.0.1", kw_only=True)
    http_port: int = field(default=0, kw_only=True)
    grpc_port: int = field(default=0, kw_only=True)
    args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.http_url}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; kill if it will not go. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def http(self, **kwargs: Any) -> Any:
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, **kwargs)

    def grpc(self, **kwargs: Any) -> Any:
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)


def serve_command(repo: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "appliance.cli",
        "serve",
        "--model-repository",
        str(repo),
        "--http-address",
        "127.0.0.1",
        "--grpc-address",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        *extra,
    ]


def launch(
    repo: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None, wait: bool = True
) -> ServerProcess:
    """Start ``appliance serve`` on ``repo``; with ``wait``, return once its ready line shows the ports."""
    out = log_path.open("wb")
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(serve_command(repo, *extra), stdout=out, stderr=subprocess.STDOUT, env=full_env)
    out.close()
    server = ServerProcess(process, log_path, args=list(extra))
    live_servers.append(server)
    return wait_ready(server) if wait else server


def wait_ready(server: ServerProcess) -> ServerProcess:
    """Wait for the server's ready line and take its ports from it; kill it and fail if it never comes."""
    process = server.process
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = READY_LINE.search(server.log())
        if match:
            server.http_port, server.grpc_port = int(match.group(2)), int(match.group(4))
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"appliance did not start (exit {process.returncode}):\n{server.log()}")


@contextlib.contextmanager
def running_server(
    repo: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A server for the ``with`` block; killed on the way out whatever happened."""
    server = launch(repo, log_path, *extra, env=env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        live_servers.remove(server)

"""Fixtures: model repositories, the real server as a subprocess, clients, and in-process ONNX Runtime.

Servers bind port 0 on loopback and report the ports they got in their "appliance ready" log line. Each server
collects its log in a file; a failing test gets the logs of every server it used in its report.
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

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402

from appliance.demo import write_demo_repository  # noqa: E402

READY_LINE = re.compile(r"appliance ready: REST on ([\d.]+):(\d+), gRPC on ([\d.]+):(\d+)")
START_TIMEOUT_S = 60

_live_servers: list[ServerProcess] = []


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    grpc_port: int = 0
    args: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

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
    _live_servers.append(server)
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
        _live_servers.remove(server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _live_servers:
            tail = server.log()[-4000:]
            report.sections.append((f"appliance log ({server.log_path.name})", tail))


# -- repositories --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "repo"
    write_demo_repository(root)
    return root


@dataclass
class ModelsRepo:
    root: Path
    files: dict[str, bytes]


@pytest.fixture(scope="session")
def models_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelsRepo:
    """Every datatype (batched and not), reshape, versions, autocomplete, a Triton-style folder and a
    broken model, in one repository."""
    root = tmp_path_factory.mktemp("models") / "repo"
    root.mkdir()
    files: dict[str, bytes] = {}
    for datatype in models.DATATYPES:
        for batched in (True, False):
            name = models.write_identity(root, datatype, batched)
            files[name] = models.identity_model(datatype)
    files["reshape"] = models.write_reshape(root)
    files["triton_onnx"] = models.write_triton_style(root)
    for name, policy in (
        ("versions_all", "{ all: { } }"),
        ("versions_specific", "{ specific: { versions: [ 1, 3 ] } }"),
        ("versions_latest", "{ latest: { num_versions: 2 } }"),
        ("versions_default", None),
    ):
        written = models.write_versioned(root, name, policy or "{ latest: { num_versions: 1 } }")
        if policy is None:
            text = (root / name / "config.pbtxt").read_text()
            (root / name / "config.pbtxt").write_text(re.sub(r"version_policy:.*\n", "", text))
        for version, data in written.items():
            files[f"{name}/{version}"] = data
    files["autocomplete"] = models.write_configless(root)
    models.write_broken(root)
    return ModelsRepo(root, files)


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "demo-server.log"
    with running_server(demo_repo, log, "--max-request-bytes", str(4 * 1024 * 1024)) as server:
        yield server


@pytest.fixture(scope="session")
def models_server(models_repo: ModelsRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "models-server.log"
    with running_server(models_repo.root, log) as server:
        yield server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test: ``server_factory(repo, *flags)``; all are killed at teardown."""
    stack = contextlib.ExitStack()
    count = 0

    def start(repo: Path, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        nonlocal count
        count += 1
        return stack.enter_context(running_server(repo, tmp_path / f"server-{count}.log", *extra, env=env))

    with stack:
        yield start


# -- in-process ONNX Runtime ---------------------------------------------------------------------

_sessions: dict[bytes, ort.InferenceSession] = {}


def ort_run(model: bytes | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX file in-process; BYTES go in and come back as ``bytes`` objects, as over the wire."""
    data = model.read_bytes() if isinstance(model, Path) else model
    session = _sessions.get(data)
    if session is None:
        session = _sessions[data] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    string_inputs = {i.name for i in session.get_inputs() if i.type == "tensor(string)"}
    converted = {
        k: (np.vectorize(lambda b: b.decode(), otypes=[object])(v) if k in string_inputs else v)
        for k, v in feeds.items()
    }
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, converted)
    out = {}
    for name, value in zip(names, results):
        if value.dtype == object:
            value = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(value)
        out[name] = value
    return out


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Bit-for-bit equal values, shapes and dtypes (BYTES as bytes objects)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype == object:
        assert actual.dtype == object, actual.dtype
        assert [bytes(a) for a in actual.reshape(-1)] == [bytes(e) for e in expected.reshape(-1)]
    else:
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        np.testing.assert_array_equal(actual, expected)


# -- the slow model's clock ----------------------------------------------------------------------

_seconds_per_iteration: list[float] = []


def seconds_per_iteration() -> float:
    """Measured in-process once: how long one MatMul of the slow model takes here (single thread)."""
    if not _seconds_per_iteration:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(models.slow_model(), options, providers=["CPUExecutionProvider"])
        x = np.ones((1, 4), np.float32)
        session.run(None, {"x": x, "n": np.full((1, 1), 5, np.int64)})
        times = []
        for _ in range(3):
            start = time.perf_counter()
            session.run(None, {"x": x, "n": np.full((1, 1), 40, np.int64)})
            times.append((time.perf_counter() - start) / 40)
        _seconds_per_iteration.append(float(np.median(times)))
    return _seconds_per_iteration[0]


def iterations_for(seconds: float) -> int:
    """Iterations of the slow model that keep an instance busy for about ``seconds``."""
    return max(1, round(seconds / seconds_per_iteration()))

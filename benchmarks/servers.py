"""Servers under test: the appliance and the reference tritonserver, started on free ports, plus the
process-tree CPU and RSS readings the benchmark reports.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from appliance.reference_triton import (
    ServerAddress,
    free_ports,
    log_tail,
    popen_kwargs,
    running_tritonserver,
    stop_process_group,
    wait_http_ready,
    write_python_backend_repository,
)

__all__ = [
    "GRPC_FLOOR_TARGETS",
    "MINIMAL_BATCH",
    "RunningServer",
    "ServerStartError",
    "appliance_command",
    "prepare_onnx_repository",
    "remote_server",
    "running_appliance",
    "running_server",
    "server_extensions",
    "tree_cpu_seconds",
    "tree_rss_bytes",
    "wait_models_ready",
]


# grpc-minimal with batching (``grpc_floor.py --minimal --batch``), by target
MINIMAL_BATCH = {"grpc-minimal-batch": "thread", "grpc-minimal-batch-inline": "inline"}
# The targets of grpc_floor.py: gRPC only, no model statistics or readiness
GRPC_FLOOR_TARGETS = ("grpc-floor", "grpc-minimal", *MINIMAL_BATCH)


class ServerStartError(RuntimeError):
    """A server exited or was not ready in time; the message ends with the tail of its log."""


@dataclass(kw_only=True)
class RunningServer(ServerAddress):
    """What the benchmark needs of a started server."""

    target: str  # "appliance", "triton", "grpc-floor", "grpc-minimal"[-batch[-inline]], "mlserver" or "remote"
    process: subprocess.Popen[bytes] | None  # None: a server already running elsewhere (no CPU or RSS read)
    log_path: Path

    def url(self, transport: str) -> str:
        return self.grpc_url if transport in ("grpc", "shm") else self.http_url


def remote_server(address: str) -> RunningServer:
    """A server already running (e.g. `appliance serve` on a Jetson): ``HOST[:HTTP_PORT[:GRPC_PORT]]``."""
    host, *ports = address.split(":")
    try:
        http_port = int(ports[0]) if ports else 8000
        grpc_port = int(ports[1]) if len(ports) > 1 else 8001
    except ValueError:
        ports = ["", "", ""]
    if not host or len(ports) > 2:
        raise ValueError(f"--url {address!r}: expected HOST[:HTTP_PORT[:GRPC_PORT]]")
    if not wait_http_ready(f"http://{host}:{http_port}/v2/health/ready", 10.0):
        raise ServerStartError(f"{address}: GET /v2/health/ready on port {http_port} is not 200")
    return RunningServer(
        target="remote", process=None, host=host, http_port=http_port, grpc_port=grpc_port, log_path=Path("(remote)")
    )


def prepare_onnx_repository(dest: Path, source: Path | None = None, max_queue_delay_us: int | None = 0) -> Path:
    """A Triton-layout ONNX repository at ``dest``: a copy of ``source``, or the demo models (``mlp``, ``cnn``)
    and the benchmark's ``image`` model when None.

    With ``max_queue_delay_us`` not None, every model that has ``dynamic_batching`` gets that queue delay
    (the config is rewritten through Triton's ModelConfig protobuf, so nothing else changes).
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    if dest.exists():
        shutil.rmtree(dest)
    if source is None:
        from appliance.demo import write_demo_repository
        from benchmarks.image_model import write_image_model

        write_demo_repository(dest)
        write_image_model(dest)
    else:
        shutil.copytree(source, dest)
    if max_queue_delay_us is not None:
        for config_path in dest.glob("*/config.pbtxt"):
            config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
            if config.HasField("dynamic_batching"):
                config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
                config_path.write_text(text_format.MessageToString(config))
    return dest


def appliance_command() -> list[str]:
    """The ``appliance`` console script of this interpreter's environment (or ``python -m appliance``)."""
    script = Path(sys.executable).parent / "appliance"
    if script.exists():
        return [str(script)]
    found = shutil.which("appliance")
    return [found] if found else [sys.executable, "-m", "appliance"]


@contextlib.contextmanager
def running_appliance(
    repo: Path,
    workdir: Path,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    ready_timeout_s: float = 120.0,
    program: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """``appliance serve`` on ``repo`` with free ports; yielded once ``/v2/health/ready`` is 200. ``program``
    replaces the ``appliance`` command (``benchmarks/stages.py``'s launcher)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "appliance.log"
    http_port, grpc_port = free_ports(2, host)
    command = [
        *(program or appliance_command()),
        "serve",
        "--model-repository",
        str(repo),
        "--http-address",
        host,
        "--grpc-address",
        host,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *extra_args,
    ]
    with log_path.open("ab") as log:
        log.write(f"\n=== {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, **popen_kwargs(die_with_parent=True)
        )
    try:
        if not wait_http_ready(f"http://{host}:{http_port}/v2/health/ready", ready_timeout_s, process):
            state = "exited" if process.poll() is not None else "was not ready in time"
            raise ServerStartError(f"appliance {state} (log {log_path}):\n{log_tail(log_path)}")
        yield RunningServer(
            target="appliance",
            process=process,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            log_path=log_path,
        )
    finally:
        stop_process_group(process)


@contextlib.contextmanager
def running_server(
    target: str,
    onnx_repo: Path,
    workdir: Path,
    appliance_args: Sequence[str] = (),
    mlserver_workers: int = 0,
) -> Iterator[RunningServer]:
    """``target`` on ``onnx_repo``: Triton gets a python-backend copy of it and MLServer a copy with
    model-settings.json files (same batching config); ``mlserver_workers`` is MLServer's parallel_workers."""
    if target == "appliance":
        with running_appliance(onnx_repo, workdir / "appliance", appliance_args) as server:
            yield server
    elif target == "triton":
        repo = write_python_backend_repository(onnx_repo, workdir / "triton-repo", max_queue_delay_us=None)
        with running_tritonserver(repo, workdir / "triton") as triton:
            yield RunningServer(
                target="triton",
                process=triton.process,
                host=triton.host,
                http_port=triton.http_port,
                grpc_port=triton.grpc_port,
                log_path=triton.log_path,
            )
    elif target in GRPC_FLOOR_TARGETS:
        with running_grpc_floor(onnx_repo, workdir / target, target) as server:
            yield server
    elif target == "mlserver":
        from benchmarks.mlserver_target import MlserverStartError, running_mlserver, write_mlserver_repository

        repo = write_mlserver_repository(onnx_repo, workdir / "mlserver-repo")
        try:
            with running_mlserver(repo, workdir / "mlserver", parallel_workers=mlserver_workers) as started:
                process, http_port, grpc_port, log_path = started
                yield RunningServer(
                    target="mlserver",
                    process=process,
                    host="127.0.0.1",
                    http_port=http_port,
                    grpc_port=grpc_port,
                    log_path=log_path,
                )
        except MlserverStartError as exc:
            raise ServerStartError(str(exc)) from exc
    else:
        raise ValueError(f"unknown target {target!r}")


@contextlib.contextmanager
def running_grpc_floor(
    repo: Path, workdir: Path, target: str = "grpc-floor", host: str = "127.0.0.1", work_us: int = 0
) -> Iterator[RunningServer]:
    """``benchmarks/grpc_floor.py`` (gRPC only) on a free port, once it answers ServerReady: ``target`` is one of
    ``GRPC_FLOOR_TARGETS``, the floor (canned answers), the grpc-minimal server (it runs the model with the least
    work; gRPC and system shared memory) or one of its batching forms (``grpc_floor.py --batch``);
    ``work_us``: CPU microseconds it spends in each ModelInfer first."""
    import tritonclient.grpc as grpcclient

    if target not in GRPC_FLOOR_TARGETS:
        raise ValueError(f"unknown target {target!r} of grpc_floor.py")
    minimal, batch = target != "grpc-floor", MINIMAL_BATCH.get(target, "")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{target}.log"
    (grpc_port,) = free_ports(1, host)
    command = [
        sys.executable,
        "-m",
        "benchmarks.grpc_floor",
        "--model-repository",
        str(repo),
        "--address",
        host,
        "--port",
        str(grpc_port),
        "--work-us",
        str(work_us),
        *(["--minimal"] if minimal else []),
        *(["--batch", batch] if batch else []),
    ]
    root = Path(__file__).resolve().parent.parent
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, **popen_kwargs(die_with_parent=True)
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if grpcclient.InferenceServerClient(f"{host}:{grpc_port}").is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"{target} did not start (log {log_path}):\n{log_tail(log_path)}")
            time.sleep(0.1)
        yield RunningServer(
            target=target, process=process, host=host, http_port=0, grpc_port=grpc_port, log_path=log_path
        )
    finally:
        stop_process_group(process)


def wait_models_ready(server: RunningServer, models: Sequence[str], timeout_s: float = 60.0) -> None:
    """Wait until ``GET /v2/models/<m>/ready`` is 200 for each model."""
    for model in models:
        url = f"http://{server.http_url}/v2/models/{model}/ready"
        if not wait_http_ready(url, timeout_s, server.process):
            raise ServerStartError(
                f"{server.target}: model {model!r} not ready (log {server.log_path}):\n" + log_tail(server.log_path)
            )


def server_extensions(server: RunningServer) -> list[str]:
    """The ``extensions`` of the server's metadata over gRPC; empty when it does not answer ServerMetadata
    (the grpc-floor)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        metadata = client.get_server_metadata(as_json=True)
    except Exception:  # noqa: BLE001 - no metadata, no extensions
        return []
    finally:
        client.close()
    return [str(e) for e in metadata.get("extensions", [])]


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its live descendants (and children it has reaped)."""
    total = 0.0
    for index, proc in enumerate(_tree(pid)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system
            if index == 0:
                total += times.children_user + times.children_system
    return total


def tree_thread_cpu_seconds(pid: int) -> dict[tuple[int, int], float]:
    """User + system CPU seconds of every thread of ``pid`` and its live descendants, by (process, thread)."""
    threads: dict[tuple[int, int], float] = {}
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for thread in proc.threads():
                threads[(proc.pid, thread.id)] = thread.user_time + thread.system_time
    return threads


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` plus all its live descendants."""
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def http_get(url: str, timeout_s: float = 5.0) -> int:
    """Status code of ``GET url`` (0 when it cannot connect)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0

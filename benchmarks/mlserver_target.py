"""The ``mlserver`` target: Seldon MLServer (the Python server that speaks the same V2 protocol) on a copy
of the ONNX repository, through the small custom runtime in ``mlserver_runtime.py``.

MLServer runs from its own virtual environment so that it never changes the project's package versions:

    python -m venv benchmarks/.venv-mlserver && \\
        benchmarks/.venv-mlserver/bin/pip install mlserver onnxruntime 'uvloop<0.22'

(MLServer 1.7.1's worker processes, ``parallel_workers`` > 0, die at start with uvloop 0.22 or later: "There
is no current event loop". The default here is 0 workers, which gave MLServer its best figures on 2 cores.)

Each model gets a ``model-settings.json`` with the inputs and outputs of its ``config.pbtxt``, the same
``max_batch_size`` and adaptive batching on: ``max_batch_time`` is the queue delay, at least 100 us (MLServer
turns batching off at 0). MLServer has neither Triton's binary tensor extension over REST nor the shared
memory extension: its REST is measured with JSON tensors (transport ``json``) and it has no shm points.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.reference_triton import free_ports, log_tail, popen_kwargs, stop_process_group, wait_http_ready

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-mlserver"
RUNTIME = HERE / "mlserver_runtime.py"
MIN_BATCH_TIME_US = 100  # MLServer's adaptive batching is off at max_batch_time 0
DEFAULT_WORKERS = 0  # parallel_workers: 0 runs inference in the server process (its best on 2 cores, see README)
INSTALL_HINT = (
    "python -m venv benchmarks/.venv-mlserver && "
    "benchmarks/.venv-mlserver/bin/pip install mlserver onnxruntime 'uvloop<0.22'"
)

__all__ = ["DEFAULT_VENV", "DEFAULT_WORKERS", "MlserverStartError", "running_mlserver", "write_mlserver_repository"]


class MlserverStartError(RuntimeError):
    """MLServer is not installed, exited, or was not ready in time."""


def _settings_tensor(tensor: Any, batching: bool) -> dict[str, Any]:
    from tritonclient.grpc import model_config_pb2

    datatype = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
    datatype = {"STRING": "BYTES"}.get(datatype, datatype)
    dims = [int(d) for d in tensor.dims]
    return {"name": tensor.name, "datatype": datatype, "shape": [-1, *dims] if batching else dims}


def write_mlserver_repository(onnx_repo: Path, dest: Path) -> Path:
    """An MLServer model repository at ``dest``: per model ``model-settings.json`` and ``model.onnx`` (the
    first version), plus the runtime module at the root. ``max_batch_time`` is the config's
    ``max_queue_delay_microseconds`` (at least ``MIN_BATCH_TIME_US``). Returns ``dest``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copyfile(RUNTIME, dest / RUNTIME.name)
    for config_path in sorted(onnx_repo.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        name = config.name or config_path.parent.name
        versions = sorted(p for p in config_path.parent.iterdir() if (p / "model.onnx").is_file())
        if not versions:
            continue
        folder = dest / name
        folder.mkdir()
        shutil.copyfile(versions[0] / "model.onnx", folder / "model.onnx")
        batching = config.max_batch_size > 0
        settings: dict[str, Any] = {
            "name": name,
            "implementation": "mlserver_runtime.OnnxRuntimeModel",
            "parameters": {"uri": "./model.onnx"},
            "inputs": [_settings_tensor(t, batching) for t in config.input],
            "outputs": [_settings_tensor(t, batching) for t in config.output],
        }
        if batching:
            settings["max_batch_size"] = config.max_batch_size
            delay_us = config.dynamic_batching.max_queue_delay_microseconds
            settings["max_batch_time"] = max(delay_us, MIN_BATCH_TIME_US) / 1e6
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return dest


@contextlib.contextmanager
def running_mlserver(
    repo: Path,
    workdir: Path,
    venv: Path = DEFAULT_VENV,
    parallel_workers: int = DEFAULT_WORKERS,
    host: str = "127.0.0.1",
    ready_timeout_s: float = 120.0,
) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    """``mlserver start repo`` on free ports; yields (process, http_port, grpc_port, log path) once ready."""
    executable = venv / "bin" / "mlserver"
    if not executable.exists():
        raise MlserverStartError(f"no MLServer at {executable}; create its venv with: {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mlserver.log"
    http_port, grpc_port, metrics_port = free_ports(3, host)
    settings = {
        "debug": False,
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": None,  # no Prometheus middleware on every request: MLServer's best figure
        "parallel_workers": parallel_workers,
        "load_models_at_startup": True,
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    env = {**os.environ, "PYTHONPATH": str(repo)}  # the runtime module, for worker processes too
    env.pop("VIRTUAL_ENV", None)
    command = [str(executable), "start", str(repo)]
    with log_path.open("ab") as log:
        log.write(f"\n=== {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=repo, env=env, **popen_kwargs(die_with_parent=True)
        )
    try:
        if not wait_http_ready(f"http://{host}:{http_port}/v2/health/ready", ready_timeout_s, process):
            state = "exited" if process.poll() is not None else "was not ready in time"
            raise MlserverStartError(f"mlserver {state} (log {log_path}):\n{log_tail(log_path)}")
        yield process, http_port, grpc_port, log_path
    finally:
        stop_process_group(process)

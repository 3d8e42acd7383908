"""The autoscaler daemon as its unit runs it, for tests: ``appliance autoscale`` in its own process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


def create_key(keys_file: Path, role: str) -> str:
    return subprocess.run(
        [*APPLIANCE, "keys", "create", "--keys-file", str(keys_file), "--role", role, "--name", role],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def start_daemon(tmp_path: Path, config: str, key: str | None, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    (tmp_path / "autoscaler.toml").write_text(config)
    log = tmp_path / "autoscaler.log"
    command = [*APPLIANCE, "autoscale", "--config", str(tmp_path / "autoscaler.toml"), *extra]
    if key is not None:
        (tmp_path / "admin-key").write_text(key + "\n")
        command += ["--admin-key-file", str(tmp_path / "admin-key")]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    return process, log


def stop_daemon(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s; autoscaler log:\n{log.read_text()}")

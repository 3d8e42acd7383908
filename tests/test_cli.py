"""The ``appliance`` command: help texts, settings from flags / environment (APPLIANCE_) / TOML config file,
config errors that name the file and line, and ``demo-repository``."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.appliance import ServerProcess, live_servers, wait_ready

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APPLIANCE, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_top_level_help():
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "demo-repository" in result.stdout
    assert "Open Inference Protocol" in result.stdout


def test_serve_help_documents_every_option():
    result = run("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in (
        "--model-repository",
        "--http-port",
        "--grpc-port",
        "--model-control-mode",
        "--repository-poll-secs",
        "--load-model",
        "--exit-timeout-secs",
        "--max-request-bytes",
        "--config",
        "--http-address",
        "--grpc-address",
    ):
        assert flag in text, flag
    assert "APPLIANCE_MODEL_REPOSITORY" in text and "APPLIANCE_EXIT_TIMEOUT_SECS" in text
    from appliance.cli import build_parser

    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    serve = subcommands.choices["serve"]
    for action in serve._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 20, f"{action.option_strings} has no real help text"


def test_demo_repository_command(tmp_path: Path):
    result = run("demo-repository", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    for model in ("mlp", "cnn"):
        assert (tmp_path / "a" / model / "config.pbtxt").is_file()
        assert (tmp_path / "a" / model / "1" / "model.onnx").is_file()
    assert (tmp_path / "a" / "cnn" / "labels.txt").read_text().split()[0] == "cat"
    run("demo-repository", str(tmp_path / "b"))
    for model in ("mlp", "cnn"):  # seeded: the same bytes every time
        assert (tmp_path / "a" / model / "1" / "model.onnx").read_bytes() == (
            tmp_path / "b" / model / "1" / "model.onnx"
        ).read_bytes()


def test_demo_repository_unwritable(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("demo-repository", str(blocker / "repo"))
    assert result.returncode == 1 and "appliance demo-repository" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("http_port = \n", ["line 1"]),
        ('model_repository = "/x"\nhttp_port = 80 80\nlog_level = "info"\n', ["line 2"]),
        ("no_such_setting = 1\n", ["no_such_setting"]),
        ('http_port = "many"\n', ["http_port"]),
        ("http_port = 70000\n", ["http_port"]),
    ],
    ids=["syntax", "syntax-line-2", "unknown-key", "wrong-type", "out-of-range"],
)
def test_bad_config_file_names_the_file(tmp_path: Path, text, expected):
    config = tmp_path / "appliance.toml"
    config.write_text(text)
    result = run("serve", "--config", str(config), timeout=30)
    assert result.returncode == 2, result.stderr
    assert str(config) in result.stderr
    for word in expected:
        assert word in result.stderr, (word, result.stderr)
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path):
    result = run("serve", "--config", str(tmp_path / "nope.toml"), timeout=30)
    assert result.returncode == 2 and "nope.toml" in result.stderr
    result = run("serve", env={"APPLIANCE_CONFIG": str(tmp_path / "also-nope.toml")}, timeout=30)
    assert result.returncode == 2 and "also-nope.toml" in result.stderr


def test_bad_flag_value(tmp_path: Path):
    result = run("serve", "--model-control-mode", "sometimes", timeout=30)
    assert result.returncode == 2 and "sometimes" in result.stderr
    result = run("serve", "--model-repository", str(tmp_path), "--repository-poll-secs", "0", timeout=30)
    assert result.returncode == 2 and "repository_poll_secs" in result.stderr
    result = run("serve", "--model-repository", str(tmp_path), "--http-port", "-5", timeout=30)
    assert result.returncode == 2 and "http_port" in result.stderr


def _start_raw(args: list[str], log: Path, env: dict[str, str]) -> ServerProcess:
    out = log.open("wb")
    process = subprocess.Popen([*APPLIANCE, *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    out.close()
    server = ServerProcess(process, log)
    live_servers.append(server)
    return wait_ready(server)


def _body(rows: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": [0.123456789012345] * (64 * rows)}
            ]
        }
    ).encode()


def test_settings_from_config_file_env_and_flags(tmp_path: Path, demo_repo: Path):
    """The config file sets everything; APPLIANCE_* overrides the file; a flag overrides both."""
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'model_repository = "{demo_repo}"\nhttp_address = "127.0.0.1"\ngrpc_address = "127.0.0.1"\n'
        'http_port = 0\ngrpc_port = 0\nmax_request_bytes = 100\nmodel_control_mode = "explicit"\n'
        'load_model = ["mlp", "cnn"]\n'
    )
    servers = []
    try:
        # file only: 100-byte limit, both models
        s = _start_raw(["serve", "--config", str(config)], tmp_path / "a.log", {})
        servers.append(s)
        assert httpx.post(f"{s.base}/v2/models/mlp/infer", content=_body(1)).status_code == 413
        assert s.http().is_model_ready("cnn")
        # environment over file: bigger limit, only mlp
        s = _start_raw(
            ["serve"],
            tmp_path / "b.log",
            {
                "APPLIANCE_CONFIG": str(config),
                "APPLIANCE_MAX_REQUEST_BYTES": "10000",
                "APPLIANCE_LOAD_MODEL": '["mlp"]',
            },
        )
        servers.append(s)
        assert httpx.post(f"{s.base}/v2/models/mlp/infer", content=_body(1)).status_code == 200
        assert httpx.post(f"{s.base}/v2/models/mlp/infer", content=_body(32)).status_code == 413
        assert not s.http().is_model_ready("cnn")
        # flag over environment
        s = _start_raw(
            ["serve", "--max-request-bytes", "1000000"],
            tmp_path / "c.log",
            {"APPLIANCE_CONFIG": str(config), "APPLIANCE_MAX_REQUEST_BYTES": "10000"},
        )
        servers.append(s)
        assert httpx.post(f"{s.base}/v2/models/mlp/infer", content=_body(32)).status_code == 200
    finally:
        for s in servers:
            s.stop()
            live_servers.remove(s)


def test_port_in_use_is_a_clear_error(tmp_path: Path, demo_repo: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            "--model-repository",
            str(demo_repo),
            "--http-address",
            "127.0.0.1",
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            str(port),
            timeout=60,
        )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "appliance serve:" in result.stderr and "Traceback" not in result.stderr

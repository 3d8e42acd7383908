"""The audit log on a real server: admin actions and refused admin attempts, on both transports, in the file,
in the journal (the ``appliance.audit`` logger on stderr) and through ``GET /v2/audit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tritonclient.utils import InferenceServerException

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


def _key(keys_file: Path, role: str, name: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [*APPLIANCE, "keys", "create", "--keys-file", str(keys_file), "--role", role, "--name", name],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_admin_actions_and_refused_attempts_are_audited(demo_repo: Path, tmp_path: Path, server_factory: Any):
    keys_file, audit_file = tmp_path / "keys.json", tmp_path / "log" / "audit.jsonl"
    cli_env = {"APPLIANCE_AUDIT_LOG_FILE": str(audit_file)}
    admin = _key(keys_file, "admin", "ops", cli_env)
    infer = _key(keys_file, "infer", "camera")
    server = server_factory(
        demo_repo,
        "--auth",
        "true",
        "--keys-file",
        str(keys_file),
        "--audit-log-file",
        str(audit_file),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
    )
    bearer = {"Authorization": f"Bearer {admin}"}
    base = server.base
    # REST: an action that succeeds, one that fails, one refused for the role, one without credentials.
    assert httpx.post(f"{base}/v2/repository/models/mlp/load", headers=bearer, timeout=60).status_code == 200
    assert httpx.delete(f"{base}/v2/routes/nosuch", headers=bearer, timeout=30).status_code == 404
    denied = httpx.post(f"{base}/v2/repository/models/cnn/unload", headers={"Authorization": f"Bearer {infer}"})
    assert denied.status_code == 403
    assert httpx.post(f"{base}/v2/routes/canary/promote", timeout=30).status_code == 401
    # Non-admin operations are not audited.
    assert httpx.get(f"{base}/v2/models/mlp", headers=bearer, timeout=30).status_code == 200
    # gRPC: the same operations, named the same.
    client = server.grpc()
    client.load_model("mlp", headers={"authorization": f"Bearer {admin}"})
    with pytest.raises(InferenceServerException):
        client.unload_model("cnn", headers={"authorization": f"Bearer {infer}"})

    entries = _lines(audit_file)
    got = [(e["key"], e["action"], e["target"], e["result"].split(":")[0]) for e in entries]
    assert got == [
        ("cli:" + _user(), "key_create", "ops", "ok"),
        ("ops", "repository_load", "mlp", "ok"),
        ("ops", "route_delete", "nosuch", "error"),
        ("camera", "repository_unload", "cnn", "denied"),
        ("", "route_action", "canary/promote", "unauthenticated"),
        ("ops", "repository_load", "mlp", "ok"),
        ("camera", "repository_unload", "cnn", "denied"),
    ]
    for entry in entries[1:]:
        assert entry["source"].startswith("127.0.0.1:"), entry
        assert entry["time"].endswith("+00:00")
    assert "route 'nosuch'" in entries[2]["result"] or "nosuch" in entries[2]["result"]
    assert "invalid or missing credentials" in entries[4]["result"]
    assert os.stat(audit_file).st_mode & 0o777 == 0o600
    # The journal: one INFO line of the appliance.audit logger per entry.
    journal = [line for line in server.log().splitlines() if " INFO appliance.audit: " in line]
    assert len(journal) == len(entries) - 1  # the CLI's entry went to the file only (another process)
    # The admin API reads them back, newest last; reading is itself an admin action, audited after the read.
    answer = httpx.get(f"{base}/v2/audit", params={"limit": "3"}, headers=bearer, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["entries"] == entries[-3:]
    assert _lines(audit_file)[-1]["action"] == "audit_read"
    bad = httpx.get(f"{base}/v2/audit", params={"limit": "many"}, headers=bearer, timeout=30)
    assert bad.status_code == 400 and "'limit'" in bad.json()["error"]


def _user() -> str:
    import getpass

    return getpass.getuser()

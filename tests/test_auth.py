"""Auth on a real server (``--auth true``), with real ``tritonclient`` on both transports: every role against
representative operations, bad credentials, open health, the /metrics rule, keys revoked or the key file broken
while the server runs, rate limits, and the ``appliance keys`` command."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from appliance.core.auth import keys as keymod
from appliance.core.auth.authenticator import INVALID_CREDENTIALS
from appliance.core.auth.roles import Role
from tests.support.appliance import ServerProcess, running_server

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


def keys_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APPLIANCE, "keys", *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def create(path: Path, role: str, name: str, *extra: str) -> str:
    result = keys_cli("create", "--keys-file", str(path), "--role", role, "--name", name, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class Env:
    server: ServerProcess
    keys_file: Path
    audit_file: Path
    keys: dict[str, str]  # name -> key

    def bearer(self, name: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"} if name else {}


@pytest.fixture(scope="module")
def env(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("auth")
    keys_file, audit_file = root / "keys.json", root / "audit.jsonl"
    keys = {role: create(keys_file, role, role) for role in ("read", "infer", "admin")}
    keys["limited"] = create(keys_file, "infer", "limited", "--rate", "0.2", "--burst", "2")
    keys["revoked"] = create(keys_file, "admin", "revoked")
    assert keys_cli("revoke", "revoked", "--keys-file", str(keys_file)).returncode == 0
    expired, record = keymod.new_key(
        "expired", Role.ADMIN, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2020, 4, 1, tzinfo=dt.UTC)
    )
    records = keymod.read_keys(keys_file)
    records[record.id] = record
    keymod.write_keys(keys_file, records)
    keys["expired"] = expired
    flags = ["--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(audit_file)]
    flags += ["--model-control-mode", "explicit", "--load-model", "*"]
    with running_server(demo_repo, root / "server.log", *flags) as server:
        yield Env(server, keys_file, audit_file, keys)


def _inputs(lib: Any) -> list[Any]:
    inp = lib.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    return [inp]


# -- every role against representative operations, on both transports ----------------------------

# (operation, least role) per transport; each call gets the headers to send.
REST: list[tuple[str, str, Callable[[Any, dict[str, str]], Any]]] = [
    ("server metadata", "read", lambda c, h: c.get_server_metadata(headers=h)),
    ("model metadata", "read", lambda c, h: c.get_model_metadata("mlp", headers=h)),
    ("model config", "read", lambda c, h: c.get_model_config("mlp", headers=h)),
    ("statistics", "read", lambda c, h: c.get_inference_statistics("mlp", headers=h)),
    ("repository index", "read", lambda c, h: c.get_model_repository_index(headers=h)),
    ("shm status", "read", lambda c, h: c.get_system_shared_memory_status(headers=h)),
    ("infer", "infer", lambda c, h: c.infer("mlp", _inputs(httpclient), headers=h)),
    ("shm unregister", "infer", lambda c, h: c.unregister_system_shared_memory(headers=h)),
    ("load", "admin", lambda c, h: c.load_model("mlp", headers=h)),
]
GRPC: list[tuple[str, str, Callable[[Any, dict[str, str]], Any]]] = [
    ("server metadata", "read", lambda c, h: c.get_server_metadata(headers=h)),
    ("model metadata", "read", lambda c, h: c.get_model_metadata("mlp", headers=h)),
    ("model ready", "read", lambda c, h: c.is_model_ready("mlp", headers=h)),
    ("model config", "read", lambda c, h: c.get_model_config("mlp", headers=h)),
    ("statistics", "read", lambda c, h: c.get_inference_statistics("mlp", headers=h)),
    ("repository index", "read", lambda c, h: c.get_model_repository_index(headers=h)),
    ("shm status", "read", lambda c, h: c.get_system_shared_memory_status(headers=h)),
    ("infer", "infer", lambda c, h: c.infer("mlp", _inputs(grpcclient), headers=h)),
    ("shm unregister", "infer", lambda c, h: c.unregister_system_shared_memory(headers=h)),
    ("load", "admin", lambda c, h: c.load_model("mlp", headers=h)),
]
# Routes and the audit log are REST only; tritonclient.http's is_model_ready answers False for any refusal:
# (method, path, least role).
REST_PLAIN = [
    ("GET", "/v2/models/mlp/ready", "read"),
    ("GET", "/v2/routes", "read"),
    ("GET", "/v2/routes/nosuch", "read"),
    ("DELETE", "/v2/routes/nosuch", "admin"),
    ("POST", "/v2/routes/nosuch/promote", "admin"),
    ("GET", "/v2/audit", "admin"),
]
LEVEL = {None: 0, "read": 1, "infer": 2, "admin": 3}
ROLES = [None, "read", "infer", "admin"]

# gRPC's metadata keys are lower case; tritonclient.grpc sends the headers as metadata as given.
_GRPC_HEADER = "authorization"


def _expect(call: Callable[[], Any], role: str | None, least: str, transport: str) -> None:
    allowed = LEVEL[role] >= LEVEL[least]
    try:
        call()
    except InferenceServerException as exc:
        status = str(exc.status())
        refused = {"http": ("401", "403"), "grpc": ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")}
        if allowed:
            assert status not in refused[transport], f"{role} refused: {status} {exc.message()}"
            return
        want = refused[transport][0 if role is None else 1]
        assert status == want, (role, least, status, exc.message())
        if role is None:
            assert exc.message() == INVALID_CREDENTIALS or INVALID_CREDENTIALS in str(exc.message())
        return
    assert allowed, f"{role} was allowed an operation that needs {least}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "no-key")
@pytest.mark.parametrize("name, least, call", REST, ids=[r[0] for r in REST])
def test_rest_roles(env: Env, role: str | None, name: str, least: str, call: Callable[..., Any]):
    client = env.server.http()
    _expect(lambda: call(client, env.bearer(role)), role, least, "http")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "no-key")
@pytest.mark.parametrize("name, least, call", GRPC, ids=[r[0] for r in GRPC])
def test_grpc_roles(env: Env, role: str | None, name: str, least: str, call: Callable[..., Any]):
    client = env.server.grpc()
    headers = {_GRPC_HEADER: f"Bearer {env.keys[role]}"} if role else {}
    _expect(lambda: call(client, headers), role, least, "grpc")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "no-key")
@pytest.mark.parametrize("method, path, least", REST_PLAIN, ids=[f"{m} {p}" for m, p, _ in REST_PLAIN])
def test_rest_routes_and_audit_api_roles(env: Env, role: str | None, method: str, path: str, least: str):
    answer = httpx.request(method, env.server.base + path, headers=env.bearer(role), timeout=30)
    if LEVEL[role] >= LEVEL[least]:
        assert answer.status_code not in (401, 403), answer.text
    else:
        assert answer.status_code == (401 if role is None else 403), answer.text
        assert "error" in answer.json()


def test_grpc_stream_needs_the_infer_role(env: Env):
    def stream(role: str | None) -> Any:
        results: list[Any] = []
        client = env.server.grpc()
        headers = {_GRPC_HEADER: f"Bearer {env.keys[role]}"} if role else None
        client.start_stream(callback=lambda result, error: results.append((result, error)), headers=headers)
        try:
            client.async_stream_infer("mlp", _inputs(grpcclient))
        except InferenceServerException:
            pass  # the stream was refused already: the callback has the error
        client.stop_stream()
        return results

    ((result, error),) = stream("infer")
    assert error is None and result.as_numpy("logits").shape == (1, 10)
    for role, status in ((None, "UNAUTHENTICATED"), ("read", "PERMISSION_DENIED")):
        ((_, error),) = stream(role)
        assert error is not None and status in str(error.status()), error


# -- bad credentials, open health, metrics -------------------------------------------------------


def _bad_credentials(env: Env) -> list[tuple[str, dict[str, str]]]:
    admin = env.keys["admin"]
    key_id = admin.split("_")[1]
    return [
        ("missing", {}),
        ("empty", {"Authorization": ""}),
        ("no scheme", {"Authorization": admin}),
        ("basic", {"Authorization": f"Basic {admin}"}),
        ("bearer alone", {"Authorization": "Bearer"}),
        ("malformed", {"Authorization": "Bearer not-a-key"}),
        ("unknown id", {"Authorization": f"Bearer apk_0123456789ab_{admin.split('_', 2)[2]}"}),
        ("wrong secret", {"Authorization": f"Bearer apk_{key_id}_{'A' * 43}"}),
        ("revoked", env.bearer("revoked")),
        ("expired", env.bearer("expired")),
    ]


def test_bad_credentials_get_401_with_the_same_text_on_both_transports(env: Env):
    texts = set()
    for why, headers in _bad_credentials(env):
        answer = httpx.get(f"{env.server.base}/v2/models/mlp", headers=headers, timeout=30)
        assert answer.status_code == 401, why
        assert answer.headers["www-authenticate"] == "Bearer"
        texts.add(answer.text)
        client = env.server.grpc()
        metadata = {k.lower(): v for k, v in headers.items() if v}  # grpc refuses empty metadata values
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("mlp", headers=metadata)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED", why
        texts.add(f'{{"error":"{info.value.message()}"}}')
    assert texts == {f'{{"error":"{INVALID_CREDENTIALS}"}}'}


def test_health_stays_open(env: Env):
    for path in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(env.server.base + path, timeout=30).status_code == 200, path
    client = env.server.grpc()
    assert client.is_server_live() and client.is_server_ready()
    assert env.server.http().is_server_live() and env.server.http().is_server_ready()


def test_metrics_open_on_loopback_and_count_requests_per_key(env: Env):
    httpx.get(f"{env.server.base}/v2", headers=env.bearer("read"), timeout=30)
    assert httpx.get(f"{env.server.base}/v2", timeout=30).status_code == 401  # counted without a key
    answer = httpx.get(f"{env.server.base}/metrics", timeout=30)  # the test runs on loopback
    assert answer.status_code == 200
    assert 'appliance_auth_requests_total{key="read",result="ok"}' in answer.text
    assert 'appliance_auth_requests_total{key="",result="unauthenticated"}' in answer.text


def test_metrics_with_metrics_access_key_need_a_key(demo_repo: Path, tmp_path: Path, server_factory: Any):
    keys_file = tmp_path / "keys.json"
    reader = create(keys_file, "read", "scraper")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys_file), "--metrics-access", "key")
    assert httpx.get(f"{server.base}/metrics", timeout=30).status_code == 401
    answer = httpx.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {reader}"}, timeout=30)
    assert answer.status_code == 200 and "appliance_auth_requests_total" in answer.text


def test_auth_off_changes_nothing(demo_server: ServerProcess):
    assert httpx.get(f"{demo_server.base}/v2/models/mlp", timeout=30).status_code == 200
    assert "appliance_auth_requests" not in httpx.get(f"{demo_server.base}/metrics", timeout=30).text
    answer = httpx.get(f"{demo_server.base}/v2/audit", timeout=30)
    assert answer.status_code == 400 and "auth" in answer.json()["error"]


# -- the key file changing under a running server ------------------------------------------------


def _poll(check: Callable[[], bool], within_s: float = 3.0) -> float:
    """Seconds until ``check`` holds; a client error (the key not known yet: gRPC raises) is "not yet"."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            if check():
                return time.monotonic() - start
        except InferenceServerException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {within_s} s")


def test_revoked_key_stops_working_without_a_restart(demo_repo: Path, tmp_path: Path, server_factory: Any):
    keys_file = tmp_path / "keys.json"
    key = create(keys_file, "infer", "camera")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys_file))
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{server.base}/v2/models/mlp", headers=headers, timeout=30).status_code == 200
    result = keys_cli("revoke", "camera", "--keys-file", str(keys_file))
    assert result.returncode == 0 and "revoked key 'camera'" in result.stderr
    took = _poll(lambda: httpx.get(f"{server.base}/v2/models/mlp", headers=headers, timeout=30).status_code == 401)
    assert took < 2.0
    with pytest.raises(InferenceServerException, match="invalid or missing credentials"):
        server.grpc().get_model_metadata("mlp", headers={"authorization": f"Bearer {key}"})
    # A key created meanwhile works, also without a restart.
    fresh = {"Authorization": f"Bearer {create(keys_file, 'read', 'dashboard')}"}
    _poll(lambda: httpx.get(f"{server.base}/v2/models/mlp", headers=fresh, timeout=30).status_code == 200)


def test_garbage_key_file_keeps_the_last_good_keys_and_logs_file_and_line(
    demo_repo: Path, tmp_path: Path, server_factory: Any
):
    keys_file = tmp_path / "keys.json"
    key = create(keys_file, "read", "dashboard")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys_file))
    headers = {"Authorization": f"Bearer {key}"}
    keys_file.write_text('{\n  "format": 1,\n  "keys": {\n    garbage\n')
    _poll(
        lambda: f"key file {keys_file}, line 4" in server.log() or not httpx.get(f"{server.base}/v2", headers=headers)
    )
    assert "keeping the last good keys" in server.log()
    assert httpx.get(f"{server.base}/v2/models/mlp", headers=headers, timeout=30).status_code == 200


# -- rate limits ---------------------------------------------------------------------------------


def test_rate_limit_burst_gets_429_with_retry_after_and_other_keys_are_unaffected(env: Env):
    headers = env.bearer("limited")  # 0.2 requests a second, burst 2
    answers = [httpx.get(f"{env.server.base}/v2/models/mlp", headers=headers, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    limited = answers[2]
    assert limited.status_code == 429 and "rate limit" in limited.json()["error"]
    assert int(limited.headers["retry-after"]) >= 1
    assert httpx.get(f"{env.server.base}/v2/models/mlp", headers=env.bearer("infer"), timeout=30).status_code == 200
    with pytest.raises(InferenceServerException) as info:
        env.server.grpc().get_model_metadata("mlp", headers={"authorization": headers["Authorization"]})
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    metrics = httpx.get(f"{env.server.base}/metrics", timeout=30).text
    assert 'appliance_auth_requests_total{key="limited",result="rate_limited"} 2.0' in metrics


# -- appliance keys ------------------------------------------------------------------------------


def test_keys_cli_create_list_revoke(tmp_path: Path):
    keys_file = tmp_path / "etc" / "keys.json"
    key = create(keys_file, "admin", "ops", "--expires", "90d")
    assert key.startswith("apk_") and key not in keys_file.read_text()
    assert os.stat(keys_file).st_mode & 0o777 == 0o600
    result = keys_cli("list", "--keys-file", str(keys_file))
    assert result.returncode == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED", "RATE"]
    assert row.split()[:2] == ["ops", "admin"] and row.split()[4] == "-" and key not in result.stdout
    assert keys_cli("revoke", "ops", "--keys-file", str(keys_file)).returncode == 0
    assert keys_cli("list", "--keys-file", str(keys_file)).stdout.splitlines()[1].split()[4] != "-"
    # The key file is a setting: the environment names it too.
    result = keys_cli("list", env={"APPLIANCE_KEYS_FILE": str(keys_file)})
    assert result.returncode == 0 and "ops" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["create", "--role", "root"], "invalid choice: 'root'"),
        (["create", "--role", "read", "--expires", "soon"], "'soon' is not a duration"),
        (["create", "--role", "read", "--rate", "-1"], "expected a positive number"),
        (["create", "--role", "read", "--name", "a b"], "key name 'a b'"),
        (["revoke", "ghost"], "no key named 'ghost'"),
    ],
)
def test_keys_cli_errors_are_clear(tmp_path: Path, args: list[str], message: str):
    keys_file = tmp_path / "keys.json"
    result = keys_cli(*args, "--keys-file", str(keys_file))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    if args[0] == "revoke":
        assert str(keys_file) in result.stderr


def test_keys_cli_on_a_broken_key_file_names_file_and_line(tmp_path: Path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text('{"format": 1,\n"keys": nope}\n')
    for args in (["list"], ["create", "--role", "read"], ["revoke", "x"]):
        result = keys_cli(*args, "--keys-file", str(keys_file))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"key file {keys_file}, line 2" in result.stderr


def test_grpc_stream_messages_draw_on_the_rate_limit(env: Env):
    key = create(env.keys_file, "infer", "streamer", "--rate", "0.2", "--burst", "3")
    headers = {"authorization": f"Bearer {key}"}
    _poll(lambda: env.server.grpc().is_model_ready("mlp", headers=headers))  # the server has read the new key
    results: list[Any] = []
    client = env.server.grpc()
    client.start_stream(callback=lambda result, error: results.append((result, error)), headers=headers)
    for i in range(4):  # the ready check took a token, the opening and the first message one: two refused
        client.async_stream_infer("mlp", _inputs(grpcclient), request_id=str(i))
    client.stop_stream()
    errors = [error for _, error in results if error is not None]
    assert len(results) == 4 and len(errors) == 2, results
    assert all("rate limit of key 'streamer' exceeded" in str(error.message()) for error in errors)

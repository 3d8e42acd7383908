"""Units of ``core/auth``: the token bucket, the key file, the authenticator following it, roles, the guard."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from appliance.core.auth import keys as keymod
from appliance.core.auth.audit import AuditLog
from appliance.core.auth.authenticator import INVALID_CREDENTIALS, ApiKeys, Authenticator
from appliance.core.auth.guard import Guard
from appliance.core.auth.keys import KeyFileError, create_key, parse_duration, read_keys, revoke_key, split_key
from appliance.core.auth.ratelimit import TokenBucket, default_burst, retry_after
from appliance.core.auth.roles import REQUIRED, Operation, Peer, Role
from appliance.core.errors import PermissionDenied, RateLimited, Unauthenticated
from appliance.settings import MetricsAccess, Settings

LOCAL, REMOTE = Peer("127.0.0.1:5000", True), Peer("10.0.0.9:5000", False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- token bucket --------------------------------------------------------------------------------


def test_bucket_allows_a_burst_then_refills_at_the_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token comes in 1/rate seconds
    assert bucket.take(0.25) == pytest.approx(0.25)  # a refused request takes nothing
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never above the burst
    assert [bucket.take(10.0) for _ in range(3)][-1] > 0


def test_bucket_rejects_bad_parameters_and_retry_after_is_whole_seconds():
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 0, 0.0)
    assert retry_after(0.01) == 1 and retry_after(1.2) == 2
    assert default_burst(0.5) == 1 and default_burst(2.5) == 3


# -- keys ----------------------------------------------------------------------------------------


def test_created_key_is_stored_as_a_hash_only(tmp_path: Path):
    path = tmp_path / "keys.json"
    key, record = create_key(path, Role.INFER, "camera-1", dt.timedelta(days=90), rate=5.0, burst=10)
    assert key.startswith(f"apk_{record.id}_")
    text = path.read_text()
    assert key.split("_", 2)[2] not in text and key not in text
    assert os.stat(path).st_mode & 0o777 == 0o600
    (stored,) = read_keys(path).values()
    assert stored == record and stored.rate == 5.0 and stored.burst == 10
    key_id, secret = split_key(key) or ("", "")
    assert stored.matches(secret) and not stored.matches(secret[:-1] + "x")
    now = dt.datetime.now(dt.UTC)
    assert stored.valid_at(now) and not stored.valid_at(now + dt.timedelta(days=91))


def test_names_are_unique_among_live_keys_and_revoke_by_name(tmp_path: Path):
    path = tmp_path / "keys.json"
    create_key(path, Role.READ, "dash")
    with pytest.raises(ValueError, match="'dash' exists"):
        create_key(path, Role.READ, "dash")
    with pytest.raises(ValueError, match="key name"):
        create_key(path, Role.READ, "no spaces please")
    (revoked,) = revoke_key(path, "dash")
    assert read_keys(path)[revoked.id].revoked is not None
    create_key(path, Role.READ, "dash")  # the name is free again
    with pytest.raises(ValueError, match=f"key file {path}: no key named 'ghost'"):
        revoke_key(path, "ghost")
    _, record = create_key(path, Role.ADMIN)
    assert record.name == f"admin-{record.id}"


@pytest.mark.parametrize(
    "token",
    ["", "apk", "apk_", "apk_xyz_secretsecretsecret", "apk_0123456789ab_short", "key_0123456789ab_" + "s" * 43],
)
def test_split_key_refuses_other_shapes(token: str):
    assert split_key(token) is None


def test_parse_duration():
    assert parse_duration("90d") == dt.timedelta(days=90)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("2w") == dt.timedelta(weeks=2)
    for bad in ("", "90", "d", "0d", "-1d", "1.5h", "3y"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_bad_key_files_name_the_file_and_line(tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text('{\n  "format": 1,\n  "keys": {\n    oops\n')
    with pytest.raises(KeyFileError, match=rf"key file {path}, line 4: not valid JSON") as info:
        read_keys(path)
    assert info.value.line == 4
    path.write_text("[]")
    with pytest.raises(KeyFileError, match="not a key file"):
        read_keys(path)
    _, record = create_key(tmp_path / "good.json", Role.READ, "x")
    doc = json.loads((tmp_path / "good.json").read_text())
    doc["keys"][record.id]["role"] = "root"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(KeyFileError, match=rf"line 4: key '{record.id}': unknown role 'root'"):
        read_keys(path)
    assert read_keys(tmp_path / "absent.json") == {}


# -- the authenticator following the file --------------------------------------------------------


def test_authenticator_answers_every_bad_credential_alike(tmp_path: Path):
    path = tmp_path / "keys.json"
    good, _ = create_key(path, Role.READ, "good")
    old, _ = create_key(path, Role.READ, "old")
    revoke_key(path, "old")
    expired, record = keymod.new_key(
        "expired", Role.READ, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2020, 2, 1, tzinfo=dt.UTC)
    )
    records = read_keys(path)
    records[record.id] = record
    keymod.write_keys(path, records)
    auth = Authenticator([ApiKeys(path)])
    assert auth.authenticate(f"Bearer {good}").name == "good"
    assert auth.authenticate(f"bearer   {good} ").name == "good"
    unknown = "apk_0123456789ab_" + good.split("_", 2)[2]
    wrong_secret = good[:-4] + "AAAA"
    bad = [None, "", "Bearer", "Bearer ", f"Basic {good}", good, "Bearer x.y.z", f"Bearer {unknown}"]
    bad += [f"Bearer {wrong_secret}", f"Bearer {old}", f"Bearer {expired}"]
    for header in bad:
        with pytest.raises(Unauthenticated) as info:
            auth.authenticate(header)
        assert info.value.message == INVALID_CREDENTIALS


def test_key_file_changes_are_followed_and_garbage_keeps_the_last_good_keys(tmp_path: Path, caplog):
    path = tmp_path / "keys.json"
    key, _ = create_key(path, Role.INFER, "app")
    clock = Clock()
    keys = ApiKeys(path, clock)
    auth = Authenticator([keys])
    assert auth.authenticate(f"Bearer {key}").role is Role.INFER
    revoke_key(path, "app")
    assert auth.authenticate(f"Bearer {key}").name == "app"  # not checked again within half a second
    clock.now += 0.6
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {key}")
    second, _ = create_key(path, Role.READ, "second")
    clock.now += 0.6
    assert auth.authenticate(f"Bearer {second}").name == "second"
    path.write_text('{"format": 1,\n"keys": {\n  "abc": [1, 2,,]\n}}\n')
    clock.now += 0.6
    with caplog.at_level(logging.ERROR):
        assert auth.authenticate(f"Bearer {second}").name == "second"
    assert f"key file {path}, line 3" in caplog.text and "keeping the last good keys" in caplog.text
    path.unlink()
    clock.now += 0.6
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {second}")


# -- roles and the guard -------------------------------------------------------------------------


def test_every_operation_has_a_role_and_only_health_is_open():
    assert set(REQUIRED) == set(Operation)
    assert [op for op in Operation if op.required is None] == [Operation.HEALTH]
    assert Role.ADMIN > Role.INFER > Role.READ
    with pytest.raises(ValueError, match="unknown role 'root'"):
        Role.parse("root")


def _guard(tmp_path: Path, **settings: Any) -> tuple[Guard, Clock]:
    clock = Clock()
    s = Settings(auth=True, keys_file=tmp_path / "keys.json", audit_log_file=tmp_path / "audit.jsonl", **settings)
    return Guard(s, clock), clock


def test_guard_roles_rate_limits_audit_and_counts(tmp_path: Path):
    reader, _ = create_key(tmp_path / "keys.json", Role.READ, "reader")
    fast, _ = create_key(tmp_path / "keys.json", Role.INFER, "fast", rate=1.0, burst=2)
    guard, clock = _guard(tmp_path)
    assert guard.admit(f"Bearer {reader}", REMOTE, Operation.MODEL_METADATA).name == "reader"
    with pytest.raises(PermissionDenied):
        guard.admit(f"Bearer {reader}", REMOTE, Operation.INFER)
    with pytest.raises(PermissionDenied):
        guard.admit(f"Bearer {reader}", REMOTE, Operation.REPOSITORY_LOAD, "mlp")
    guard.admit(f"Bearer {fast}", REMOTE, Operation.INFER)
    guard.admit(f"Bearer {fast}", REMOTE, Operation.INFER)
    with pytest.raises(RateLimited) as info:
        guard.admit(f"Bearer {fast}", REMOTE, Operation.INFER)
    assert info.value.retry_after_s == 1
    guard.admit(f"Bearer {reader}", REMOTE, Operation.MODEL_METADATA)  # other keys unaffected
    clock.now += 1.0
    guard.admit(f"Bearer {fast}", REMOTE, Operation.INFER)
    assert guard.admit(None, REMOTE, Operation.HEALTH).name == ""
    counts = {(s.labels["key"], s.labels["result"]): s.value for m in guard.collect() for s in m.samples}
    assert counts == {
        ("reader", "ok"): 2,
        ("reader", "denied"): 2,
        ("fast", "ok"): 3,
        ("fast", "rate_limited"): 1,
    }
    (entry,) = guard.audit.recent(10)  # the refused admin attempt only
    assert entry["key"] == "reader" and entry["action"] == "repository_load" and entry["target"] == "mlp"
    assert entry["source"] == REMOTE.address and entry["result"].startswith("denied")


def test_server_default_rate_limit_applies_to_keys_without_their_own(tmp_path: Path):
    key, _ = create_key(tmp_path / "keys.json", Role.READ, "r")
    guard, _ = _guard(tmp_path, rate_limit_rps=0.5)
    guard.admit(f"Bearer {key}", REMOTE, Operation.MODEL_READY)
    with pytest.raises(RateLimited) as info:
        guard.admit(f"Bearer {key}", REMOTE, Operation.MODEL_READY)
    assert info.value.retry_after_s == 2


def test_admitted_records_the_outcome_of_admin_operations(tmp_path: Path):
    admin, _ = create_key(tmp_path / "keys.json", Role.ADMIN, "ops")
    guard, _ = _guard(tmp_path)
    with guard.admitted(f"Bearer {admin}", LOCAL, Operation.ROUTE_DELETE, "canary"):
        pass
    with pytest.raises(PermissionDenied), guard.admitted(f"Bearer {admin}", LOCAL, Operation.REPOSITORY_LOAD, "x"):
        raise PermissionDenied("nope")
    with guard.admitted(f"Bearer {admin}", LOCAL, Operation.INFER, "mlp"):
        pass  # not an admin operation: not audited
    with pytest.raises(Unauthenticated):
        guard.admit("Bearer nonsense", LOCAL, Operation.ROUTE_DECLARE, "canary")
    results = [(e["key"], e["action"], e["result"]) for e in guard.audit.recent(10)]
    assert results == [
        ("ops", "route_delete", "ok"),
        ("ops", "repository_load", "error: nope"),
        ("", "route_declare", f"unauthenticated: {INVALID_CREDENTIALS}"),
    ]


@pytest.mark.parametrize(
    "access, peer, open_",
    [
        (MetricsAccess.OPEN, REMOTE, True),
        (MetricsAccess.LOOPBACK, LOCAL, True),
        (MetricsAccess.LOOPBACK, REMOTE, False),
        (MetricsAccess.KEY, LOCAL, False),
    ],
)
def test_metrics_access(tmp_path: Path, access: MetricsAccess, peer: Peer, open_: bool):
    reader, _ = create_key(tmp_path / "keys.json", Role.READ, "reader")
    guard, _ = _guard(tmp_path, metrics_access=access)
    if open_:
        guard.admit(None, peer, Operation.METRICS)
    else:
        with pytest.raises(Unauthenticated):
            guard.admit(None, peer, Operation.METRICS)
    assert guard.admit(f"Bearer {reader}", peer, Operation.METRICS) is not None


# -- audit log -----------------------------------------------------------------------------------


def test_audit_log_rotates_and_reads_back_across_the_rotation(tmp_path: Path):
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path, max_bytes=1000)
    for i in range(20):
        log.record("ops", "127.0.0.1:1", "route_delete", f"r{i}", "ok")
    rotated = path.with_name("audit.jsonl.1")
    assert rotated.exists() and path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    assert os.stat(path).st_mode & 0o777 == 0o600
    recent = log.recent(5)
    assert [e["target"] for e in recent] == ["r15", "r16", "r17", "r18", "r19"]
    everything = log.recent(1000)
    assert everything[-1]["target"] == "r19" and len(everything) < 20  # the oldest were dropped
    targets = [int(e["target"][1:]) for e in everything]
    assert targets == sorted(targets)


def test_audit_log_without_a_file_keeps_recent_entries_in_memory():
    log = AuditLog(None, 1)
    for i in range(3):
        log.record("ops", "", "repository_load", f"m{i}", "ok")
    assert [e["target"] for e in log.recent(2)] == ["m1", "m2"]
    assert log.recent(0) == []


def test_rate_limited_admin_attempts_are_audited(tmp_path: Path):
    admin, _ = create_key(tmp_path / "keys.json", Role.ADMIN, "ops", rate=1.0, burst=1)
    guard, _ = _guard(tmp_path)
    guard.admit(f"Bearer {admin}", LOCAL, Operation.REPOSITORY_LOAD, "mlp")
    with pytest.raises(RateLimited):
        guard.admit(f"Bearer {admin}", LOCAL, Operation.REPOSITORY_LOAD, "mlp")
    (entry,) = guard.audit.recent(10)
    assert entry["result"] == "rate_limited: rate limit of key 'ops' exceeded"

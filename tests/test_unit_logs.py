"""The appliance's systemd units as the panel sees them: their journal (``GET /v2/logs?unit=``), read by the real
``journalctl`` from real journal files (written by systemd's own journal-remote), and their state (``GET
/v2/units``, from ``systemctl show``). No test machine runs systemd as PID 1, so the states of running units are
read from a FAKE systemctl that prints what systemd 252 prints; on this machine the real systemctl is asked too,
and its refusal must reach the panel as a message, not a failure."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.systemd.journal import Journal, parse_entries
from appliance.systemd.units import Units, parse_show
from tests.support.autoscaler import create_key
from tests.support.journal import write_journal

T0 = 1_764_770_000  # 2025-12-03, seconds since the epoch


def _entry(seconds: float, unit: str, priority: int, message: str | bytes, pid: str = "411") -> dict[str, str | bytes]:
    return {
        "__REALTIME_TIMESTAMP": str(int(seconds * 1e6)),
        "_SYSTEMD_UNIT": unit,
        "SYSLOG_IDENTIFIER": unit.removesuffix(".service"),
        "_PID": pid,
        "PRIORITY": str(priority),
        "MESSAGE": message,
    }


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    entries = [
        _entry(T0 + 1, "nginx.service", 6, "start worker processes"),
        _entry(T0 + 2, "tritonserver.service", 6, "Started GRPCInferenceService at 127.0.0.1:8101"),
        _entry(T0 + 3, "nginx.service", 4, "upstream timed out while reading model mlp"),
        _entry(T0 + 4, "nginx.service", 3, "connect() failed (111: Connection refused)"),
        _entry(T0 + 5, "appliance.service", 2, "Traceback (most recent call last):\n  File x\nMemoryError"),
        _entry(T0 + 6, "nginx.service", 6, "reloading", pid=""),
    ]
    return write_journal(tmp_path / "FAKE-device-journal", entries)


def test_a_units_journal_read_by_journalctl(journal_dir: Path) -> None:
    journal = Journal(journal_dir)

    def read(unit: str, level: str = "INFO", contains: str = "", since: float = 0.0, limit: int = 100) -> list[Any]:
        return asyncio.run(journal.recent(unit, level, contains, since, limit))

    nginx = read("nginx.service")
    assert [line.text.split(": ", 1)[1] for line in nginx] == [
        "start worker processes",
        "upstream timed out while reading model mlp",
        "connect() failed (111: Connection refused)",
        "reloading",
    ]
    assert [line.level for line in nginx] == ["INFO", "WARNING", "ERROR", "INFO"]
    assert nginx[0].time == T0 + 1 and nginx[0].unit == "nginx.service" and " nginx[411]: " in nginx[0].text
    assert " nginx: reloading" in nginx[3].text  # no PID, no brackets
    # the level and above, like journalctl -p; newest last; the limit keeps the newest
    assert [line.level for line in read("nginx.service", "WARNING")] == ["WARNING", "ERROR"]
    newest = read("nginx.service", limit=2)
    assert [line.text.rsplit(": ", 1)[1] for line in newest] == ["Connection refused)", "reloading"]
    assert [line.text.rsplit(" ", 1)[1] for line in read("nginx.service", contains="MODEL MLP")] == ["mlp"]
    assert [line.text.rsplit(" ", 1)[1] for line in read("nginx.service", since=T0 + 3.5)] == ["refused)", "reloading"]
    # a message with a newline comes from journalctl as an array of bytes: read as text all the same
    crash = read("appliance.service", "ERROR")
    assert len(crash) == 1 and crash[0].level == "CRITICAL" and crash[0].text.endswith("File x\nMemoryError")
    assert read("appliance-autoscaler.service") == []


def test_journal_entries_that_are_odd() -> None:
    lines = parse_entries(
        b'{"__REALTIME_TIMESTAMP": "1764770000000000", "MESSAGE": null, "PRIORITY": "9"}\n'
        b"not json\n[1, 2]\n"
        b'{"MESSAGE": [104, 105, 255], "UNIT": "x.service"}\n'
    )
    assert [(line.level, line.unit, line.text.split(": ", 1)[1]) for line in lines] == [
        ("INFO", "journal", ""),  # a field too large for journalctl is null; an unknown priority reads as INFO
        ("INFO", "x.service", "hi\ufffd"),  # bytes that are not UTF-8
    ]


def test_a_journal_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    from appliance.systemd.journal import JournalError

    with pytest.raises(JournalError, match=r"cannot read the journal of nginx.service: .*No such file"):
        asyncio.run(Journal(tmp_path / "missing").recent("nginx.service", "INFO", "", 0.0, 10))
    with pytest.raises(JournalError, match=r"cannot run /nonexistent/journalctl: No such file"):
        asyncio.run(Journal(None, "/nonexistent/journalctl").recent("nginx.service", "INFO", "", 0.0, 10))


# What `systemctl show --timestamp=unix -p <PROPERTIES> -- appliance.service nginx.service nope.service` prints on
# systemd 252 (Debian 12): one block per unit, in the order asked.
SHOW = """\
Id=appliance.service
Description=ML Inference Appliance inference service (KServe v2 REST and gRPC)
LoadState=loaded
ActiveState=active
SubState=running
Result=success
UnitFileState=enabled
NRestarts=2
ActiveEnterTimestamp=@1764770100
StateChangeTimestamp=@1764770100
MemoryCurrent=734003200

Id=nginx.service
Description=A high performance web server and a reverse proxy server
LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
UnitFileState=enabled
NRestarts=0
ActiveEnterTimestamp=
StateChangeTimestamp=@1764770200
MemoryCurrent=[not set]

Id=nope.service
Description=nope.service
LoadState=not-found
ActiveState=inactive
SubState=dead
Result=success
UnitFileState=
NRestarts=0
ActiveEnterTimestamp=
StateChangeTimestamp=
MemoryCurrent=18446744073709551615
"""


def test_systemctl_show_parsed() -> None:
    appliance, nginx, nope = parse_show(SHOW, ["appliance.service", "nginx.service", "nope.service"])
    assert appliance.to_json() == {
        "name": "appliance.service",
        "description": "ML Inference Appliance inference service (KServe v2 REST and gRPC)",
        "load": "loaded",
        "active": "active",
        "sub": "running",
        "result": "success",
        "enabled": "enabled",
        "restarts": 2,
        "since": 1764770100.0,
        "memory_bytes": 734003200,
    }
    assert (nginx.active, nginx.result, nginx.since, nginx.memory_bytes) == ("failed", "exit-code", 1764770200.0, None)
    assert (nope.load, nope.since, nope.memory_bytes, nope.enabled) == ("not-found", None, None, "")
    # a unit systemd said nothing about is unknown, not someone else's state
    (missing,) = parse_show("", ["gone.service"])
    assert (missing.load, missing.active) == ("unknown", "unknown")


def _fake_systemctl(tmp_path: Path, output: str, status: int = 0, stderr: str = "") -> tuple[Path, Path]:
    """A FAKE systemctl (no systemd manager runs on a test machine): prints ``output`` and records its calls."""
    calls = tmp_path / "FAKE-systemctl.calls"
    script = tmp_path / "FAKE-systemctl"
    (tmp_path / "FAKE-systemctl.out").write_text(output)
    (tmp_path / "FAKE-systemctl.err").write_text(stderr)
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f"cat {tmp_path / 'FAKE-systemctl.out'}\n"
        f"cat {tmp_path / 'FAKE-systemctl.err'} >&2\n"
        f"exit {status}\n"
    )
    script.chmod(0o755)
    return script, calls


def test_unit_states_are_read_once_for_many_panels(tmp_path: Path) -> None:
    script, calls = _fake_systemctl(tmp_path, SHOW)
    names = ["appliance.service", "nginx.service", "nope.service"]
    units = Units(names, str(script))

    async def many() -> list[Any]:
        return await asyncio.gather(*(units.report() for _ in range(5)))

    reports = asyncio.run(many())
    assert all(r is reports[0] for r in reports) and reports[0].error == ""
    assert [u.active for u in reports[0].units] == ["active", "failed", "inactive"]
    # one call for five panels, asking for exactly the configured units and properties
    (call,) = calls.read_text().splitlines()
    assert call.startswith("show --timestamp=unix --no-pager -p Id,Description,LoadState,ActiveState,")
    assert call.endswith("-- appliance.service nginx.service nope.service")


def test_unit_states_without_systemd_say_why(tmp_path: Path) -> None:
    script, _ = _fake_systemctl(tmp_path, "", 1, "System has not been booted with systemd as init system (PID 1).")
    report = asyncio.run(Units(["appliance.service"], str(script)).report())
    assert report.error == "systemd is not reachable: System has not been booted with systemd as init system (PID 1)."
    assert [(u.name, u.active) for u in report.units] == [("appliance.service", "unknown")]
    # in a chroot, systemctl ignores "show", says so on stderr, and exits 0 (a fresh Debian root does this)
    script, _ = _fake_systemctl(tmp_path, "", 0, "Running in chroot, ignoring command 'show'")
    report = asyncio.run(Units(["appliance.service"], str(script)).report())
    assert report.error == "systemd is not reachable: Running in chroot, ignoring command 'show'"
    report = asyncio.run(Units(["appliance.service"], "/nonexistent/systemctl").report())
    assert report.error == "cannot run /nonexistent/systemctl: No such file or directory"


def test_units_and_their_logs_through_the_service(
    tmp_path: Path, demo_repo: Path, server_factory: Any, journal_dir: Path
) -> None:
    keys = tmp_path / "keys.json"
    admin, read = create_key(keys, "admin"), create_key(keys, "read")
    server = server_factory(
        demo_repo,
        *("--auth", "true", "--keys-file", str(keys)),
        env={"APPLIANCE_JOURNAL_DIRECTORY": str(journal_dir)},
    )
    as_admin = {"Authorization": f"Bearer {admin}"}
    as_read = {"Authorization": f"Bearer {read}"}
    with httpx.Client(base_url=server.base, timeout=60) as client:
        # the state of the units: a read key may see it; what it says depends on whether this machine runs systemd
        units = client.get("/v2/units", headers=as_read)
        assert units.status_code == 200, units.text
        doc = units.json()
        names = [u["name"] for u in doc["units"]]
        assert names[:2] == ["appliance.service", "tritonserver.service"] and "nginx.service" in names
        if Path("/run/systemd/system").is_dir():  # booted with systemd: the real states (none of ours installed)
            assert doc["error"] == "" and {u["load"] for u in doc["units"]} <= {"not-found", "loaded", "masked"}
        else:
            assert doc["error"].startswith("systemd is not reachable: ") or doc["error"].startswith("cannot run")
            assert {u["active"] for u in doc["units"]} == {"unknown"}
        assert client.get("/v2/units").status_code == 401

        # a unit's journal: the admin only, and only the appliance's units
        logs = client.get("/v2/logs", params={"unit": "nginx.service", "level": "WARNING"}, headers=as_admin)
        assert logs.status_code == 200, logs.text
        assert [line["level"] for line in logs.json()["lines"]] == ["WARNING", "ERROR"]
        assert logs.json()["error"] == ""
        refused = client.get("/v2/logs", params={"unit": "ssh.service"}, headers=as_admin)
        assert refused.status_code == 400
        assert "'unit' must be one of the appliance's units: appliance.service, " in refused.json()["error"]
        assert client.get("/v2/logs", params={"unit": "nginx.service"}, headers=as_read).status_code == 403
        # the service's own lines, as before, when no unit is named
        own = client.get("/v2/logs", params={"contains": "model 'mlp' loaded"}, headers=as_admin).json()
        assert own["lines"] and own["error"] == ""

        # the support bundle holds the units' state and their journals
        bundle = client.get("/v2/support/bundle", headers=as_admin)
        assert bundle.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(bundle.content), mode="r:gz") as tar:
        files = {m.name.removeprefix("appliance-support/"): tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert b'"name": "nginx.service"' in files["units.json"]
    assert b"connect() failed (111: Connection refused)" in files["logs/nginx.service.log"]
    assert b"Started GRPCInferenceService" in files["logs/tritonserver.service.log"]
    assert "logs/appliance-autoscaler.service.log" not in files  # nothing in its journal: no empty file

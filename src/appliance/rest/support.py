"""``GET /v2/support/bundle``: one archive a field engineer downloads and sends on, and ``GET /v2/settings``: the
settings the service runs with. No secret goes out: settings with the Redis password masked, key and secret
files by their paths only (never their contents), and no request payloads.

The archive (``.tar.gz``) holds ``settings.json``, ``server.json``, ``statistics.json``, ``routes.json``,
``autoscaler.json``, ``history.json``, ``events.json``, ``audit.json`` (the newest entries: who did what, by key
name), ``device.json`` (with device telemetry on), ``logs/service.log`` (the service's newest log lines), and
``repository/``: the index, each model's ``config.pbtxt`` and the TensorRT engine manifests (``*.plan.json``).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from starlette.responses import Response

from ..core.dataplane import DataPlane
from ..core.errors import InvalidArgument
from ..core.logbuffer import LEVELS, RecentLogs
from ..device.metrics import DeviceMetrics
from ..systemd.journal import Journal, JournalError
from ..systemd.units import Units
from .encode import model_statistics_json, repository_index_json, server_metadata_json

MAX_FILE_BYTES = 1024 * 1024  # a config or manifest larger than this is cut (and says so)
AUDIT_ENTRIES = 1000
JOURNAL_LINES = 2000  # of each unit, in the bundle


class SupportEndpoint:
    def __init__(self, dataplane: DataPlane, device: DeviceMetrics | None, logs: RecentLogs | None) -> None:
        self._dp, self._device, self._logs = dataplane, device, logs
        self.units = Units(dataplane.settings.systemd_units)
        self.journal = Journal(dataplane.settings.journal_directory)

    async def unit_states(self) -> dict[str, Any]:
        """The state of the appliance's systemd units (``systemd_units``), or why systemd cannot say."""
        return (await self.units.report()).to_json()

    async def logs(
        self, level: str = "INFO", contains: str = "", since: str = "", limit: str = "500", unit: str = ""
    ) -> dict[str, Any]:
        """The newest log lines (``?level=WARNING``, ``?contains=mlp``, ``?since=EPOCH``, ``?limit=N``), oldest
        first: the service's own, or with ``?unit=nginx.service`` that unit's journal (one of ``systemd_units``).
        What the panel's Logs page tails."""
        level = level.upper()
        if level not in LEVELS:
            raise InvalidArgument(f"'level' must be one of {', '.join(LEVELS)}, got '{level[:16]}'")
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 5):
            raise InvalidArgument(f"'limit' must be a whole number up to 99999, got '{limit[:32]}'")
        try:
            after = float(since) if since else 0.0
        except ValueError:
            raise InvalidArgument(f"'since' must be seconds since the epoch, got '{since[:32]}'") from None
        if unit:
            if unit not in self.units.names:
                names = ", ".join(self.units.names) or "none (systemd_units is empty)"
                raise InvalidArgument(f"'unit' must be one of the appliance's units: {names}; got '{unit[:64]}'")
            try:
                read = await self.journal.recent(unit, level, contains[:200], after, int(limit))
            except JournalError as exc:
                return {"lines": [], "error": str(exc)}
            return {"lines": [line.to_json() for line in read], "error": ""}
        lines = self._logs.recent(level, contains[:200], after, int(limit)) if self._logs is not None else []
        return {"lines": [line.to_json() for line in lines], "error": ""}

    async def settings(self) -> dict[str, Any]:
        """The effective settings, secrets masked."""
        return self._dp.settings.effective()

    async def bundle(self) -> Response:
        dp = self._dp
        members: dict[str, bytes] = {}

        def put(name: str, doc: Any) -> None:
            members[name] = json.dumps(doc, indent=2, default=str).encode()

        put("settings.json", dp.settings.effective())
        put("server.json", server_metadata_json(dp.server_metadata()))
        put("statistics.json", model_statistics_json(dp.model_statistics()))
        put("routes.json", {"routes": dp.routes.reports()})
        put("autoscaler.json", {"decisions": dp.autoscaler.recent(1000)})
        put("history.json", dp.history.to_json())
        put("events.json", {"events": dp.events.recent(5000)})
        audit = dp.guard.audit.recent(AUDIT_ENTRIES) if dp.guard is not None else []
        put("audit.json", {"entries": audit, "note": "" if dp.guard is not None else "auth is off: no audit log"})
        if self._device is not None:
            put("device.json", self._device.sample().to_json())
        lines = self._logs.lines() if self._logs is not None else []
        members["logs/service.log"] = ("\n".join(lines) + "\n").encode()
        units = await self.units.report()
        put("units.json", units.to_json())
        absent = {u.name for u in units.units if u.load == "not-found"}
        for name in self.units.names:
            if name in absent:
                continue
            try:
                read = await self.journal.recent(name, "DEBUG", "", 0.0, JOURNAL_LINES)
            except JournalError as exc:
                members[f"logs/{name}.log"] = f"({exc})\n".encode()
                continue
            if read:
                members[f"logs/{name}.log"] = ("\n".join(line.text for line in read) + "\n").encode()
        put("repository/index.json", repository_index_json(dp.repository_index()))
        root = dp.settings.model_repository
        for name in dp.repository.names_on_disk():
            for path in [root / name / "config.pbtxt", *sorted((root / name).glob("*/*.plan.json"))]:
                if path.is_file():
                    members[f"repository/{path.relative_to(root)}"] = _read(path)
        return Response(
            _archive(members),
            media_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{_filename(dp)}"'},
        )


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return f"(not readable: {exc.strerror or exc})\n".encode()
    return data if len(data) <= MAX_FILE_BYTES else data[:MAX_FILE_BYTES] + b"\n(cut at 1 MiB)\n"


def _archive(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"appliance-support/{name}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _filename(dp: DataPlane) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    build = "".join(c for c in dp.build_id if c.isalnum() or c in "-._")[:40]
    return f"appliance-support-{build + '-' if build else ''}{stamp}.tar.gz"

"""The journal of the appliance's units, read with ``journalctl -o json`` (the panel's Logs page, by unit).

Reading the system journal takes the ``systemd-journal`` group, which ``appliance.service`` has; ``directory``
reads journal files from a folder instead (one copied off a device). A line's JSON is that of the service's own
log lines (``GET /v2/logs``), so the panel shows both the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 5.0
SCAN_LINES = 5000  # with a text filter, how far back journalctl reads to find ``limit`` matching lines
#: The fields read (journalctl adds the timestamps and the cursor): a fraction of an entry's size.
FIELDS = "MESSAGE,PRIORITY,_PID,SYSLOG_IDENTIFIER,_SYSTEMD_UNIT,UNIT"
#: The service's level names and the syslog priority each stands for (journalctl -p shows it and above).
PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
_LEVEL_OF = {0: "CRITICAL", 1: "CRITICAL", 2: "CRITICAL", 3: "ERROR", 4: "WARNING", 5: "INFO", 6: "INFO", 7: "DEBUG"}


@dataclass(frozen=True, slots=True)
class JournalLine:
    time: float  # seconds since the epoch
    level: str  # the service's level names (:data:`PRIORITIES`)
    unit: str
    text: str  # "2026-12-03 15:22:01 nginx[411]: message"

    def to_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "level": self.level, "logger": self.unit, "text": self.text}


class JournalError(RuntimeError):
    """journalctl could not be run or refused: the message says why (for the panel to show)."""


def _text(value: Any) -> str:
    """A field as journalctl's JSON writes it: a string, an array of byte values (not UTF-8 or with control
    characters), or null (too large)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode(errors="replace")
    return ""


def parse_entries(output: bytes) -> list[JournalLine]:
    """``journalctl -o json``: one JSON object per line."""
    lines = []
    for raw in output.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        stamp = _text(entry.get("__REALTIME_TIMESTAMP"))
        when = int(stamp) / 1e6 if stamp.isdigit() else 0.0
        priority = _text(entry.get("PRIORITY"))
        level = _LEVEL_OF.get(int(priority), "INFO") if priority.isdigit() else "INFO"
        unit = _text(entry.get("_SYSTEMD_UNIT")) or _text(entry.get("UNIT"))
        ident = _text(entry.get("SYSLOG_IDENTIFIER")) or unit or "journal"
        pid = _text(entry.get("_PID"))
        source = f"{ident}[{pid}]" if pid else ident
        stamp_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        message = _text(entry.get("MESSAGE"))
        lines.append(JournalLine(when, level, unit or ident, f"{stamp_text} {source}: {message}"))
    return lines


class Journal:
    """Reads the newest lines of one unit's journal."""

    def __init__(self, directory: Path | None = None, journalctl: str = "journalctl") -> None:
        self._directory = directory
        self._journalctl = journalctl

    def argv(self, unit: str, level: str, since: float, count: int) -> list[str]:
        argv = [self._journalctl, "--no-pager", "-o", "json", f"--output-fields={FIELDS}", "-q", "-u", unit]
        argv += ["-p", str(PRIORITIES[level])]
        argv += ["-n", str(count)]
        if since > 0:
            argv += ["--since", f"@{since:.6f}"]
        if self._directory is not None:
            argv += ["--directory", str(self._directory)]
        return argv

    async def recent(self, unit: str, level: str, contains: str, since: float, limit: int) -> list[JournalLine]:
        """The newest ``limit`` lines of ``unit`` at ``level`` or above, after ``since`` (seconds since the epoch,
        0: any), that contain ``contains`` (any case); oldest first. Raises :class:`JournalError`."""
        count = SCAN_LINES if contains else limit
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(unit, level, since, count), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise JournalError(f"cannot run {self._journalctl}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise JournalError(f"journalctl gave no answer in {TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            why = err.decode(errors="replace").strip().splitlines()
            raise JournalError(f"cannot read the journal of {unit}: {why[0] if why else f'exit {proc.returncode}'}")
        lines = parse_entries(out)
        if contains:
            needle = contains.lower()
            lines = [line for line in lines if needle in line.text.lower()]
        return lines[-limit:] if limit else []

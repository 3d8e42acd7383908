"""The audit log: every admin action and every refused admin attempt.

Each entry is one JSON object (time, key, source, action, target, result) written to the ``appliance.audit``
logger at INFO (journald keeps the process's stderr) and appended as a line to ``audit_log_file`` when one is
set, rotated to ``<file>.1`` past ``audit_log_max_bytes``. :meth:`AuditLog.recent` reads the newest entries back
for ``GET /v2/audit``: from the file (and its ``.1``) when there is one, else from the last 1000 kept in memory.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..files import owner_for

log = logging.getLogger("appliance.audit")

#: Entries kept in memory when there is no file, and the most ``recent`` returns.
MAX_RECENT = 1000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: str  # ISO 8601, UTC
    key: str  # the principal's name; "" without valid credentials
    source: str  # the client's address
    action: str  # an Operation's value
    target: str  # the model, route or key acted on
    result: str  # "ok", "denied: ...", or the error's text


class AuditLog:
    def __init__(self, path: Path | None, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._memory: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECENT)

    def record(self, key: str, source: str, action: str, target: str, result: str) -> AuditEntry:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        entry = AuditEntry(now, key, source, action, target, result)
        doc = asdict(entry)
        line = json.dumps(doc, ensure_ascii=False)
        log.info("%s", line)
        if self.path is None:
            self._memory.append(doc)
        else:
            try:
                self._append(line)
            except OSError as exc:
                log.error("audit log file %s: %s (entry kept in the journal only)", self.path, exc.strerror or exc)
        return entry

    def _append(self, line: str) -> None:
        assert self.path is not None
        data = (line + "\n").encode()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if size and size + len(data) > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            size = 0
        # Root (``appliance keys`` on the device) making the file gives it to the folder's owner (core/files.py).
        owner = owner_for(self.path) if size == 0 else None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if owner is not None and os.fstat(fd).st_uid != owner[0]:
                os.fchown(fd, *owner)
            os.write(fd, data)
        finally:
            os.close(fd)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries (at most :data:`MAX_RECENT`), oldest first."""
        limit = max(0, min(limit, MAX_RECENT))
        if limit == 0:
            return []
        if self.path is None:
            return list(self._memory)[-limit:]
        entries: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            entries = _tail(path, limit - len(entries)) + entries
            if len(entries) >= limit:
                break
        return entries


def _tail(path: Path, count: int, block: int = 64 * 1024) -> list[dict[str, Any]]:
    """The last ``count`` parsable JSON lines of a file, read from its end."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= count:
                step = min(block, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except OSError:
        return []
    lines = data.splitlines()
    if position > 0:
        lines = lines[1:]  # the first may be cut
    out = []
    for raw in lines[-count:] if count else []:
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out

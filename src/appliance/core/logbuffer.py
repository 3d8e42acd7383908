"""The service's own recent log lines, kept in memory for the support bundle (the journal has them too, but a
field engineer's download must not need a shell)."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

KEEP = 2000
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float  # seconds since the epoch
    level: str
    logger: str
    text: str  # the formatted line, as the journal has it

    def to_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "level": self.level, "logger": self.logger, "text": self.text}


class RecentLogs(logging.Handler):
    """A handler that keeps the newest :data:`KEEP` formatted records."""

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: deque[LogLine] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(LogLine(record.created, record.levelname, record.name, self.format(record)))
        except Exception:  # noqa: BLE001 - a log line that cannot be formatted is not worth failing for
            self.handleError(record)

    def lines(self) -> list[str]:
        return [line.text for line in self._lines]

    def recent(self, level: str = "INFO", contains: str = "", since: float = 0.0, limit: int = 500) -> list[LogLine]:
        """The newest ``limit`` lines at ``level`` or above, after ``since``, holding ``contains`` (a model's name,
        a word; case-insensitive), oldest first. ``level`` must be one of :data:`LEVELS`."""
        floor = LEVELS.index(level)
        needle = contains.lower()
        found = [
            line
            for line in self._lines
            if line.time > since
            and (line.level not in LEVELS or LEVELS.index(line.level) >= floor)
            and (not needle or needle in line.text.lower())
        ]
        return found[-limit:] if limit > 0 else []

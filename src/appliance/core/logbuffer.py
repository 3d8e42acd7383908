"""The service's own recent log lines, kept in memory for the support bundle (the journal has them too, but a
field engineer's download must not need a shell)."""

from __future__ import annotations

import logging
from collections import deque

KEEP = 2000


class RecentLogs(logging.Handler):
    """A handler that keeps the newest :data:`KEEP` formatted records."""

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a log line that cannot be formatted is not worth failing for
            self.handleError(record)

    def lines(self) -> list[str]:
        return list(self._lines)

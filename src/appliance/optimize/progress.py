"""Build progress from TensorRT's ``IProgressMonitor`` events, as a bar on a terminal or lines for the journal.

:mod:`.builder` forwards ``phase_start``/``step_complete``/``phase_finish`` here. On a terminal one line is
redrawn; otherwise (a systemd unit, whose stdout is the journal) a line is printed per top-level phase at its
start and end, and every 25% of its steps, so a minutes-long build shows it is alive without flooding the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self, stream: TextIO, prefix: str = "", tty: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.prefix = prefix
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self._lock = threading.Lock()  # TensorRT calls a monitor from several threads
        self._phases: dict[str, tuple[str | None, int, float]] = {}  # name -> (parent, steps, start)
        self._reported: dict[str, int] = {}
        self.cancelled = False

    def line(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.prefix + text)
        else:
            self.stream.write(self.prefix + text + "\n")
        self.stream.flush()

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self._phases[phase] = (parent, max(1, steps), self.clock())
            self._reported[phase] = 0
            if parent is None and not self.tty:
                self._write(f"{phase}: started ({steps} steps)")

    def step_complete(self, phase: str, step: int) -> bool:
        """Returns False to ask TensorRT to cancel the build."""
        with self._lock:
            parent, steps, _ = self._phases.get(phase, (None, 1, 0.0))
            done = min(steps, step + 1)
            if self.tty:
                bar = "#" * (20 * done // steps)
                self._write(f"{phase} [{bar:<20}] {done}/{steps}")
            elif parent is None:
                quarter = 4 * done // steps
                if quarter > self._reported.get(phase, 0) and done < steps:
                    self._reported[phase] = quarter
                    self._write(f"{phase}: {100 * done // steps}% ({done}/{steps})")
            return not self.cancelled

    def phase_finish(self, phase: str) -> None:
        with self._lock:
            parent, _, start = self._phases.pop(phase, (None, 1, None))
            self._reported.pop(phase, None)
            if parent is None:
                took = f" in {self.clock() - start:.1f} s" if start is not None else ""
                self._write(f"{phase}: done{took}")
                if self.tty:
                    self.stream.write("\n")
                    self.stream.flush()

"""Small text files under a root (``/`` on a device, a fake tree in tests), read without raising."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class Files:
    """Reads sysfs / procfs files under ``root``. A file that is missing, unreadable or not a number reads as
    None; each such problem is logged once per file (sysfs files come and go, and a scrape every few seconds must
    not flood the journal)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reported: set[tuple[Path, str]] = set()

    def path(self, relative: str) -> Path:
        return self.root / relative.lstrip("/")

    def text(self, path: Path, *, missing_ok: bool = False) -> str | None:
        try:
            return path.read_bytes().rstrip(b"\x00\n ").decode("utf-8", "replace").strip()
        except FileNotFoundError:
            if not missing_ok:
                self._once(path, "missing", "%s: missing; its metric is left out", path)
            return None
        except OSError as exc:  # permission (debugfs for an unprivileged service), EIO from a sleeping device
            self._once(path, "unreadable", "%s: %s; its metric is left out", path, exc.strerror or exc)
            return None

    def number(self, path: Path, *, missing_ok: bool = False) -> float | None:
        text = self.text(path, missing_ok=missing_ok)
        if text is None:
            return None
        try:
            return float(text.split()[0])
        except (ValueError, IndexError):
            self._once(path, "garbage", "%s: %r is not a number; its metric is left out", path, text[:40])
            return None

    def _once(self, path: Path, kind: str, message: str, *args: object) -> None:
        if (path, kind) not in self._reported:
            self._reported.add((path, kind))
            log.warning(message, *args)

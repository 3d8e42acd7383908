"""Real journal files for tests: entries in systemd's journal export format, written into a folder by
``systemd-journal-remote`` (Debian's ``systemd-journal-remote``), then read by the real ``journalctl
--directory``, as the service reads a device's journal."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"


def _field(key: str, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if b"\n" in data or not data.isascii() or isinstance(value, bytes):
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"  # the binary form
    return key.encode() + b"=" + data + b"\n"


def write_journal(folder: Path, entries: list[dict[str, str | bytes]]) -> Path:
    """Write ``entries`` (each with ``__REALTIME_TIMESTAMP`` in microseconds) as journal files in ``folder``."""
    if not Path(JOURNAL_REMOTE).exists() and not shutil.which("systemd-journal-remote"):
        raise RuntimeError(f"{JOURNAL_REMOTE} is missing: install Debian's systemd-journal-remote (setup.sh test)")
    folder.mkdir(parents=True, exist_ok=True)
    stream = b""
    for entry in entries:
        fields = {"_BOOT_ID": BOOT_ID, "_MACHINE_ID": BOOT_ID, "_HOSTNAME": "FAKE-device", **entry}
        stream += b"".join(_field(k, v) for k, v in fields.items()) + b"\n"
    subprocess.run(
        [JOURNAL_REMOTE, "-o", str(folder / "remote.journal"), "-"],
        input=stream,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder

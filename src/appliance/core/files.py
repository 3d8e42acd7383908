"""Files the server keeps for itself (the routes, the API keys, the audit log): written whole or not at all, and
owned by the service even when root writes them.

``appliance keys create`` runs as root on the device while ``appliance.service`` runs as its own user and must
read and write the same files; so whatever root writes here keeps the owner of the file it replaces, or takes the
owner of its folder (the service's state directory) when it makes a new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def owner_for(path: Path) -> tuple[int, int] | None:
    """The (uid, gid) a file written at ``path`` should have when this process is root and would otherwise leave
    it owned by root: the owner of the file it replaces, else that of its folder. None when there is nothing to
    change (not root, or the owner is root anyway)."""
    if os.geteuid() != 0:
        return None
    for candidate in (path, path.parent):
        try:
            st = os.stat(candidate)
        except FileNotFoundError:
            continue
        return None if st.st_uid == 0 and st.st_gid == 0 else (st.st_uid, st.st_gid)
    return None


def write_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text``, atomically and durably: a temporary file beside it (mode 0600, from
    mkstemp), flushed and fsynced, renamed over the old one, and the folder fsynced; so the file is always the
    old or the new content, never half of one, even after a power cut. Written by root, the file keeps its owner
    (:func:`owner_for`). ``mode``: other permissions than 0600 (a record others may read). OSError when it cannot
    be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = owner_for(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path)


def create_secret(path: Path, text: str) -> None:
    """Write a secret to a new file readable by its writer alone (mode 0600, owned by whoever writes it, root on
    the device): created exclusively, so an existing file is never overwritten (FileExistsError), and fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_folder(path)


def _fsync_folder(path: Path) -> None:
    """Make the new name of ``path`` durable: fsync its folder."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)

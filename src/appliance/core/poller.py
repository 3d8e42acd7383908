"""POLL model-control mode: follow the model repository on disk, as ``tritonserver --model-control-mode poll``.

Every ``interval_s`` the poller takes a snapshot of each model folder (every file's path, size, mtime and
inode, every folder's path; names starting with ``.`` are left out) and compares it with the snapshot it last applied. A
new model folder is loaded, a removed one unloaded, a changed one (config, label files, a version folder added,
removed or changed) reloaded through :meth:`ModelRepository.load`, so a reload is a hot-swap: the new versions
load and warm up beside the old ones, switch, and the old ones drain; a failed load keeps what served.

A change is applied only once two polls in a row have seen the same snapshot of the folder (it stayed unchanged
for a whole interval): a copy in progress is neither loaded nor reported as an error. A copy that stalls for
longer than an interval would be taken as complete, so deployments should copy beside and rename into place.
A change that failed to load is not tried again until the folder changes again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .backend import LoadError
from .errors import Conflict, InvalidArgument
from .repository import ModelRepository

log = logging.getLogger(__name__)

Snapshot = tuple[tuple[str, int, int, int], ...]
"""A model folder as the poller sees it: (relative path, size, mtime_ns, inode) of every file, (relative path,
-1, 0, 0) of every folder, sorted."""


def snapshot(folder: Path) -> Snapshot | None:
    """The folder's snapshot; None when it is not there. Entries named ``.*`` (copies in progress) are skipped."""
    if not folder.is_dir():
        return None
    entries: list[tuple[str, int, int, int]] = []
    for directory, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        # A folder by its path alone: its mtime also moves when a hidden entry comes or goes inside it
        entries.extend((os.path.relpath(os.path.join(directory, f), folder), -1, 0, 0) for f in folders)
        for entry in (f for f in files if not f.startswith(".")):
            path = os.path.join(directory, entry)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # removed while we looked: the next snapshot differs anyway
            entries.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(sorted(entries))


class RepositoryPoller:
    def __init__(self, repository: ModelRepository, interval_s: float) -> None:
        self.repository = repository
        self.interval_s = interval_s
        self._applied: dict[str, Snapshot] = {}  # what is loaded, as it was on disk when it was loaded
        self._seen: dict[str, Snapshot | None] = {}  # a change seen at the last poll, not applied yet

    def _scan(self) -> dict[str, Snapshot | None]:
        names = set(self.repository.names_on_disk()) | set(self._applied) | set(self._seen)
        return {name: snapshot(self.repository.root / name) for name in sorted(names)}

    async def prime(self) -> None:
        """Take the repository as it is now as applied; call before the models are loaded at start."""
        scanned = await asyncio.to_thread(self._scan)
        self._applied = {name: snap for name, snap in scanned.items() if snap is not None}

    async def run_forever(self) -> None:
        """Poll until cancelled; a failed poll is logged and the next one runs as usual."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:
                log.exception("polling the model repository %s failed", self.repository.root)

    async def poll(self) -> None:
        """One poll: apply each change that two polls in a row have seen the same."""
        scanned = await asyncio.to_thread(self._scan)
        for name, now in scanned.items():
            if now == self._applied.get(name):
                self._seen.pop(name, None)
                continue
            if name not in self._seen or self._seen[name] != now:
                self._seen[name] = now  # changing (or just changed): wait for it to settle
                log.debug("model '%s' is changing on disk; waiting until it stays the same for one poll", name)
                continue
            del self._seen[name]
            if now is None:
                self._applied.pop(name, None)
            else:
                self._applied[name] = now  # a failed load is not retried until the folder changes again
            try:
                await self._apply(name, now is None)
            except Exception:
                log.exception("model '%s': applying its change on disk failed", name)

    async def _apply(self, name: str, removed: bool) -> None:
        if removed:
            if name in self.repository.models:
                log.info("model '%s' was removed from the repository: unloading", name)
                await self.repository.unload(name)
            return
        log.info("model '%s' is new or changed in the repository: loading", name)
        try:
            await self.repository.load(name)
        except Conflict as exc:
            log.error("model '%s' is not loaded: %s", name, exc.message)
        except (LoadError, InvalidArgument):
            pass  # the repository has logged it and shows the reason in the index; what served keeps serving

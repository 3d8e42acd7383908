"""``/v2/update``: A/B updates through the admin API (:mod:`appliance.update`).

``GET`` (read role) shows the running slot as the last boot check recorded it, an update waiting for its health
check, the last outcomes and the state of the data partition. ``POST`` (admin, audited) takes a signed bundle as
the request body (``application/octet-stream``), streams it onto the data partition, verifies it there exactly as
``appliance update apply`` will (signature, machine, revision, every hash, a whole archive) and, only when it
passes, queues it: ``appliance-update.path`` then starts ``appliance-update.service`` (root), which installs it
into the other slot and reboots. The service itself never installs anything: it runs unprivileged.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse

from ..core.errors import Conflict, InvalidArgument, TooLarge, Unavailable, Unsupported
from ..datapart import read_state
from ..settings import Settings
from ..update.apply import Device, UpdateError, verify
from ..update.confirm import UpdateRecord, boot_id

QUEUED = "bundle.swu"  # the name appliance-update.path waits for, in the spool folder


class UpdateEndpoint:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()

    def _record(self) -> UpdateRecord | None:
        directory = self._settings.update_dir
        return UpdateRecord(directory) if directory is not None else None

    async def status(self) -> dict[str, Any]:
        record = self._record()
        pending = record.pending() if record is not None else None
        queued = record.directory / "spool" / QUEUED if record is not None else None
        return {
            "enabled": record is not None,
            "boot": record.last_boot() if record is not None else None,
            "pending": None if pending is None else {**pending.to_json(), "this_boot": pending.boot_id == boot_id()},
            "queued": queued is not None and queued.exists(),
            "history": record.history(50) if record is not None else [],
            "data_partition": read_state(self._settings.data_state_file),
        }

    async def apply(self, request: Request) -> JSONResponse:
        record = self._record()
        if record is None:
            raise Unsupported("updates are off: update_dir is not set (the image sets it to the data partition)")
        if request.headers.get("content-type", "application/octet-stream").split(";")[0].strip() not in (
            "application/octet-stream",
            "application/x-swu",
        ):
            raise InvalidArgument("the body must be the .swu bundle itself (Content-Type: application/octet-stream)")
        limit = self._settings.update_max_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            raise TooLarge(f"update bundle of {length} bytes exceeds update_max_bytes ({limit})")
        if self._lock.locked():
            raise Conflict("another update bundle is being received")
        async with self._lock:
            pending = record.pending()
            if pending is not None and pending.boot_id != boot_id():
                raise Conflict(f"update {pending.version} to slot {pending.to_slot} still waits for its health check")
            spool = record.directory / "spool"
            if (spool / QUEUED).exists():
                raise Conflict("an update is already queued for installation")
            try:  # the device's side first: a device that cannot check a bundle takes none
                device = Device.read(self._settings.update_certificate, self._settings.update_hwrevision_file)
            except UpdateError as exc:
                raise Unavailable(f"cannot check update bundles here: {exc}") from None
            upload = await _receive(request, spool, limit)
            try:
                bundle = await asyncio.to_thread(verify, upload, device)
            except UpdateError as exc:
                upload.unlink(missing_ok=True)
                raise InvalidArgument(str(exc)) from None
            except BaseException:
                upload.unlink(missing_ok=True)
                raise
            os.replace(upload, spool / QUEUED)  # appliance-update.path starts the installation
        return JSONResponse(
            {
                "state": "queued",
                "version": bundle.version,
                "machine": bundle.machine,
                "message": "verified; appliance-update.service installs it into the other slot and reboots",
            },
            status_code=202,
        )


async def _receive(request: Request, spool: Path, limit: int) -> Path:
    """Stream the body into a new file in ``spool``; TooLarge past ``limit`` (the partial file is removed)."""
    try:
        spool.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".swu", dir=spool)
    except OSError as exc:
        raise Unsupported(f"cannot receive an update: {spool}: {exc.strerror or exc}") from None
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"update bundle exceeds update_max_bytes ({limit})")
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise InvalidArgument("the request body is empty: send the .swu bundle")
    os.chmod(path, 0o640)
    return path

"""Install a verified bundle into the other slot with ``swupdate``, and record it as pending.

The device's identity comes from ``/etc/hwrevision`` (SWUpdate's own file: ``MACHINE REVISION``), its update certificate
from the root filesystem (``/usr/share/swupdate/swupdate.pem``), never from the data partition: whoever can write
the data partition must not be able to choose which bundles the device accepts. ``sw-description`` selects what
to install by the running slot (``system,slot_a`` on A installs into B), as in OE4T's tegra-demo-distro.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bundle import Bundle, BundleError, verify_bundle
from .confirm import Pending, UpdateRecord, boot_id
from .slots import BootSlots, other

log = logging.getLogger("appliance.update")

KEY_FILE = Path("/usr/share/swupdate/swupdate.pem")
HWREVISION_FILE = Path("/etc/hwrevision")
SWUPDATE = Path("/usr/bin/swupdate")


class UpdateError(RuntimeError):
    """The installation was refused or failed; the message says why. The running slot is untouched."""


@dataclass(frozen=True, slots=True)
class Device:
    machine: str
    revision: str
    certificate: Path

    @classmethod
    def read(cls, certificate: Path = KEY_FILE, hwrevision_file: Path = HWREVISION_FILE) -> Device:
        return read_device(certificate, hwrevision_file)


def read_device(key_file: Path = KEY_FILE, hwrevision_file: Path = HWREVISION_FILE) -> Device:
    try:
        fields = hwrevision_file.read_text().split()
    except OSError as exc:
        raise UpdateError(f"{hwrevision_file}: {exc.strerror or exc}") from None
    if len(fields) != 2:
        raise UpdateError(f"{hwrevision_file}: expected 'MACHINE REVISION', found {' '.join(fields)!r}")
    if not key_file.is_file():
        raise UpdateError(f"update certificate {key_file}: not there")
    return Device(fields[0], fields[1], key_file)


def verify(path: Path, device: Device) -> Bundle:
    try:
        return verify_bundle(path, device.certificate, device.machine, device.revision)
    except BundleError as exc:
        raise UpdateError(f"refused: {exc}") from None


def apply_bundle(
    path: Path,
    device: Device,
    slots: BootSlots,
    record: UpdateRecord,
    swupdate: Path = SWUPDATE,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Pending:
    """Verify ``path``, install it into the other slot, and record it pending. :class:`UpdateError` otherwise."""
    pending = record.pending()
    if pending is not None and pending.boot_id != boot_id():
        raise UpdateError(
            f"update {pending.version} to slot {pending.to_slot} still waits for its health check; try again after it"
        )
    bundle = verify(path, device)
    current = slots.current()
    command = [str(swupdate), "-v", "-i", str(path), "-k", str(device.certificate), "-e", f"system,slot_{current}"]
    log.info(
        "installing %s (version %s) into slot %s: %s", path.name, bundle.version, other(current), " ".join(command)
    )
    record.add("installing", f"{path.name} into slot {other(current)}", version=bundle.version)
    try:
        done = run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        record.add("install-failed", str(exc), version=bundle.version)
        raise UpdateError(f"{swupdate}: {exc}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        record.add("install-failed", f"swupdate exited {done.returncode}", version=bundle.version, output=tail)
        raise UpdateError(f"swupdate exited {done.returncode}; slot {current} still runs, unchanged:\n{tail}")
    pending = Pending(bundle.version, current, other(current), time.time(), path.name, boot_id())
    record.set_pending(pending)
    record.add("installed", f"slot {other(current)} holds {bundle.version}; it is tried at the next boot", pending)
    return pending

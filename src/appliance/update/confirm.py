"""After a boot: keep the slot (the appliance is healthy) or roll it back; and the record of updates.

The record lives on the data partition (``/data/update``), which updates never touch: ``pending.json`` while an
installed update waits for its first healthy boot, ``history.jsonl`` for every outcome. :func:`decide` is the whole
policy, without I/O:

- nothing pending: the boot is good (a normal boot is never rolled back: the other slot is older);
- pending, and the device runs the slot it was updated *from*: the new slot never came up (the bootloader fell back
  after failed boots, or power was lost before the switch): the update failed, this slot is good;
- pending, on the new slot: healthy (service ready, no model failed to load) confirms it; not healthy within the
  deadline rolls back to the old slot and reboots.
"""

from __future__ import annotations

import enum
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.files import write_atomically
from .slots import BootSlots

log = logging.getLogger("appliance.update")

UPDATE_DIR = Path("/data/update")
_HISTORY_KEEP = 200


@dataclass(frozen=True, slots=True)
class Pending:
    """An installed update waiting for its first healthy boot."""

    version: str
    from_slot: str
    to_slot: str
    applied_at: float
    bundle: str = ""
    boot_id: str = ""  # the boot during which it was installed: the same boot decides nothing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Action(str, enum.Enum):
    NOT_REBOOTED = "not-rebooted"  # installed during this very boot: nothing to decide before a reboot
    KEEP = "keep"  # nothing pending: mark the boot good
    FAILED_OLD_SLOT = "failed"  # the new slot never came up; this (old) slot is good
    CONFIRM = "confirm"  # the new slot is healthy: mark it good
    WAIT = "wait"  # not healthy yet, before the deadline
    ROLL_BACK = "roll-back"  # not healthy by the deadline: back to the old slot


def decide(
    pending: Pending | None, current: str, boot_id: str, healthy: bool, waited_s: float, timeout_s: float
) -> Action:
    if pending is None:
        return Action.KEEP
    if pending.boot_id and pending.boot_id == boot_id:
        return Action.NOT_REBOOTED
    if current == pending.from_slot:
        return Action.FAILED_OLD_SLOT
    if healthy:
        return Action.CONFIRM
    return Action.ROLL_BACK if waited_s >= timeout_s else Action.WAIT


class UpdateRecord:
    """``pending.json`` and ``history.jsonl`` in ``directory`` (on the data partition)."""

    def __init__(self, directory: Path = UPDATE_DIR) -> None:
        self.directory = directory

    @property
    def pending_file(self) -> Path:
        return self.directory / "pending.json"

    @property
    def history_file(self) -> Path:
        return self.directory / "history.jsonl"

    @property
    def boot_file(self) -> Path:
        return self.directory / "boot.json"

    def set_last_boot(self, slot: str, action: Action, message: str) -> None:
        """What the check of this boot decided: the running slot as the API shows it (the service cannot ask
        nvbootctrl itself)."""
        doc = {"slot": slot, "action": action.value, "message": message, "boot_id": boot_id(), "time": time.time()}
        try:
            write_atomically(self.boot_file, json.dumps(doc) + "\n", mode=0o644)
        except OSError as exc:  # no data partition: the decision stands, only its record is lost
            log.error("cannot record this boot's check in %s: %s", self.boot_file, exc.strerror or exc)

    def last_boot(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.boot_file.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def pending(self) -> Pending | None:
        try:
            raw = json.loads(self.pending_file.read_text())
            return Pending(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:  # a damaged record: treat as nothing pending, and say so
            log.error("update record %s is damaged (%s): ignored", self.pending_file, exc)
            return None

    def set_pending(self, pending: Pending) -> None:
        write_atomically(self.pending_file, json.dumps(asdict(pending)) + "\n", mode=0o644)

    def clear_pending(self) -> None:
        self.pending_file.unlink(missing_ok=True)

    def add(self, outcome: str, message: str, pending: Pending | None = None, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": time.time(), "outcome": outcome, "message": message}
        if pending is not None:
            entry.update(version=pending.version, from_slot=pending.from_slot, to_slot=pending.to_slot)
        entry.update(extra)
        lines = self.history(_HISTORY_KEEP - 1)
        lines.append(entry)
        write_atomically(self.history_file, "".join(json.dumps(e) + "\n" for e in lines), mode=0o644)
        return entry

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        try:
            text = self.history_file.read_text()
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries[-limit:] if limit > 0 else []


def service_health(url: str, key: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether the appliance is healthy at ``url``: ready, and (with a key) no model with a load error. The reason
    when not."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{url}/v2/health/ready", headers=headers), timeout=timeout_s
        ):
            pass
    except urllib.error.HTTPError as exc:
        return False, f"not ready (HTTP {exc.code})"
    except (OSError, ValueError) as exc:
        return False, f"not reachable ({getattr(exc, 'reason', exc)})"
    if key is None:
        return True, "ready"
    request = urllib.request.Request(f"{url}/v2/repository/index", data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            rows = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return False, f"repository index failed ({exc})"
    broken = [
        f"{r.get('name')} {r.get('version', '')}: {r.get('reason')}".replace("  ", " ")
        for r in rows
        if r.get("state") == "UNAVAILABLE" and r.get("reason") not in ("", "unloaded", "parked", None)
    ]
    if broken:
        return False, "models failed to load: " + "; ".join(broken)
    return True, f"ready, {sum(r.get('state') == 'READY' for r in rows)} model versions loaded"


def boot_id() -> str:
    """This boot's identity (the kernel's random boot_id), empty where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def confirm_boot(
    slots: BootSlots,
    record: UpdateRecord,
    health: Callable[[], tuple[bool, str]],
    reboot: Callable[[], None],
    timeout_s: float,
    interval_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Action:
    """Run the policy of :func:`decide` on this boot, until it keeps, confirms or rolls back. Returns the action."""
    pending = record.pending()
    current = slots.current()
    this_boot = boot_id()
    start = clock()
    while True:
        healthy, why = health() if pending is not None and current == pending.to_slot else (False, "")
        action = decide(pending, current, this_boot, healthy, clock() - start, timeout_s)
        if action is Action.NOT_REBOOTED:
            log.info("update %s installed during this boot: reboot to try it", pending and pending.version)
            return action
        elif action is Action.WAIT:
            log.info(
                "update %s on slot %s: %s; waiting (%.0f of %.0f s)",
                pending and pending.version,
                current,
                why,
                clock() - start,
                timeout_s,
            )
            sleep(interval_s)
            continue
        elif action is Action.KEEP:
            slots.mark_successful()
            why = "no update pending: marked good"
            log.info("slot %s: %s", current, why)
        elif action is Action.FAILED_OLD_SLOT:
            assert pending is not None
            slots.mark_successful()
            message = f"slot {pending.to_slot} never came up healthy; the device booted slot {current} again"
            record.add("failed", message, pending)
            record.clear_pending()
            log.error("update %s failed: %s", pending.version, message)
            why = message
        elif action is Action.CONFIRM:
            assert pending is not None
            slots.mark_successful()
            record.add("confirmed", f"slot {current} is healthy: {why}", pending)
            record.clear_pending()
            log.info("update %s confirmed on slot %s: %s", pending.version, current, why)
        else:
            assert pending is not None
            message = (
                f"slot {current} not healthy within {timeout_s:.0f} s ({why}); rolled back to slot {pending.from_slot}"
            )
            slots.set_active(pending.from_slot)
            record.add("rolled-back", message, pending)
            record.clear_pending()
            log.error("update %s: %s", pending.version, message)
            record.set_last_boot(current, action, message)
            reboot()
            return action
        record.set_last_boot(current, action, why)
        return action

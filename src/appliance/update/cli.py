"""``appliance update``: verify, apply, confirm and show A/B updates (see :mod:`appliance.update`)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .apply import HWREVISION_FILE, KEY_FILE, SWUPDATE, UpdateError, apply_bundle, read_device, verify
from .confirm import UPDATE_DIR, Action, UpdateRecord, confirm_boot, service_health
from .slots import BootSlots, NvBootCtrl, SlotError

PROG = "appliance update"


def add_parser(sub: Any) -> None:
    update = sub.add_parser(
        "update",
        help="A/B updates: verify and install a signed .swu into the other slot; confirm or roll back after boot",
        description="Install signed SWUpdate bundles into the slot that does not run, and keep the new slot only "
        "once the appliance is healthy on it. Exit 2: the bundle or the request is refused (nothing written); "
        "1: the installation or the boot-slot tool failed.",
    )
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--key", type=Path, default=KEY_FILE, metavar="PEM", help="update certificate (default: %(default)s)"
    )
    device.add_argument(
        "--hwrevision",
        type=Path,
        default=HWREVISION_FILE,
        metavar="FILE",
        help="'MACHINE REVISION' (default: %(default)s)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--record",
        type=Path,
        default=UPDATE_DIR,
        metavar="DIR",
        help="update record on the data partition (default: %(default)s)",
    )
    common.add_argument("--nvbootctrl", type=Path, default=Path("/usr/sbin/nvbootctrl"), metavar="PATH")
    actions = update.add_subparsers(dest="update_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify", parents=[device], help="check a bundle (signature, machine, hashes); write nothing"
    )
    check.add_argument("bundle", type=Path, metavar="FILE.swu")
    apply = actions.add_parser(
        "apply", parents=[device, common], help="verify and install a bundle into the other slot"
    )
    apply.add_argument("bundle", type=Path, metavar="FILE.swu")
    apply.add_argument("--swupdate", type=Path, default=SWUPDATE, metavar="PATH")
    apply.add_argument("--reboot", action="store_true", help="reboot into the new slot once installed")
    apply.add_argument(
        "--remove", action="store_true", help="delete the bundle file afterwards (the admin API's spool)"
    )
    actions.add_parser(
        "status", parents=[common], help="the running slot, a pending update and the last outcomes, as JSON"
    )
    confirm = actions.add_parser(
        "confirm",
        parents=[common],
        help="after boot: keep the slot if the appliance is healthy, else roll back (appliance-update-confirm.service)",
    )
    confirm.add_argument(
        "--timeout-s",
        type=float,
        default=600.0,
        help="how long a new slot has to become healthy (default: %(default)s)",
    )
    confirm.add_argument(
        "--service-url", default="http://127.0.0.1:8000", help="the appliance's REST address (default: %(default)s)"
    )
    confirm.add_argument(
        "--admin-key-file", type=Path, metavar="FILE", help="an API key, to check that no model failed to load"
    )
    confirm.add_argument(
        "--no-reboot", action="store_true", help="on roll-back, set the old slot active but do not reboot"
    )


def _reboot() -> None:
    subprocess.run(["systemctl", "reboot"], check=False, stdin=subprocess.DEVNULL)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except UpdateError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2 if str(exc).startswith("refused") or "still waits" in str(exc) else 1
    except (SlotError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    command = args.update_command
    if command == "verify":
        bundle = verify(args.bundle, read_device(args.key, args.hwrevision))
        print(
            f"{args.bundle}: verified: version {bundle.version} for {bundle.machine}, {len(bundle.artefacts)} artefacts"
        )
        return 0
    record, slots = UpdateRecord(args.record), NvBootCtrl(args.nvbootctrl)
    if command == "status":
        print(json.dumps(status(record, slots), indent=2))
        return 0
    if command == "apply":
        try:
            pending = apply_bundle(args.bundle, read_device(args.key, args.hwrevision), slots, record, args.swupdate)
        finally:
            if args.remove:
                args.bundle.unlink(missing_ok=True)
        print(f"installed {pending.version} into slot {pending.to_slot}; it is tried at the next boot")
        if args.reboot:
            _reboot()
        return 0
    key = args.admin_key_file.read_text().strip() if args.admin_key_file else None
    action = confirm_boot(
        slots,
        record,
        health=lambda: service_health(args.service_url, key),
        reboot=(lambda: None) if args.no_reboot else _reboot,
        timeout_s=args.timeout_s,
    )
    print(f"{PROG} confirm: {action.value}")
    return 1 if action is Action.ROLL_BACK else 0


def status(record: UpdateRecord, slots: BootSlots) -> dict[str, Any]:
    """What ``GET /v2/update`` and ``appliance update status`` show."""
    pending = record.pending()
    try:
        current: str | None = slots.current()
        slot_error = ""
    except SlotError as exc:
        current, slot_error = None, str(exc)
    return {
        "slot": current,
        "slot_error": slot_error,
        "pending": None if pending is None else asdict(pending),
        "boot": record.last_boot(),
        "history": record.history(20),
        "time": time.time(),
    }

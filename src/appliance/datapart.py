"""The data partition: what updates never touch (keys, configuration, models, rebuilt engines, the TLS key, the
audit log and the update record), made ready at every boot by ``appliance data prepare``.

``appliance-data-prepare.service`` (root, before ``data.mount``) runs it on the partition the image names
(NVIDIA's user-data partition, ``/dev/disk/by-partlabel/UDA``): a partition with no filesystem (first boot) is
formatted ext4 with the label ``appliance-data`` and seeded with the root filesystem's copies of the folders that
move there (``mke2fs -d``, owners kept); an ext4 of ours is checked (``e2fsck -p``, then ``-fy``); one that cannot
be repaired, or that holds something else, is formatted again. systemd then mounts it on ``/data`` and binds its
folders over ``/var/lib/appliance`` and ``/etc/appliance``. When the partition is missing, the services keep their
state on the root filesystem. Whatever happened is written to ``/run/appliance-data.json``; the service reports it
(``GET /v2/update``) and logs a warning unless it is ``ok`` or ``created``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("appliance.data")

LABEL = "appliance-data"
STATE_FILE = Path("/run/appliance-data.json")
# Outcomes: ok (checked, clean), repaired (e2fsck fixed it), created (first boot), recreated (it was damaged
# beyond repair or held something else: its contents are lost), missing (no partition: state on the rootfs).
HEALTHY = ("ok", "repaired", "created")


@dataclass(frozen=True, slots=True)
class DataState:
    state: str
    message: str
    device: str
    time: float


def add_parser(sub: Any) -> None:
    data = sub.add_parser(
        "data",
        help="the data partition that updates never touch: check it, or make it (root; appliance-data-prepare.service)",
        description="Check the data partition and make it usable before it is mounted: format a blank one (first "
        "boot) and seed it, repair a damaged one, format again one beyond repair. Writes what happened to "
        "--state-file. "
        "Exit 0 also when the partition is missing (the appliance runs on the root filesystem and says so); 1 when "
        "formatting failed.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="check, repair or format the data partition")
    prepare.add_argument(
        "--device", type=Path, required=True, metavar="DEV", help="the partition (a by-partlabel path)"
    )
    prepare.add_argument("--label", default=LABEL, help="filesystem label (default: %(default)s)")
    prepare.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="SRC=DEST",
        help="copy the folder SRC into DEST of a newly made filesystem (repeatable), e.g. /etc/appliance=etc-appliance",
    )
    prepare.add_argument("--wait-s", type=float, default=20.0, help="how long to wait for the device to appear")
    prepare.add_argument("--state-file", type=Path, default=STATE_FILE, metavar="FILE")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)


def probe(device: Path) -> dict[str, str]:
    """The filesystem ``blkid`` finds on ``device`` (TYPE, LABEL, ...); empty when there is none."""
    done = _run("blkid", "-p", "-o", "export", str(device))
    if done.returncode != 0:  # 2: nothing found
        return {}
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _format(device: Path, label: str, seeds: list[tuple[Path, str]]) -> None:
    with tempfile.TemporaryDirectory(prefix="appliance-data-seed.") as tree:
        root = Path(tree)
        os.chmod(root, 0o755)
        for source, dest in seeds:
            if source.is_dir():
                shutil.copytree(source, root / dest, symlinks=True, dirs_exist_ok=True)
                _copy_owners(source, root / dest)
            else:
                (root / dest).mkdir(parents=True, exist_ok=True)
        done = _run("mkfs.ext4", "-F", "-q", "-L", label, "-d", str(root), str(device))
    if done.returncode != 0:
        raise OSError(f"mkfs.ext4 {device} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")


def _copy_owners(source: Path, dest: Path) -> None:
    """copytree keeps modes, not owners; mke2fs -d takes both from the tree. Root keeps them (others cannot)."""
    if os.geteuid() != 0:
        return
    for path in [source, *source.rglob("*")]:
        st = path.lstat()
        os.lchown(dest / path.relative_to(source), st.st_uid, st.st_gid)


def prepare(device: Path, label: str, seeds: list[tuple[Path, str]], wait_s: float) -> DataState:
    def state(name: str, message: str) -> DataState:
        return DataState(name, message, str(device), time.time())

    deadline = time.monotonic() + wait_s
    while not device.exists():
        if time.monotonic() >= deadline:
            return state(
                "missing",
                f"{device} is not there: keys, models and settings stay on the root filesystem, "
                "and an update would lose them",
            )
        time.sleep(0.5)
    found = probe(device)
    if not found.get("TYPE"):
        _format(device, label, seeds)
        return state("created", f"{device} held no filesystem (first boot): formatted ext4 '{label}' and seeded")
    if found.get("TYPE") != "ext4" or found.get("LABEL") != label:
        held = f"{found.get('TYPE')} labelled '{found.get('LABEL', '')}'"
        _format(device, label, seeds)
        return state("recreated", f"{device} held {held}, not the appliance's data: formatted ext4 '{label}' again")
    check = _run("e2fsck", "-p", str(device))
    if check.returncode < 4:  # 0 clean, 1 or 2 corrected
        if check.returncode == 0:
            return state("ok", f"{device}: e2fsck -p found it clean")
        return state("repaired", f"{device}: e2fsck -p repaired it (exit {check.returncode})")
    repair = _run("e2fsck", "-f", "-y", str(device))
    if repair.returncode < 4:
        return state("repaired", f"{device}: e2fsck -p found damage (exit {check.returncode}); e2fsck -fy repaired it")
    _format(device, label, seeds)
    return state(
        "recreated",
        f"{device} was damaged beyond repair (e2fsck -fy exited {repair.returncode}): formatted again; its keys, "
        "models and settings are lost, the root filesystem's defaults are back",
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    seeds = []
    for item in args.seed:
        source, sep, dest = item.partition("=")
        if not sep or not dest or dest.startswith("/") or ".." in Path(dest).parts:
            print(f"appliance data prepare: --seed {item!r}: expected SRC=DEST with DEST relative", file=sys.stderr)
            return 2
        seeds.append((Path(source), dest))
    try:
        result = prepare(args.device, args.label, seeds, args.wait_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        result = DataState("failed", str(exc), str(args.device), time.time())
    write_state(args.state_file, result)
    level = logging.INFO if result.state in HEALTHY else logging.ERROR
    log.log(level, "data partition %s: %s", result.state, result.message)
    return 1 if result.state == "failed" else 0


def write_state(path: Path, state: DataState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state)) + "\n")


def read_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """What ``appliance data prepare`` found at this boot; None when it did not run (no data partition in use)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

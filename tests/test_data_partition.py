"""``appliance data prepare`` on a regular file standing in for the partition (mke2fs, e2fsck, blkid and debugfs
all work on files, so nothing is mounted and no block device is touched): first boot, a clean boot, a damaged
filesystem that e2fsck repairs, one beyond repair, a foreign filesystem, and a missing partition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LABEL = "appliance-data"


def prepare(device: Path, tmp_path: Path, *seeds: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    state = tmp_path / "state.json"
    args = [sys.executable, "-m", "appliance.cli", "data", "prepare", "--device", str(device), "--wait-s", "1"]
    args += ["--state-file", str(state)] + [a for s in seeds for a in ("--seed", s)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return done, json.loads(state.read_text())


def ls(device: Path, folder: str) -> str:
    return subprocess.run(["debugfs", "-R", f"ls -l {folder}", str(device)], capture_output=True, text=True).stdout


def cat(device: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(device)], capture_output=True, text=True).stdout


@pytest.fixture
def blank(tmp_path: Path) -> Path:
    device = tmp_path / "UDA.img"
    with device.open("wb") as f:
        f.truncate(64 << 20)
    return device


@pytest.fixture
def seeds(tmp_path: Path) -> list[str]:
    etc = tmp_path / "rootfs-etc-appliance"
    (etc / "tls").mkdir(parents=True)
    (etc / "appliance.toml").write_text('model_repository = "/var/lib/appliance/models"\n')
    state = tmp_path / "rootfs-var-lib-appliance"
    (state / "models" / "demo" / "1").mkdir(parents=True)
    (state / "models" / "demo" / "config.pbtxt").write_text('name: "demo"\n')
    return [f"{etc}=etc-appliance", f"{state}=appliance", f"{tmp_path / 'absent'}=update"]


def test_first_boot_formats_and_seeds(blank: Path, tmp_path: Path, seeds: list[str]) -> None:
    done, state = prepare(blank, tmp_path, *seeds)
    assert done.returncode == 0, done.stderr
    assert state["state"] == "created" and "first boot" in state["message"]
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(blank)], capture_output=True, text=True).stdout
    assert "TYPE=ext4" in probe and f"LABEL={LABEL}" in probe
    assert "appliance.toml" in ls(blank, "/etc-appliance") and "tls" in ls(blank, "/etc-appliance")
    assert cat(blank, "/appliance/models/demo/config.pbtxt") == 'name: "demo"\n'
    assert "update" in ls(blank, "/")  # a seed whose source is absent is an empty folder
    # The next boot finds it clean and keeps what is on it.
    done, state = prepare(blank, tmp_path, *seeds)
    assert state["state"] == "ok", state
    assert cat(blank, "/appliance/models/demo/config.pbtxt") == 'name: "demo"\n'


def test_a_damaged_filesystem_is_repaired_and_keeps_its_files(blank: Path, tmp_path: Path, seeds: list[str]) -> None:
    prepare(blank, tmp_path, *seeds)
    # Clear the inode of a folder, and leave the filesystem marked not clean (as a power cut does; a clean one is
    # not checked at boot, as systemd-fsck does not): the check finds damage and repairs it.
    for request in ("clri /etc-appliance/tls", "ssv state 0"):
        subprocess.run(["debugfs", "-w", "-R", request, str(blank)], check=True, capture_output=True)
    done, state = prepare(blank, tmp_path, *seeds)
    assert done.returncode == 0, done.stderr
    assert state["state"] == "repaired" and "repaired it" in state["message"], state
    assert cat(blank, "/appliance/models/demo/config.pbtxt") == 'name: "demo"\n'
    assert subprocess.run(["e2fsck", "-n", "-f", str(blank)], capture_output=True).returncode == 0


def test_a_filesystem_beyond_repair_is_made_again_and_says_so(blank: Path, tmp_path: Path, seeds: list[str]) -> None:
    prepare(blank, tmp_path, *seeds)
    with blank.open("r+b") as f:  # zeros over the superblock and its first groups: nothing left to recognise
        f.seek(0)
        f.write(b"\0" * (8 << 20))
        f.seek(1024)
        f.write(os.urandom(4096))
    done, state = prepare(blank, tmp_path, *seeds)
    assert done.returncode == 0, done.stderr
    assert state["state"] in ("created", "recreated") and "formatted" in state["message"], state
    assert cat(blank, "/etc-appliance/appliance.toml").startswith("model_repository")


def test_a_foreign_filesystem_is_replaced(blank: Path, tmp_path: Path, seeds: list[str]) -> None:
    subprocess.run(["mkfs.ext4", "-F", "-q", "-L", "something-else", str(blank)], check=True)
    done, state = prepare(blank, tmp_path, *seeds)
    assert state["state"] == "recreated" and "ext4 labelled 'something-else'" in state["message"], state
    assert "appliance.toml" in ls(blank, "/etc-appliance")


def test_a_missing_partition_lets_the_appliance_come_up_and_says_so(tmp_path: Path) -> None:
    done, state = prepare(tmp_path / "no-such-partition", tmp_path)
    assert done.returncode == 0, done.stderr  # the boot goes on: the services keep their state on the rootfs
    assert state["state"] == "missing" and "stay on the root filesystem" in state["message"]
    assert "ERROR appliance.data: data partition missing" in done.stderr


def test_a_bad_seed_is_refused(blank: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "appliance.cli", "data", "prepare", "--device", str(blank), "--seed", "/etc=/abs"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "expected SRC=DEST with DEST relative" in done.stderr

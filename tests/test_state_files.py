"""The files the service keeps (key file, routes file, audit log) stay the service's when root writes them, as
``appliance keys`` does on the device; and the image's first-boot admin key (``keys create --key-out``) lands in a
new file that only its writer can read, next to a key file the service can use."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.core.auth.audit import AuditLog
from appliance.core.auth.keys import read_keys
from appliance.core.files import create_secret, owner_for, write_atomically

APPLIANCE = [sys.executable, "-m", "appliance.cli"]
SERVICE_UID, SERVICE_GID = 4242, 4243  # the service's user on the device (any ids do: only root may chown)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root changes a file's owner")


def _service_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    os.chown(folder, SERVICE_UID, SERVICE_GID)
    return folder


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


@as_root
def test_a_new_file_takes_its_folders_owner_and_a_replaced_file_keeps_its_own(tmp_path: Path):
    folder = _service_folder(tmp_path)
    write_atomically(folder / "routes.json", "{}")
    assert _owner(folder / "routes.json") == (SERVICE_UID, SERVICE_GID)
    assert stat.S_IMODE((folder / "routes.json").stat().st_mode) == 0o600

    os.chown(folder / "routes.json", 5000, 5001)  # whoever owns it now keeps it
    write_atomically(folder / "routes.json", '{"a": 1}')
    assert _owner(folder / "routes.json") == (5000, 5001)
    assert (folder / "routes.json").read_text() == '{"a": 1}'

    plain = tmp_path / "plain"
    plain.mkdir()
    assert owner_for(plain / "x") is None  # a root folder: nothing to change
    write_atomically(plain / "x", "y")
    assert _owner(plain / "x") == (0, 0)


@as_root
def test_the_audit_log_root_starts_or_rotates_belongs_to_the_service(tmp_path: Path):
    folder = _service_folder(tmp_path)
    audit = AuditLog(folder / "audit.log", max_bytes=400)
    audit.record("cli:root", "local", "key_create", "ops", "ok")
    assert _owner(folder / "audit.log") == (SERVICE_UID, SERVICE_GID)
    for i in range(5):  # past 400 bytes: rotated, and the new file is the service's too
        audit.record("cli:root", "local", "key_create", f"k{i}", "ok")
    assert (folder / "audit.log.1").exists()
    assert _owner(folder / "audit.log") == (SERVICE_UID, SERVICE_GID)
    targets = [e["target"] for e in audit.recent(10)]
    assert targets == ["ops", "k0", "k1", "k2", "k3", "k4"][-len(targets) :] and len(targets) >= 2


def test_a_secret_is_created_once_readable_by_its_writer_alone(tmp_path: Path):
    create_secret(tmp_path / "admin.key", "apk_x\n")
    assert stat.S_IMODE((tmp_path / "admin.key").stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        create_secret(tmp_path / "admin.key", "apk_y\n")
    assert (tmp_path / "admin.key").read_text() == "apk_x\n"


def _create(keys_file: Path, key_out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APPLIANCE, "keys", "create", "--keys-file", str(keys_file), "--role", "admin", "--name", "admin"]
        + ["--key-out", str(key_out)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@as_root
def test_first_boot_admin_key_is_root_only_and_the_key_file_is_the_services(tmp_path: Path):
    """What appliance-admin-key.service does at first boot, as root, in the service's state folder."""
    folder = _service_folder(tmp_path)
    keys_file, key_out = folder / "keys.json", folder / "admin.key"
    result = _create(keys_file, key_out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the key is not printed (the journal would keep it)
    assert f"the key is in {key_out}" in result.stderr
    key = key_out.read_text().strip()
    assert key.startswith("apk_")
    assert _owner(key_out) == (0, 0) and stat.S_IMODE(key_out.stat().st_mode) == 0o600
    assert _owner(keys_file) == (SERVICE_UID, SERVICE_GID)
    (record,) = read_keys(keys_file).values()
    assert record.name == "admin" and record.role.label == "admin"
    assert key.split("_")[1] == record.id

    again = _create(keys_file, key_out)  # never overwrites the key a field engineer may not have read yet
    assert again.returncode == 1
    assert f"--key-out {key_out}: the file exists; no key was created" in again.stderr
    assert len(read_keys(keys_file)) == 1 and key_out.read_text().strip() == key


def test_key_out_that_cannot_be_written_revokes_the_key(tmp_path: Path):
    keys_file = tmp_path / "keys.json"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = _create(keys_file, blocker / "admin.key")
    assert result.returncode == 1
    assert f"--key-out {blocker / 'admin.key'}" in result.stderr and "the key was revoked" in result.stderr
    (record,) = read_keys(keys_file).values()
    assert record.revoked is not None

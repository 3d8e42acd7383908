"""``/v2/update`` on a real server: a signed bundle posted by an admin is verified on the data partition's spool
and queued for ``appliance-update.service`` (run here as ``appliance update apply`` with the FAKE nvbootctrl and
the real swupdate in dry-run mode); bad bundles, wrong roles and oversized bodies are refused and leave nothing
behind; the boot's findings (data partition, update check) are on the timeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.autoscaler import create_key
from tests.support.swu import MACHINE, Signer, make_bundle, make_signer, swupdate_dry_run

ROOTFS = {"ml-inference-image.rootfs.tar.gz": os.urandom(200_000), "tegra-bl.cap": b"capsule" * 500}


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Signer]:
    d = tmp_path_factory.mktemp("signers")
    return make_signer(d, "appliance-update"), make_signer(d, "someone-else")


@pytest.fixture
def device(tmp_path: Path, signers: tuple[Signer, Signer], demo_repo: Path, server_factory: Any) -> dict[str, Any]:
    update_dir = tmp_path / "data" / "update"
    (update_dir / "spool").mkdir(parents=True)
    hwrevision = tmp_path / "hwrevision"
    hwrevision.write_text(f"{MACHINE} 1.0\n")
    data_state = tmp_path / "appliance-data.json"
    data_state.write_text(json.dumps({"state": "missing", "message": "/dev/disk/by-partlabel/UDA is not there",
                                      "device": "/dev/disk/by-partlabel/UDA", "time": 0}))  # fmt: skip
    (update_dir / "boot.json").write_text(json.dumps({"slot": "a", "action": "keep", "message": "marked good"}))
    keys = tmp_path / "keys.json"
    admin, read = create_key(keys, "admin"), create_key(keys, "read")
    env = {
        "APPLIANCE_UPDATE_DIR": str(update_dir),
        "APPLIANCE_UPDATE_CERTIFICATE": str(signers[0].cert),
        "APPLIANCE_UPDATE_HWREVISION_FILE": str(hwrevision),
        "APPLIANCE_UPDATE_MAX_BYTES": str(2_000_000),
        "APPLIANCE_DATA_STATE_FILE": str(data_state),
    }
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys), env=env)
    return {"server": server, "admin": admin, "read": read, "update_dir": update_dir, "hwrevision": hwrevision,
            "cert": signers[0].cert}  # fmt: skip


def post(device: dict[str, Any], body: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if key is not None or device.get("admin"):
        headers["Authorization"] = f"Bearer {key if key is not None else device['admin']}"
    return httpx.post(f"{device['server'].base}/v2/update", content=body, headers=headers, timeout=60)


def spool(device: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in (device["update_dir"] / "spool").iterdir())


def test_status_shows_the_boot_and_the_data_partition(device: dict[str, Any]) -> None:
    r = httpx.get(f"{device['server'].base}/v2/update", headers={"Authorization": f"Bearer {device['read']}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["enabled"] and doc["boot"]["slot"] == "a" and doc["pending"] is None and not doc["queued"]
    assert doc["data_partition"]["state"] == "missing"
    events = httpx.get(f"{device['server'].base}/v2/events", headers={"Authorization": f"Bearer {device['read']}"})
    kinds = {e["kind"]: e["detail"] for e in events.json()["events"]}
    assert kinds["data_partition"].startswith("data partition missing") and "slot a" in kinds["update"]
    assert "ERROR appliance.server: data partition missing" in device["server"].log()


def test_a_verified_bundle_is_queued_then_installed_by_the_root_side(
    tmp_path: Path, device: dict[str, Any], signers: tuple[Signer, Signer]
) -> None:
    bundle = make_bundle(tmp_path / "good.swu", signers[0], ROOTFS, version="3.0.0")
    r = post(device, bundle.read_bytes())
    assert r.status_code == 202, r.text
    assert r.json()["version"] == "3.0.0" and r.json()["state"] == "queued"
    assert spool(device) == ["bundle.swu"]
    again = post(device, bundle.read_bytes())
    assert again.status_code == 409 and "already queued" in again.json()["error"]
    audit = httpx.get(f"{device['server'].base}/v2/audit", headers={"Authorization": f"Bearer {device['admin']}"})
    assert any(e["action"] == "update_apply" and e["key"] == "admin" for e in audit.json()["entries"])
    # What appliance-update.service runs (root on the device): install from the spool, remove the file.
    wrapper, calls = swupdate_dry_run(tmp_path)
    state = tmp_path / "slots.json"
    state.write_text(json.dumps({"current": 1, "active": 1, "good": [1]}))
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "update", "apply", str(device["update_dir"] / "spool" / "bundle.swu"),
         "--remove", "--key", str(device["cert"]), "--hwrevision", str(device["hwrevision"]),
         "--record", str(device["update_dir"]), "--swupdate", str(wrapper),
         "--nvbootctrl", str(Path(__file__).parent / "support" / "fake_nvbootctrl.py")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "FAKE_NVBOOTCTRL_STATE": str(state)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "-e system,slot_b" in calls.read_text() and spool(device) == []
    status = httpx.get(f"{device['server'].base}/v2/update", headers={"Authorization": f"Bearer {device['read']}"})
    pending = status.json()["pending"]
    assert pending["version"] == "3.0.0" and pending["to_slot"] == "a" and pending["this_boot"] is True
    assert [h["outcome"] for h in status.json()["history"]][-2:] == ["installing", "installed"]


@pytest.mark.parametrize(
    "case, reason",
    [
        ("unsigned", "unsigned"),
        ("another key", "signature does not verify"),
        ("another machine", "bundle is for jetson-orin-nano-devkit"),
        ("truncated", "truncated"),
        ("empty", "the request body is empty"),
    ],
)
def test_a_bad_bundle_is_a_400_naming_why_and_leaves_nothing(
    case: str, reason: str, tmp_path: Path, device: dict[str, Any], signers: tuple[Signer, Signer]
) -> None:
    good = make_bundle(tmp_path / "g.swu", signers[0], ROOTFS).read_bytes()
    body = {
        "unsigned": lambda: make_bundle(tmp_path / "u.swu", None, ROOTFS).read_bytes(),
        "another key": lambda: make_bundle(tmp_path / "o.swu", signers[1], ROOTFS).read_bytes(),
        "another machine": lambda: make_bundle(
            tmp_path / "m.swu", signers[0], ROOTFS, machine="jetson-orin-nano-devkit"
        ).read_bytes(),  # fmt: skip
        "truncated": lambda: good[: len(good) // 2],
        "empty": lambda: b"",
    }[case]()
    r = post(device, body)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"] and "Traceback" not in r.text
    assert spool(device) == []


def test_roles_size_and_content_type(tmp_path: Path, device: dict[str, Any], signers: tuple[Signer, Signer]) -> None:
    body = make_bundle(tmp_path / "g.swu", signers[0], ROOTFS).read_bytes()
    assert post(device, body, key=device["read"]).status_code == 403
    anonymous = httpx.post(f"{device['server'].base}/v2/update", content=body)
    assert anonymous.status_code == 401
    big = post(device, b"\0" * 2_100_000)
    assert big.status_code == 413 and "update_max_bytes" in big.json()["error"]
    wrong = httpx.post(
        f"{device['server'].base}/v2/update", content=body,
        headers={"Authorization": f"Bearer {device['admin']}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert wrong.status_code == 400 and "Content-Type: application/octet-stream" in wrong.json()["error"]
    assert spool(device) == []


def test_updates_off_without_an_update_dir(demo_server: Any) -> None:
    r = httpx.post(f"{demo_server.base}/v2/update", content=b"x", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "updates are off" in r.json()["error"]
    assert httpx.get(f"{demo_server.base}/v2/update").json()["enabled"] is False


def test_a_device_without_its_update_certificate_takes_no_bundle(
    tmp_path: Path, demo_repo: Path, server_factory: Any, signers: tuple[Signer, Signer]
) -> None:
    update_dir = tmp_path / "update"
    env = {"APPLIANCE_UPDATE_DIR": str(update_dir), "APPLIANCE_UPDATE_CERTIFICATE": str(tmp_path / "missing.pem")}
    server = server_factory(demo_repo, env=env)
    body = make_bundle(tmp_path / "g.swu", signers[0], ROOTFS).read_bytes()
    r = httpx.post(f"{server.base}/v2/update", content=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 503 and "cannot check update bundles here" in r.json()["error"], r.text
    assert not (update_dir / "spool").exists() or list((update_dir / "spool").iterdir()) == []

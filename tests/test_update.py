"""A/B updates on the host: bundles made and signed in the test, checked by our verifier and by the real SWUpdate
(Debian's ``swupdate``, in its check-only and dry-run modes), installed through ``appliance update apply`` with the
FAKE nvbootctrl (tests/support/fake_nvbootctrl.py: this machine has no boot slots), and the health check that
keeps or rolls back a slot, against a real appliance server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.update.bundle import BundleError, verify_bundle
from appliance.update.confirm import Action, Pending, UpdateRecord, confirm_boot, decide, service_health
from appliance.update.libconfig import LibconfigError, loads
from tests.support.swu import MACHINE, Signer, cpio, make_bundle, make_signer, swupdate_check, swupdate_dry_run

FAKE_NVBOOTCTRL = Path(__file__).parent / "support" / "fake_nvbootctrl.py"
ROOTFS = {"ml-inference-image.rootfs.tar.zst": os.urandom(300_000), "tegra-bl.cap": b"capsule" * 1000}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Signer]:
    d = tmp_path_factory.mktemp("keys")
    return make_signer(d, "appliance-update"), make_signer(d, "someone-else")


@pytest.fixture
def device(tmp_path: Path, keys: tuple[Signer, Signer]) -> dict[str, Any]:
    hwrev = tmp_path / "hwrevision"
    hwrev.write_text(f"{MACHINE} 1.0\n")
    state = tmp_path / "nvbootctrl.json"
    state.write_text(json.dumps({"current": 0, "active": 0, "good": []}))
    return {"cert": keys[0].cert, "hwrevision": hwrev, "record": tmp_path / "record", "state": state}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_libconfig_reads_the_sw_description_syntax() -> None:
    text = """
    # comment
    software = {
        version = "1." "2";   // adjacent strings join
        board = { hardware-compatibility: [ "1.0", "2.0" ]; size = 0x10; ratio = 1.5; on = TRUE;
                  images: ( { filename = "a\\"b"; }, { filename = "c"; } ) }  /* block */
    };
    """
    value = loads(text)
    board = value["software"]["board"]
    assert value["software"]["version"] == "1.2"
    assert board["hardware-compatibility"] == ["1.0", "2.0"] and board["size"] == 16 and board["ratio"] == 1.5
    assert board["on"] is True and [i["filename"] for i in board["images"]] == ['a"b', "c"]
    with pytest.raises(LibconfigError, match="line 3"):
        loads('a = 1;\nb = "x";\nc = = 2;')
    with pytest.raises(LibconfigError, match="given twice"):
        loads("a = 1; a = 2;")


def test_a_signed_bundle_verifies_here_and_in_the_real_swupdate(tmp_path: Path, keys: tuple[Signer, Signer]) -> None:
    bundle = make_bundle(tmp_path / "good.swu", keys[0], ROOTFS, version="2.1.0")
    verified = verify_bundle(bundle, keys[0].cert, MACHINE, "1.0")
    assert verified.version == "2.1.0" and {a.filename for a in verified.artefacts} == set(ROOTFS)
    accepted, output = swupdate_check(bundle, keys[0].cert)
    assert accepted, output


def _truncated(tmp_path: Path, keys: tuple[Signer, Signer], at: float) -> Path:
    data = make_bundle(tmp_path / "full.swu", keys[0], ROOTFS).read_bytes()
    path = tmp_path / f"cut-{at}.swu"
    path.write_bytes(data[: int(len(data) * at)])
    return path


def _altered(tmp_path: Path, keys: tuple[Signer, Signer]) -> Path:
    path = make_bundle(tmp_path / "altered.swu", keys[0], ROOTFS)
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0xFF  # inside the last artefact
    path.write_bytes(bytes(data))
    return path


BAD = {
    "unsigned": (lambda p, k: make_bundle(p / "u.swu", None, ROOTFS), "unsigned"),
    "another key": (lambda p, k: make_bundle(p / "o.swu", k[1], ROOTFS), "signature does not verify"),
    "truncated in an artefact": (lambda p, k: _truncated(p, k, 0.6), "truncated"),
    "truncated in the header": (lambda p, k: _truncated(p, k, 0.001), "truncated"),
    "another machine": (
        lambda p, k: make_bundle(p / "m.swu", k[0], ROOTFS, machine="jetson-orin-nano-devkit"),
        "bundle is for jetson-orin-nano-devkit, not for this device (jetson-agx-orin-devkit)",
    ),
    "another revision": (lambda p, k: make_bundle(p / "r.swu", k[0], ROOTFS, revision="2.0"), "revision 2.0"),
    "an altered artefact": (_altered, "does not match its sha256"),
    "not a bundle": (lambda p, k: (p / "x.swu", (p / "x.swu").write_bytes(b"hello" * 100))[0], "not a SWUpdate"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_bundle_is_refused_with_a_reason(case: str, tmp_path: Path, keys: tuple[Signer, Signer]) -> None:
    make, reason = BAD[case]
    bundle = make(tmp_path, keys)
    with pytest.raises(BundleError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        verify_bundle(bundle, keys[0].cert, MACHINE, "1.0")
    if case not in ("another revision",):  # the real SWUpdate refuses it too (-H names only one revision here)
        assert not swupdate_check(bundle, keys[0].cert)[0]


def test_a_missing_artefact_or_hash_is_refused(tmp_path: Path, keys: tuple[Signer, Signer]) -> None:
    from tests.support.swu import description, sign

    text = description("2.0", MACHINE, ROOTFS).encode()
    members = [("sw-description", text), ("sw-description.sig", sign(text, keys[0], tmp_path / "s"))]
    (tmp_path / "missing.swu").write_bytes(cpio(members + [("tegra-bl.cap", ROOTFS["tegra-bl.cap"])]))
    with pytest.raises(BundleError, match="ml-inference-image.rootfs.tar.zst, named in sw-description, is not in"):
        verify_bundle(tmp_path / "missing.swu", keys[0].cert, MACHINE, "1.0")
    unhashed = text.replace(b'sha256 = "', b'md5 = "')
    members = [("sw-description", unhashed), ("sw-description.sig", sign(unhashed, keys[0], tmp_path / "t"))]
    (tmp_path / "nohash.swu").write_bytes(cpio(members + list(ROOTFS.items())))
    with pytest.raises(BundleError, match="has no sha256"):
        verify_bundle(tmp_path / "nohash.swu", keys[0].cert, MACHINE, "1.0")


def test_apply_installs_into_the_other_slot_and_records_it_pending(
    tmp_path: Path, keys: tuple[Signer, Signer], device: dict[str, Any]
) -> None:
    bundle = make_bundle(tmp_path / "good.swu", keys[0], ROOTFS, version="2.2.0")
    wrapper, calls = swupdate_dry_run(tmp_path)
    env = {"FAKE_NVBOOTCTRL_STATE": str(device["state"])}
    common = ["--record", str(device["record"]), "--nvbootctrl", str(FAKE_NVBOOTCTRL)]
    done = cli("update", "apply", str(bundle), "--key", str(device["cert"]), "--hwrevision", str(device["hwrevision"]),
               "--swupdate", str(wrapper), *common, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "installed 2.2.0 into slot b" in done.stdout
    assert "-e system,slot_a" in calls.read_text()  # running on A: sw-description's slot_a writes B
    status = json.loads(cli("update", "status", *common, env=env).stdout)
    assert status["slot"] == "a" and status["pending"]["to_slot"] == "b" and status["pending"]["version"] == "2.2.0"
    assert [h["outcome"] for h in status["history"]] == ["installing", "installed"]
    # A second bundle while the first waits for its health check, from another boot: refused, nothing run.
    record = UpdateRecord(device["record"])
    record.set_pending(Pending("2.2.0", "a", "b", 0.0, "good.swu", boot_id="an earlier boot"))
    calls.unlink()
    again = cli("update", "apply", str(bundle), "--key", str(device["cert"]), "--hwrevision", str(device["hwrevision"]),
                "--swupdate", str(wrapper), *common, env=env)  # fmt: skip
    assert again.returncode == 2 and "still waits for its health check" in again.stderr and not calls.exists()


@pytest.mark.parametrize("case", ["unsigned", "another key", "truncated in an artefact", "another machine"])
def test_apply_refuses_before_anything_is_written(
    case: str, tmp_path: Path, keys: tuple[Signer, Signer], device: dict[str, Any]
) -> None:
    bundle = BAD[case][0](tmp_path, keys)
    wrapper, calls = swupdate_dry_run(tmp_path)
    env = {"FAKE_NVBOOTCTRL_STATE": str(device["state"])}
    done = cli("update", "apply", str(bundle), "--key", str(device["cert"]), "--hwrevision", str(device["hwrevision"]),
               "--swupdate", str(wrapper), "--record", str(device["record"]), "--nvbootctrl", str(FAKE_NVBOOTCTRL),
               env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"appliance update: refused: {bundle.name}: " in done.stderr and "Traceback" not in done.stderr
    assert not calls.exists()  # swupdate never started
    assert UpdateRecord(device["record"]).pending() is None
    assert json.loads(device["state"].read_text())["active"] == 0  # the running slot stays the boot slot


def test_the_decision_table() -> None:
    p = Pending("2.0", "a", "b", 0.0, boot_id="boot-1")
    assert decide(None, "a", "boot-2", False, 0, 600) is Action.KEEP
    assert decide(p, "b", "boot-1", False, 0, 600) is Action.NOT_REBOOTED
    assert decide(p, "a", "boot-2", False, 0, 600) is Action.FAILED_OLD_SLOT  # the bootloader fell back
    assert decide(p, "b", "boot-2", True, 0, 600) is Action.CONFIRM
    assert decide(p, "b", "boot-2", False, 599, 600) is Action.WAIT
    assert decide(p, "b", "boot-2", False, 600, 600) is Action.ROLL_BACK


class FakeSlots:
    """FAKE boot slots in memory (this host has none)."""

    def __init__(self, current: str) -> None:
        self.current_slot, self.active, self.good = current, current, False

    def current(self) -> str:
        return self.current_slot

    def set_active(self, slot: str) -> None:
        self.active = slot

    def mark_successful(self) -> None:
        self.good = True


def _confirm(record: UpdateRecord, slots: FakeSlots, health: Any, timeout_s: float = 30) -> tuple[Action, list[str]]:
    reboots: list[str] = []
    clock = [0.0]
    action = confirm_boot(
        slots, record, health, reboot=lambda: reboots.append("reboot"), timeout_s=timeout_s, interval_s=5,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0],
    )  # fmt: skip
    return action, reboots


def test_a_healthy_new_slot_is_kept(tmp_path: Path, models_server: Any) -> None:
    record = UpdateRecord(tmp_path)
    record.set_pending(Pending("2.0", "a", "b", 0.0, boot_id="an earlier boot"))
    slots = FakeSlots("b")
    action, reboots = _confirm(record, slots, lambda: service_health(models_server.base, None))
    assert action is Action.CONFIRM and slots.good and not reboots and record.pending() is None
    assert record.history()[-1]["outcome"] == "confirmed"


def test_a_new_slot_that_never_gets_healthy_is_rolled_back(tmp_path: Path, server_factory: Any) -> None:
    record = UpdateRecord(tmp_path / "record")
    record.set_pending(Pending("2.0", "a", "b", 0.0, boot_id="an earlier boot"))
    slots = FakeSlots("b")
    action, reboots = _confirm(record, slots, lambda: service_health("http://127.0.0.1:9", None))
    assert action is Action.ROLL_BACK and slots.active == "a" and not slots.good and reboots == ["reboot"]
    last = record.history()[-1]
    assert last["outcome"] == "rolled-back" and "not reachable" in last["message"] and record.pending() is None


def test_a_model_that_fails_to_load_fails_the_health_check(tmp_path: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\n')
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    keys = tmp_path / "keys.json"
    key_file = tmp_path / "read.key"
    created = cli("keys", "create", "--name", "updater", "--role", "read", "--keys-file", str(keys),
                  "--key-out", str(key_file))  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = key_file.read_text().strip()
    server = server_factory(repo, "--auth", "true", "--keys-file", str(keys))
    healthy, why = service_health(server.base, key)
    assert not healthy and why.startswith("models failed to load: broken"), why


def test_the_device_booted_the_old_slot_again(tmp_path: Path) -> None:
    record = UpdateRecord(tmp_path)
    record.set_pending(Pending("2.0", "a", "b", 0.0, boot_id="an earlier boot"))
    slots = FakeSlots("a")  # power lost before the switch, or the bootloader gave up on B
    action, reboots = _confirm(record, slots, lambda: (True, "ready"))
    assert action is Action.FAILED_OLD_SLOT and slots.good and not reboots
    assert record.history()[-1]["outcome"] == "failed" and record.pending() is None


def _layer_bundle(tmp_path: Path, signer: Signer) -> Path:
    """A bundle made from the layer's own sw-description and appliance-update.lua, as ml-inference-update's
    do_swuimage fills them in (@@VAR@@ from BitBake, $swupdate_get_sha256(file) from the artefacts)."""
    import hashlib
    import io
    import re
    import tarfile

    from tests.support.swu import sign

    files = Path(__file__).parent.parent / "recipes-update" / "images" / "files"
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w:gz") as tar:
        data = b"ID=inference\n"
        info = tarfile.TarInfo("etc/os-release")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    artefacts = {
        f"ml-inference-image-{MACHINE}.rootfs.tar.gz": rootfs.getvalue(),
        "tegra-bl.cap": b"capsule" * 100,
        "appliance-update.lua": (files / "appliance-update.lua").read_bytes(),
    }
    variables = {
        "DISTRO_VERSION": "0.2.0", "INFERENCE_BUILD_ID": "abc1234", "MACHINE": MACHINE,
        "APPLIANCE_UPDATE_HWREVISION": "1.0", "ROOTFS_DEVICE_PATH": str(tmp_path / "dev"),
        "ROOTFS_FILENAME": f"ml-inference-image-{MACHINE}.rootfs.tar.gz",
        "TEGRA_SWUPDATE_CAPSULE_INSTALL_PATH": str(tmp_path / "esp" / "TEGRA_BL.Cap"),
        "TEGRA_SWUPDATE_BOOTLOADER_VERSION": "39.2.0",
    }  # fmt: skip
    text = (files / "sw-description").read_text()
    text = re.sub(r"@@(\w+)@@", lambda m: variables[m.group(1)], text)
    text = re.sub(
        r"\$swupdate_get_sha256\(([^)]+)\)", lambda m: hashlib.sha256(artefacts[m.group(1)]).hexdigest(), text
    )
    assert "@@" not in text and "$swupdate" not in text
    desc = text.encode()
    members = [("sw-description", desc), ("sw-description.sig", sign(desc, signer, tmp_path / "sign"))]
    path = tmp_path / "ml-inference-update.swu"
    path.write_bytes(cpio(members + list(artefacts.items())))
    return path


def test_the_layers_own_sw_description_is_what_the_verifier_and_swupdate_accept(
    tmp_path: Path, keys: tuple[Signer, Signer]
) -> None:
    bundle = _layer_bundle(tmp_path, keys[0])
    verified = verify_bundle(bundle, keys[0].cert, MACHINE, "1.0")
    assert verified.version == "0.2.0+abc1234"
    assert {a.filename for a in verified.artefacts} == {
        f"ml-inference-image-{MACHINE}.rootfs.tar.gz",
        "tegra-bl.cap",
        "appliance-update.lua",
    }
    for slot in ("a", "b"):
        accepted, output = swupdate_check(bundle, keys[0].cert, f"system,slot_{slot}")
        assert accepted, output
    with pytest.raises(BundleError, match="revision"):
        verify_bundle(bundle, keys[0].cert, MACHINE, "2.0")

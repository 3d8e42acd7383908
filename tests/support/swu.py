"""Signed SWUpdate bundles made in a test: a certificate and key (openssl), sw-description in the layout of the
image's (``system.slot_a`` / ``slot_b``, every artefact with its sha256), a CMS signature as meta-swupdate makes it,
and the cpio archive (newc) that a ``.swu`` is."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

MACHINE = "jetson-agx-orin-devkit"


@dataclass(frozen=True)
class Signer:
    cert: Path
    key: Path


def make_signer(directory: Path, name: str = "appliance-update") -> Signer:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "30", "-subj", f"/CN={name}", "-addext", "keyUsage=digitalSignature",
         "-addext", "extendedKeyUsage=emailProtection"],
        check=True, capture_output=True,
    )  # fmt: skip
    return Signer(cert, key)


def description(version: str, machine: str, artefacts: dict[str, bytes], revision: str = "1.0",
                install_dir: str = "/tmp/swu-install") -> str:  # fmt: skip
    entries = ",\n".join(
        f'{{ filename = "{name}"; path = "{install_dir}/{name}"; '
        f'properties = {{ create-destination = "true"; }}; sha256 = "{hashlib.sha256(data).hexdigest()}"; }}'
        for name, data in artefacts.items()
    )
    slots = "\n".join(f"slot_{s} : {{ files: ( {entries} ); }};" for s in ("a", "b"))
    return (
        "// made by tests/support/swu.py\nsoftware =\n{\n"
        f'  version = "{version}";\n  {machine} = {{\n    hardware-compatibility: [ "{revision}" ];\n'
        f"    system = {{\n{slots}\n    }};\n  }}\n}}\n"
    )


def sign(text: bytes, signer: Signer, scratch: Path) -> bytes:
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "sw-description").write_bytes(text)
    subprocess.run(
        ["openssl", "cms", "-sign", "-in", str(scratch / "sw-description"), "-out", str(scratch / "sig"),
         "-signer", str(signer.cert), "-inkey", str(signer.key), "-outform", "DER", "-nosmimecap", "-binary"],
        check=True, capture_output=True,
    )  # fmt: skip
    return (scratch / "sig").read_bytes()


def cpio(members: list[tuple[str, bytes]]) -> bytes:
    """A cpio archive in the new ASCII format (070701), as ``cpio -H newc`` writes it."""
    out = bytearray()

    def add(name: str, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields) + encoded)
        out.extend(b"\0" * ((4 - len(out) % 4) % 4))
        out.extend(data)
        out.extend(b"\0" * ((4 - len(out) % 4) % 4))

    for i, (name, data) in enumerate(members, 1):
        add(name, data, i)
    add("TRAILER!!!", b"", 0)
    return bytes(out)


def make_bundle(path: Path, signer: Signer | None, artefacts: dict[str, bytes], version: str = "2.0.0",
                machine: str = MACHINE, revision: str = "1.0", text: str | None = None) -> Path:  # fmt: skip
    """Write a .swu; ``signer=None`` leaves it unsigned."""
    desc = (text if text is not None else description(version, machine, artefacts, revision)).encode()
    members = [("sw-description", desc)]
    if signer is not None:
        members.append(("sw-description.sig", sign(desc, signer, path.parent / f".{path.name}.sign")))
    members += list(artefacts.items())
    path.write_bytes(cpio(members))
    return path


# Debian 12's swupdate (2022.12) sometimes exits 1 after a run it reports successful, in check (-c) and dry-run
# (-n) modes: its main thread can leave before the post-update step (seen in fresh roots, on every run after the
# first). Its verdict is read from what it says instead: success reported, and no error.
def swupdate_accepted(output: str) -> bool:
    return "SWUPDATE successful" in output and "[ERROR]" not in output and "failed" not in output.lower()


def swupdate_check(
    bundle: Path, cert: Path, selection: str = "system,slot_a", machine: str = MACHINE
) -> tuple[bool, str]:
    """The real SWUpdate's verdict on a bundle, without installing anything (-c: check and exit), and its output."""
    done = subprocess.run(
        ["swupdate", "-c", "-m", "-M", "-i", str(bundle), "-k", str(cert), "-e", selection, "-H", f"{machine}:1.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    return swupdate_accepted(output), output


def swupdate_dry_run(directory: Path) -> tuple[Path, Path]:
    """A stand-in for the image's swupdate that is the real one in dry-run mode (-n: everything but writing), with
    this host's hardware revision and its verdict read as :func:`swupdate_accepted` does; it notes each call in the
    second path, so a test sees whether the installation was reached at all."""
    calls = directory / "swupdate-calls"
    wrapper = directory / "swupdate-dry-run"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        f'out=$(swupdate -n -m -M -H {MACHINE}:1.0 "$@" 2>&1)\n'
        'printf "%s\\n" "$out"\n'
        'printf "%s" "$out" | grep -q "SWUPDATE successful" || exit 1\n'
        'printf "%s" "$out" | grep -qi -e "\\[ERROR\\]" -e "failed" && exit 1\n'
        "exit 0\n"
    )
    wrapper.chmod(0o755)
    return wrapper, calls

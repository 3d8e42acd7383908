"""Read and verify a SWUpdate bundle (``.swu``) before anything is written.

A ``.swu`` is a cpio archive in the "new ASCII" format (``070701``, or ``070702`` with checksums): first
``sw-description``, then its signature ``sw-description.sig`` (CMS, what meta-swupdate's ``SWUPDATE_SIGNING = "CMS"``
makes with ``openssl cms -sign``), then the artefacts.
:func:`verify_bundle` reads the whole file once and refuses, with a message that says why, a bundle that is
unsigned, signed by another key, truncated or damaged, made for another machine or hardware revision, or whose
artefacts are missing or do not match their SHA-256 in ``sw-description``. SWUpdate checks the same again while
it installs; checking first means a bad bundle never starts an installation.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .libconfig import LibconfigError, loads

_HEADER = 110  # magic (6) + 13 fields of 8 hex digits
_TRAILER = "TRAILER!!!"
_CHUNK = 1 << 20
_MAX_DESCRIPTION = 1 << 20  # sw-description and its signature are small; a huge one is not a bundle


class BundleError(ValueError):
    """A bundle that is refused; the message says why (and names the file)."""


@dataclass(frozen=True, slots=True)
class Artefact:
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """What a verified bundle holds."""

    path: Path
    version: str
    machine: str
    hardware_compatibility: tuple[str, ...]
    artefacts: tuple[Artefact, ...]
    description: dict[str, Any]


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BundleError(f"truncated: {what} needs {n} bytes, {len(data)} left")
    return data


def _entries(f: BinaryIO) -> Iterator[tuple[str, int]]:
    """(name, size) of each member, with ``f`` positioned at its data; the caller reads or skips exactly ``size``
    bytes. Ends at the trailer; a file that ends before it is truncated."""
    offset = 0
    while True:
        header = f.read(_HEADER)
        if not header:
            raise BundleError(f"truncated: the archive ends at byte {offset} without its trailer")
        if len(header) != _HEADER:
            raise BundleError(f"truncated: a member header at byte {offset} has {len(header)} of {_HEADER} bytes")
        magic = header[:6]
        if magic not in (b"070701", b"070702"):
            raise BundleError(f"not a SWUpdate bundle: no cpio (newc) header at byte {offset}")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise BundleError(f"damaged: the member header at byte {offset} is not hexadecimal") from None
        size, namesize = fields[6], fields[11]
        if namesize == 0 or namesize > 4096:
            raise BundleError(f"damaged: a member name of {namesize} bytes at byte {offset}")
        name = _read_exact(f, namesize, f"the member name at byte {offset}").rstrip(b"\0").decode("utf-8", "replace")
        _read_exact(f, _pad(_HEADER + namesize), f"the padding of {name}")
        if name == _TRAILER:
            return
        start = f.tell()
        yield name, size
        if f.tell() != start + size:  # the caller skipped it
            f.seek(start + size)
        _read_exact(f, _pad(size), f"the padding of {name}")
        offset = f.tell()


def _hash_member(f: BinaryIO, name: str, size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            raise BundleError(f"truncated: {name} has {size - left} of its {size} bytes")
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def _verify_signature(description: bytes, signature: bytes, certificate: Path) -> None:
    """SWUpdate's CMS signature (meta-swupdate's ``SWUPDATE_SIGNING = "CMS"``): a detached DER signature of
    ``sw-description`` by a certificate that chains to ``certificate``, for e-mail protection (SWUpdate's default
    purpose). Checked with ``openssl cms -verify``, as SWUpdate does with libcrypto."""
    with tempfile.TemporaryDirectory(prefix="appliance-update.") as scratch:
        content, sig = Path(scratch) / "sw-description", Path(scratch) / "sw-description.sig"
        content.write_bytes(description)
        sig.write_bytes(signature)
        command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-content", str(content), "-in", str(sig)]
        command += ["-CAfile", str(certificate), "-purpose", "smimesign", "-out", os.devnull]
        try:
            done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BundleError(f"cannot check the signature: openssl: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "Verify error" in line or "verify error" in line]
        detail = lines[0].rsplit(":", 1)[-1].strip() if lines else "the signature does not match"
        raise BundleError(
            f"signature does not verify ({detail}): sw-description is not signed by this device's update certificate"
        )


def _artefacts_of(node: Any, found: dict[str, str], where: str) -> None:
    """Every ``{filename = ...}`` entry under ``node``: filename -> sha256 (required for each one)."""
    if isinstance(node, dict):
        if "filename" in node:
            name = str(node["filename"])
            sha = node.get("sha256")
            if not isinstance(sha, str) or len(sha) != 64:
                raise BundleError(
                    f"sw-description: {where}: {name} has no sha256 (every artefact of a signed bundle needs one)"
                )
            if found.setdefault(name, sha.lower()) != sha.lower():
                raise BundleError(f"sw-description: {name} is given two different sha256")
        for key, value in node.items():
            _artefacts_of(value, found, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _artefacts_of(value, found, f"{where}[{i}]")


def _machine_section(software: dict[str, Any], machine: str, revision: str) -> dict[str, Any]:
    section = software.get(machine)
    if not isinstance(section, dict):
        boards = sorted(k for k, v in software.items() if isinstance(v, dict) and "hardware-compatibility" in v)
        for_whom = ", ".join(boards) or "no machine"
        raise BundleError(f"bundle is for {for_whom}, not for this device ({machine})")
    compatible = [str(r) for r in section.get("hardware-compatibility", [])]
    if compatible and revision not in compatible:
        raise BundleError(
            f"bundle is for {machine} hardware revision {', '.join(compatible)}, this device is revision {revision}"
        )
    return section


def verify_bundle(path: Path, certificate: Path, machine: str, revision: str) -> Bundle:
    """Read ``path`` once and check everything SWUpdate will check; :class:`BundleError` naming what is wrong."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise BundleError(f"{path}: {exc.strerror or exc}") from None
    try:
        with f:
            return _verify(f, path, certificate, machine, revision)
    except BundleError as exc:
        raise BundleError(f"{path.name}: {exc}") from None


def _verify(f: BinaryIO, path: Path, certificate: Path, machine: str, revision: str) -> Bundle:
    entries = _entries(f)
    first = next(entries, None)
    if first is None or first[0] != "sw-description":
        raise BundleError("the first member is not sw-description")
    if first[1] > _MAX_DESCRIPTION:
        raise BundleError(f"sw-description of {first[1]} bytes is too large")
    description_bytes = _read_exact(f, first[1], "sw-description")
    second = next(entries, None)
    if second is None or second[0] != "sw-description.sig":
        raise BundleError("unsigned: sw-description.sig does not follow sw-description")
    if second[1] > _MAX_DESCRIPTION:
        raise BundleError(f"sw-description.sig of {second[1]} bytes is too large")
    _verify_signature(description_bytes, _read_exact(f, second[1], "sw-description.sig"), certificate)
    try:
        description = loads(description_bytes.decode("utf-8"))
    except (LibconfigError, UnicodeDecodeError) as exc:
        raise BundleError(f"sw-description: {exc}") from None
    software = description.get("software")
    if not isinstance(software, dict):
        raise BundleError("sw-description has no 'software' group")
    section = _machine_section(software, machine, revision)
    wanted: dict[str, str] = {}
    _artefacts_of(section, wanted, machine)
    present: dict[str, Artefact] = {}
    for name, size in entries:
        if name in wanted:
            present[name] = Artefact(name, size, _hash_member(f, name, size))
    for name, sha in sorted(wanted.items()):
        if name not in present:
            raise BundleError(f"{name}, named in sw-description, is not in the bundle")
        if present[name].sha256 != sha:
            raise BundleError(f"{name} does not match its sha256 in sw-description (damaged or altered)")
    compatible = tuple(str(r) for r in section.get("hardware-compatibility", []))
    return Bundle(path, str(software.get("version", "")), machine, compatible, tuple(present.values()), description)

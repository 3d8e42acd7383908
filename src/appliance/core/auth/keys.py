"""API keys and their file.

A key is ``apk_<id>_<secret>``: ``id`` (12 hex digits) finds its record at once, ``secret`` is 256 random bits
(base64url). The file keeps, per id, the key's name, role, a salted SHA-256 of the secret, when it was created,
when it expires and when it was revoked, and its own rate limit if it has one; never the key. A plain hash is
enough for secrets of 256 bits (nothing to brute-force); the comparison is constant-time all the same.

The file is JSON, mode 0600, replaced atomically (temporary file, fsync, rename, folder fsync), so a reader (the
running server) sees either the old keys or the new ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..files import write_atomically
from .roles import Role

PREFIX = "apk"
_START = PREFIX + "_"
FORMAT = 1
_ID = re.compile(r"[0-9a-f]{12}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class KeyFileError(ValueError):
    """The key file cannot be read or is not a key file; the message names the file (and line, when known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the file keeps it."""

    id: str
    name: str
    role: Role
    salt: str
    hash: str
    created: dt.datetime
    expires: dt.datetime | None = None
    revoked: dt.datetime | None = None
    rate: float | None = None  # requests per second; None: the server's rate_limit_rps
    burst: int | None = None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, secret), self.hash)

    def valid_at(self, now: dt.datetime) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.label,
            "salt": self.salt,
            "hash": self.hash,
            "created": _time(self.created),
            "expires": _time(self.expires),
            "revoked": _time(self.revoked),
            "rate": self.rate,
            "burst": self.burst,
        }


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def split_key(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a key in the ``apk_<id>_<secret>`` form; None for anything else."""
    if not token.startswith(_START) or len(token) < 33 or token[16] != "_":
        return None
    key_id = token[4:16]
    if not _ID.fullmatch(key_id):
        return None
    return key_id, token[17:]


def new_key(
    name: str,
    role: Role,
    now: dt.datetime,
    expires: dt.datetime | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> tuple[str, KeyRecord]:
    """A fresh key and its record: the key is shown once, the record is what gets stored."""
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    record = KeyRecord(key_id, name, role, salt, _digest(salt, secret), now, expires, None, rate, burst)
    return f"{PREFIX}_{key_id}_{secret}", record


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w``; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"'{text}' is not a duration: a positive whole number and a unit, s, m, h, d or w (90d)")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


# -- the file ------------------------------------------------------------------------------------


def parse_keys(text: str, path: Path) -> dict[str, KeyRecord]:
    """The records of a key file's text, by id. KeyFileError names the file, and the line for bad JSON."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"key file {path}, line {exc.lineno}: not valid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("keys"), dict):
        raise KeyFileError(f'key file {path}: not a key file (expected {{"format": {FORMAT}, "keys": {{...}}}})')
    records = {}
    for key_id, entry in doc["keys"].items():
        try:
            records[key_id] = _record(key_id, entry)
        except (KeyError, TypeError, ValueError) as exc:
            line = _line_of(text, key_id)
            raise KeyFileError(f"key file {path}, line {line}: key '{key_id}': {exc}", line) from None
    return records


def _record(key_id: str, entry: Any) -> KeyRecord:
    if not _ID.fullmatch(key_id):
        raise ValueError("the id is not 12 hex digits")
    if not isinstance(entry, dict):
        raise TypeError("not an object")

    def when(field: str) -> dt.datetime | None:
        value = entry.get(field)
        if value is None:
            return None
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    created = when("created")
    if created is None:
        raise ValueError("no 'created' time")
    bytes.fromhex(entry["salt"])
    if not re.fullmatch(r"[0-9a-f]{64}", entry["hash"]):
        raise ValueError("'hash' is not a SHA-256 in hex")
    rate, burst = entry.get("rate"), entry.get("burst")
    return KeyRecord(
        key_id,
        str(entry["name"]),
        Role.parse(entry["role"]),
        entry["salt"],
        entry["hash"],
        created,
        when("expires"),
        when("revoked"),
        float(rate) if rate is not None else None,
        int(burst) if burst is not None else None,
    )


def _line_of(text: str, key_id: str) -> int:
    index = text.find(json.dumps(key_id))
    return text.count("\n", 0, index) + 1 if index >= 0 else 1


def read_keys(path: Path) -> dict[str, KeyRecord]:
    """The key file's records; an absent file has none. KeyFileError names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_keys(text, path)


def write_keys(path: Path, records: dict[str, KeyRecord]) -> None:
    """Replace the file with ``records``, atomically and durably, readable by its owner only."""
    body = json.dumps({"format": FORMAT, "keys": {i: r.to_json() for i, r in records.items()}}, indent=2) + "\n"
    write_atomically(path, body)  # mode 0600: mkstemp's


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One change of the key file at a time (two ``appliance keys`` commands at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- what ``appliance keys`` does ----------------------------------------------------------------


def create_key(
    path: Path,
    role: Role,
    name: str | None = None,
    expires_in: dt.timedelta | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> tuple[str, KeyRecord]:
    """Add a key to the file; returns the key (to show once) and its record. ValueError for a bad or taken name."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with _locked(path):
        records = read_keys(path)
        key, record = new_key(name or "", role, now, now + expires_in if expires_in else None, rate, burst)
        record = replace(record, name=name or f"{role.label}-{record.id}")
        if not NAME.fullmatch(record.name):
            raise ValueError(f"key name '{record.name}': use 1-64 letters, digits, '.', '_' or '-'")
        if any(r.name == record.name and r.revoked is None for r in records.values()):
            raise ValueError(f"key file {path}: a key named '{record.name}' exists (revoke it first)")
        records[record.id] = record
        write_keys(path, records)
    return key, record


def revoke_key(path: Path, name: str) -> list[KeyRecord]:
    """Revoke the unrevoked keys named ``name``; returns them. ValueError when there is none."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with _locked(path):
        records = read_keys(path)
        found = [r for r in records.values() if r.name == name and r.revoked is None]
        if not found:
            raise ValueError(f"key file {path}: no key named '{name}' that is not revoked already")
        for record in found:
            records[record.id] = replace(record, revoked=now)
        write_keys(path, records)
    return found

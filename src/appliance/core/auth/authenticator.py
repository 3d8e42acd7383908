"""Credentials to principals. A verifier per kind of credential: API keys here, JWTs in ``jwt_tokens.py``.

A verifier's ``verify(token, now)`` answers None for a token that is not of its kind (the next verifier tries),
raises :class:`~appliance.core.errors.Unauthenticated` for one of its kind that is not valid, else returns the
:class:`~.roles.Principal`. The JWT verifier (``jwt_tokens.JwtVerifier``) is the second implementation, tried
after the API keys (a JWT has no ``apk_`` prefix), when a JWT key source is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from ..errors import Unauthenticated
from .keys import KeyFileError, KeyRecord, read_keys, split_key
from .roles import CredentialKind, Principal

log = logging.getLogger(__name__)

#: The one answer to every credential that is not valid: which check failed is not the client's business.
INVALID_CREDENTIALS = "invalid or missing credentials"

#: How often, at most, the key file is checked for a change (one stat).
KEY_FILE_CHECK_S = 0.5


class CredentialVerifier(Protocol):
    def verify(self, token: str, now: float) -> Principal | None:
        """The principal of ``token`` at ``now`` (seconds since the epoch); None when the token is not of this
        verifier's kind; Unauthenticated when it is but is not valid."""
        ...


class _Valid(NamedTuple):
    """A key that may be used, prepared for the check of each request: no parsing, no allocation but the hash."""

    salt: bytes
    digest: bytes
    expires: float  # seconds since the epoch; inf: never
    principal: Principal


def _valid(record: KeyRecord) -> _Valid:
    principal = Principal(record.name, record.role, CredentialKind.API_KEY, record.id, record.rate, record.burst)
    expires = record.expires.timestamp() if record.expires is not None else math.inf
    return _Valid(bytes.fromhex(record.salt), bytes.fromhex(record.hash), expires, principal)


class ApiKeys:
    """The keys of the key file, followed on disk: at most every :data:`KEY_FILE_CHECK_S`, on use, one ``stat``;
    a changed file (inode, size or mtime) is read again. A file that does not parse is logged with its line and
    the last good keys stay; a removed file means no keys."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._valid: dict[str, _Valid] = {}  # the records not revoked, by id
        self._signature: tuple[int, int, int, int] | None = None
        self._checked = -math.inf
        self.refresh()

    def __len__(self) -> int:
        return len(self._records)

    def reload(self) -> None:
        """Read the file now (after this process changed it), not at the next check."""
        self._checked = -math.inf
        self.refresh()

    def refresh(self) -> None:
        now = self._clock()
        if now - self._checked < KEY_FILE_CHECK_S:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            log.error("key file %s: %s; keeping the last good keys", self.path, exc.strerror or exc)
            return
        if signature == self._signature:
            return
        self._signature = signature
        if signature is None:
            if self._records:
                log.warning("key file %s is gone: no key is valid now", self.path)
            else:
                log.warning("key file %s does not exist: no key is valid (appliance keys create)", self.path)
            self._records, self._valid = {}, {}
            return
        try:
            records = read_keys(self.path)
        except KeyFileError as exc:
            log.error("%s; keeping the last good keys (%d)", exc, len(self._records))
            return
        self._records = records
        self._valid = {key_id: _valid(r) for key_id, r in records.items() if r.revoked is None}
        log.info("key file %s: %d keys", self.path, len(records))

    def verify(self, token: str, now: float) -> Principal | None:
        parts = split_key(token)
        if parts is None:
            return None
        self.refresh()
        key = self._valid.get(parts[0])
        if key is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        digest = hashlib.sha256(key.salt + parts[1].encode()).digest()
        if not hmac.compare_digest(digest, key.digest) or now >= key.expires:
            raise Unauthenticated(INVALID_CREDENTIALS)
        return key.principal


class Authenticator:
    """``Authorization`` header values (``Bearer <token>``) to principals, through each verifier in turn."""

    def __init__(self, verifiers: Sequence[CredentialVerifier]) -> None:
        self._verifiers = tuple(verifiers)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a header value; Unauthenticated, always with the same message, for anything else."""
        if not authorization:
            raise Unauthenticated(INVALID_CREDENTIALS)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(INVALID_CREDENTIALS)
        now = time.time()
        for verifier in self._verifiers:
            principal = verifier.verify(token, now)
            if principal is not None:
                return principal
        raise Unauthenticated(INVALID_CREDENTIALS)

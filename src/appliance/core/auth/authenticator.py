"""Credentials to principals. A verifier per kind of credential; API keys are the one kind so far.

A verifier's ``verify(token, now)`` answers None for a token that is not of its kind (the next verifier tries),
raises :class:`~appliance.core.errors.Unauthenticated` for one of its kind that is not valid, else returns the
:class:`~.roles.Principal`. A JWT verifier is a second implementation, tried after the API keys (a JWT has no
``apk_`` prefix).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import Unauthenticated
from .keys import KeyFileError, KeyRecord, read_keys, split_key
from .roles import CredentialKind, Principal

log = logging.getLogger(__name__)

#: The one answer to every credential that is not valid: which check failed is not the client's business.
INVALID_CREDENTIALS = "invalid or missing credentials"

#: How often, at most, the key file is checked for a change (one stat).
KEY_FILE_CHECK_S = 0.5


class CredentialVerifier(Protocol):
    def verify(self, token: str, now: dt.datetime) -> Principal | None: ...


class ApiKeys:
    """The keys of the key file, followed on disk: at most every :data:`KEY_FILE_CHECK_S`, on use, one ``stat``;
    a changed file (inode, size or mtime) is read again. A file that does not parse is logged with its line and
    the last good keys stay; a removed file means no keys."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._signature: tuple[int, int, int, int] | None = None
        self._checked = -math.inf
        self.refresh()

    def __len__(self) -> int:
        return len(self._records)

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
            self._records = {}
            return
        try:
            records = read_keys(self.path)
        except KeyFileError as exc:
            log.error("%s; keeping the last good keys (%d)", exc, len(self._records))
            return
        self._records = records
        log.info("key file %s: %d keys", self.path, len(records))

    def verify(self, token: str, now: dt.datetime) -> Principal | None:
        parts = split_key(token)
        if parts is None:
            return None
        self.refresh()
        record = self._records.get(parts[0])
        if record is None or not record.matches(parts[1]) or not record.valid_at(now):
            raise Unauthenticated(INVALID_CREDENTIALS)
        return Principal(record.name, record.role, CredentialKind.API_KEY, record.id, record.rate, record.burst)


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
        now = dt.datetime.now(dt.UTC)
        for verifier in self._verifiers:
            principal = verifier.verify(token, now)
            if principal is not None:
                return principal
        raise Unauthenticated(INVALID_CREDENTIALS)

"""The one check of every request when ``auth`` is on: authenticate, authorize, rate-limit, audit, count.

The adapters call :meth:`Guard.admitted` with the ``Authorization`` value, the peer, the operation and its
target, around the handler: it raises :class:`~appliance.core.errors.Unauthenticated`,
:class:`~appliance.core.errors.PermissionDenied` or :class:`~appliance.core.errors.RateLimited` before the
handler runs, and for an admin operation records the outcome in the audit log once it has run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from ...settings import MetricsAccess, Settings
from ..errors import InferenceError, PermissionDenied, RateLimited, Unauthenticated
from .audit import AuditLog
from .authenticator import ApiKeys, Authenticator, CredentialVerifier
from .jwt_tokens import JwtVerifier
from .ratelimit import TokenBucket, default_burst, retry_after
from .roles import ANONYMOUS, Operation, Peer, Principal, authorize
from .sessions import PanelSessions

log = logging.getLogger(__name__)


class Guard:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = ApiKeys(settings.keys_file, clock)
        # A JWT verifier only when a key source is set; without one a JWT is just an invalid credential.
        self.jwt = JwtVerifier.from_settings(settings, clock)
        verifiers: list[CredentialVerifier] = [self.keys] if self.jwt is None else [self.keys, self.jwt]
        self.authenticator = Authenticator(verifiers)
        self.audit = AuditLog(settings.audit_log_file, settings.audit_log_max_bytes)
        self.sessions = PanelSessions(settings.panel_session_idle_s, settings.panel_session_max_s, clock)
        self._metrics_access = settings.metrics_access
        self._rate = settings.rate_limit_rps
        self._burst = settings.rate_limit_burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._counts: dict[tuple[str, str], int] = {}  # (key name, result) -> requests

    # -- per request -----------------------------------------------------------------------------

    def admit(self, authorization: str | None, peer: Peer, operation: Operation, target: str = "") -> Principal:
        """The principal allowed to do ``operation``; raises, and audits a refused admin attempt, otherwise."""
        if operation.required is None or (operation is Operation.METRICS and self._metrics_open(peer)):
            return ANONYMOUS
        try:
            principal = self.authenticator.authenticate(authorization)
        except Unauthenticated as exc:
            self._refused("", "unauthenticated", peer, operation, target, exc)
            raise
        try:
            authorize(principal, operation)
        except PermissionDenied as exc:
            self._refused(principal.name, "denied", peer, operation, target, exc)
            raise
        limited = self.charge(principal)
        if limited is not None:
            if operation.audited:
                result = f"rate_limited: {limited.message}"
                self.audit.record(principal.name, peer.address, operation.value, target, result)
            raise limited
        return principal

    def charge(self, principal: Principal) -> RateLimited | None:
        """Count one more request of an admitted principal (each message of a stream after the first): None
        when its rate limit allows it, else the error to answer."""
        wait = self._take(principal)
        if wait:
            self._count(principal.name, "rate_limited")
            return RateLimited(f"rate limit of key '{principal.name}' exceeded", retry_after(wait))
        self._count(principal.name, "ok")
        return None

    @contextlib.contextmanager
    def admitted(
        self, authorization: str | None, peer: Peer, operation: Operation, target: str = ""
    ) -> Iterator[Principal]:
        """:meth:`admit`, then, for an admin operation, the handler's outcome in the audit log."""
        principal = self.admit(authorization, peer, operation, target)
        if not operation.audited:
            yield principal
            return
        try:
            yield principal
        except InferenceError as exc:
            self.audit.record(principal.name, peer.address, operation.value, target, f"error: {exc.message}")
            raise
        except Exception:
            self.audit.record(principal.name, peer.address, operation.value, target, "error: internal error")
            raise
        self.audit.record(principal.name, peer.address, operation.value, target, "ok")

    def _metrics_open(self, peer: Peer) -> bool:
        access = self._metrics_access
        return access is MetricsAccess.OPEN or (access is MetricsAccess.LOOPBACK and peer.local)

    def _refused(
        self, key: str, result: str, peer: Peer, operation: Operation, target: str, exc: InferenceError
    ) -> None:
        self._count(key, result)
        if operation.audited:
            self.audit.record(key, peer.address, operation.value, target, f"{result}: {exc.message}")

    def _take(self, principal: Principal) -> float:
        """0.0 when the principal may go on, else the seconds until its bucket has a token."""
        rate = principal.rate if principal.rate is not None else self._rate
        if rate <= 0 or not principal.bucket:
            return 0.0
        burst = principal.burst or self._burst or default_burst(rate)
        now = self._clock()
        bucket = self._buckets.get(principal.bucket)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[principal.bucket] = TokenBucket(rate, burst, now)
        return bucket.take(now)

    def _count(self, key: str, result: str) -> None:
        self._counts[(key, result)] = self._counts.get((key, result), 0) + 1

    # -- Prometheus ------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "appliance_auth_requests",
            "Requests checked for credentials, by key name or JWT subject ('' without valid credentials) and "
            "result: ok, unauthenticated, denied (role), rate_limited.",
            labels=["key", "result"],
        )
        for (key, result), count in sorted(self._counts.items()):
            requests.add_metric([key, result], count)
        yield requests

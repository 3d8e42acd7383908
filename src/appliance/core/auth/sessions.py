"""Admin panel sessions: a key given once at login, then a cookie; and the CSRF token that goes with it.

A session remembers the credential it was opened with and hands it to the guard on every request, so a panel
request is authenticated, authorized, rate-limited and audited exactly as a script's with that key would be: a
revoked or expired key ends its sessions at once, and the panel can do nothing its key may not. The browser
holds only a random session id (``HttpOnly``, ``SameSite=Strict``, ``Secure`` behind TLS); the server keeps its
SHA-256, never the id itself. A change (any method but GET and HEAD) made with a session cookie must also carry
the session's CSRF token in ``X-CSRF-Token``: a page of another site can make the browser send the cookie, never
read the token. Sessions end after ``panel_session_idle_s`` without a request and ``panel_session_max_s`` after
login, at logout, and when the service restarts (they live in memory).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PermissionDenied, Unauthenticated

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 256  # the oldest go first past this


@dataclass(slots=True)
class Session:
    credential: str  # the Authorization value the session was opened with
    name: str  # the key's name, for the page
    role: str
    csrf: str
    created: float
    seen: float


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class PanelSessions:
    def __init__(self, idle_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.max_s, self._clock = idle_s, max_s, clock
        self._sessions: dict[str, Session] = {}

    def open(self, credential: str, name: str, role: str) -> tuple[str, Session]:
        """A new session for a credential the guard accepted: (the id for the cookie, the session)."""
        now = self._clock()
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].created)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(credential, name, role, secrets.token_urlsafe(32), now, now)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session:
        """The live session of a cookie; Unauthenticated for an unknown (forged), ended or expired one."""
        now = self._clock()
        self._expire(now)
        session = self._sessions.get(_digest(session_id)) if session_id else None
        if session is None:
            raise Unauthenticated("the panel session is unknown or has ended: log in again")
        session.seen = now
        return session

    def check_csrf(self, session: Session, method: str, token: str | None) -> None:
        if method.upper() in SAFE_METHODS:
            return
        if token is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise PermissionDenied("a change from the panel needs its CSRF token (X-CSRF-Token): reload the page")

    def close(self, session_id: str) -> None:
        self._sessions.pop(_digest(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        for key, s in list(self._sessions.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_s:
                del self._sessions[key]

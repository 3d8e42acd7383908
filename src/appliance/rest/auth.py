"""REST side of auth: the ``Authorization`` header and the client's address handed to the core's guard.

With auth on, :func:`guarded` wraps a plain Starlette endpoint (the infer routes) and :func:`guarded_endpoint`
an APIRoute's; both call :meth:`~appliance.core.auth.guard.Guard.admitted` with the operation
the route table names. With auth off, ``rest.app`` uses neither and requests go straight to their handlers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection
from starlette.responses import Response

from ..core.auth.guard import Guard
from ..core.auth.roles import Operation, Peer
from ..core.errors import InvalidArgument, Unsupported
from ..core.shared_memory import is_local_client

DEFAULT_AUDIT_LIMIT = 100
SESSION_COOKIE = "appliance_session"


def credentials(guard: Guard, request: HTTPConnection) -> str | None:
    """The request's credential: its ``Authorization`` header (scripts, clients), else the one its admin panel
    session was opened with (the cookie; a change must also carry the session's CSRF token)."""
    header = request.headers.get("authorization")
    if header is not None:
        return header
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id is None:
        return None
    session = guard.sessions.get(session_id)
    guard.sessions.check_csrf(session, request.scope.get("method", "GET"), request.headers.get("x-csrf-token"))
    return session.credential


def peer(request: HTTPConnection) -> Peer:
    client = request.client
    if client is None:
        return Peer("", is_local_client(None))
    return Peer(f"{client.host}:{client.port}", is_local_client(client.host))


def target(path_params: dict[str, Any]) -> str:
    """What an operation acts on: the model or route named in the path (``name/action`` for a route action)."""
    name = str(path_params.get("model") or path_params.get("name") or "")
    action = path_params.get("action")
    return f"{name}/{action}" if action else name


def guarded_endpoint(guard: Guard, operation: Operation, endpoint: Callable[..., Awaitable[Any]]) -> Any:
    """An APIRoute endpoint that admits the request before calling ``endpoint`` and, for an admin operation,
    records the outcome in the audit log before the response goes out.

    It has ``endpoint``'s signature plus ``request`` (when ``endpoint`` lacks it), so FastAPI hands it the same
    parameters; a wrapper rather than a dependency with ``yield``, whose exit runs before or after the response
    depending on FastAPI's version."""
    signature = inspect.signature(endpoint, eval_str=True)
    takes_request = "request" in signature.parameters
    parameters = list(signature.parameters.values())
    if not takes_request:
        parameters.append(inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request))

    async def admitted(**kwargs: Any) -> Any:
        request: Request = kwargs["request"] if takes_request else kwargs.pop("request")
        authorization = credentials(guard, request)
        if not operation.audited:
            guard.admit(authorization, peer(request), operation)
            return await endpoint(**kwargs)
        with guard.admitted(authorization, peer(request), operation, target(request.path_params)):
            return await endpoint(**kwargs)

    admitted.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    admitted.__name__ = getattr(endpoint, "__name__", "endpoint")
    admitted.__doc__ = endpoint.__doc__
    return admitted


def guarded(
    guard: Guard, operation: Operation, endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """A plain Starlette endpoint that admits the request before calling ``endpoint``."""

    async def admitted(request: Request) -> Response:
        authorization = credentials(guard, request)
        with guard.admitted(authorization, peer(request), operation, target(request.path_params)):
            return await endpoint(request)

    async def admit(request: Request) -> Response:
        guard.admit(credentials(guard, request), peer(request), operation)
        return await endpoint(request)

    return admitted if operation.audited else admit


class AuditEndpoint:
    """``GET /v2/audit?limit=N``: the newest entries of the audit log, oldest first."""

    def __init__(self, guard: Guard | None) -> None:
        self._guard = guard

    async def audit(self, limit: str = str(DEFAULT_AUDIT_LIMIT)) -> dict[str, Any]:
        if self._guard is None:
            raise Unsupported("there is no audit log with auth off (--auth true turns it on)")
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 9):
            raise InvalidArgument(f"'limit' must be a whole number, got '{limit[:32]}'")
        return {"entries": self._guard.audit.recent(int(limit))}

"""``/admin``: the admin panel's pages, its login and logout, and its two static files (:mod:`appliance.panel`).

A page needs a panel session (or auth off); everything on it comes from the ``/v2`` API, called by the page's
script with the session cookie and the CSRF token (:func:`appliance.rest.auth.credentials`). Login takes a key
once, checks it with the guard, and opens a session; every login, good or refused, is in the audit log.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..core.auth.guard import Guard
from ..core.auth.roles import Operation
from ..core.errors import InferenceError, Unauthenticated
from ..panel import pages
from .auth import SESSION_COOKIE, peer

STATIC = {"panel.js": "text/javascript; charset=utf-8", "panel.css": "text/css; charset=utf-8"}
MAX_LOGIN_BYTES = 4096


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=pages.SECURITY_HEADERS)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/admin/login", status_code=303, headers=pages.SECURITY_HEADERS)


class PanelEndpoint:
    def __init__(self, guard: Guard | None) -> None:
        self._guard = guard

    def _viewer(self, request: Request) -> pages.Viewer | None:
        """Who looks at a page; None with auth off. Unauthenticated without a live session."""
        guard = self._guard
        if guard is None:
            return None
        session = guard.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        principal = guard.admit(session.credential, peer(request), Operation.PANEL_VIEW)
        role = principal.role.label if principal.role is not None else ""
        return pages.Viewer(principal.name, role, session.csrf)

    def _page(self, render: object) -> object:
        async def page(request: Request) -> Response:
            try:
                viewer = self._viewer(request)
            except Unauthenticated:
                return _to_login()
            except InferenceError as exc:  # a key without even the read role, a rate limit
                return _html(pages.login(exc.message), 403)
            return _html(render(viewer))  # type: ignore[operator]

        return page

    async def login_page(self, request: Request) -> Response:
        if self._guard is None:
            return RedirectResponse("/admin", status_code=303)
        return _html(pages.login())

    async def login(self, request: Request) -> Response:
        guard = self._guard
        if guard is None:
            return RedirectResponse("/admin", status_code=303)
        body = await request.body()
        if len(body) > MAX_LOGIN_BYTES:
            return _html(pages.login("That is not an API key."), 400)
        form = await request.form()
        key = str(form.get("key") or "").strip()
        credential = f"Bearer {key}"
        who = peer(request)
        try:
            principal = guard.admit(credential, who, Operation.PANEL_VIEW)
        except InferenceError as exc:
            guard.audit.record("", who.address, "panel_login", "", f"refused: {exc.message}")
            message = (
                "That key is not valid: unknown, revoked or expired."
                if isinstance(exc, Unauthenticated)
                else f"That key may not open the panel: {exc.message}"
            )
            return _html(pages.login(message), 401 if isinstance(exc, Unauthenticated) else 403)
        role = principal.role.label if principal.role is not None else ""
        session_id, _ = guard.sessions.open(credential, principal.name, role)
        guard.audit.record(principal.name, who.address, "panel_login", "", "ok")
        response = RedirectResponse("/admin", status_code=303, headers=pages.SECURITY_HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(guard.sessions.max_s),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        guard = self._guard
        if guard is None:
            return RedirectResponse("/admin", status_code=303)
        session_id = request.cookies.get(SESSION_COOKIE, "")
        form = await request.form()
        try:
            session = guard.sessions.get(session_id)
            guard.sessions.check_csrf(session, "POST", str(form.get("csrf") or ""))
        except InferenceError:
            return _to_login()
        guard.sessions.close(session_id)
        guard.audit.record(session.name, peer(request).address, "panel_logout", "", "ok")
        response = _to_login()
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404)
        data = resources.files("appliance.panel").joinpath("static", name).read_bytes()
        headers = {**pages.SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(data, media_type=STATIC[name], headers=headers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin", self._page(pages.overview), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/models", self._page(pages.models), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/routes", self._page(pages.routes), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/timeline", self._page(pages.timeline), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/logs", self._page(pages.logs), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/settings", self._page(pages.settings), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/support", self._page(pages.support), methods=["GET"]),  # type: ignore[arg-type]
            Route("/admin/login", self.login_page, methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/static/{name}", self.static, methods=["GET"]),
        ]

"""The autoscaler's only way to the service: its REST admin API, with the admin key."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..core.autoscaler import Decision

TIMEOUT_S = 10.0


class ServiceError(Exception):
    """The service did not do what was asked. ``status`` is the HTTP status, 0 when it could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Unreachable, refusing the key (it may be made or restored), or failing on its side: wait and retry."""
        return self.status in (0, 401, 403) or self.status >= 500


class AdminClient:
    def __init__(self, url: str, key: str | None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                payload: bytes = response.read()
                return payload
        except urllib.error.HTTPError as exc:
            text = exc.read()[:500].decode("utf-8", "replace")
            try:
                text = str(json.loads(text).get("error", text))
            except (ValueError, AttributeError):
                pass
            raise ServiceError(exc.code, f"{method} {path}: {exc.code} {text}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(0, f"{self.url} unreachable: {reason}") from None

    def metrics(self) -> str:
        return self._call("GET", "/metrics").decode("utf-8", "replace")

    def models(self) -> set[str]:
        """The names of every model in the service's repository (loaded or not)."""
        index = json.loads(self._call("POST", "/v2/repository/index", {}))
        return {str(entry["name"]) for entry in index if isinstance(entry, dict) and "name" in entry}

    def set_instances(self, model: str, count: int) -> bool:
        """Serve ``model`` on ``count`` instances; True when changed in place."""
        path = f"/v2/repository/models/{urllib.parse.quote(model, safe='')}/instances"
        answer = json.loads(self._call("POST", path, {"count": count}))
        return bool(answer.get("in_place"))

    def park(self, model: str) -> None:
        """Unload ``model`` until its next request (409 while it has requests in flight)."""
        self._call("POST", f"/v2/repository/models/{urllib.parse.quote(model, safe='')}/park", {})

    def report(self, decisions: list[Decision]) -> None:
        self._call("POST", "/v2/autoscaler/decisions", {"decisions": [d.to_json() for d in decisions]})

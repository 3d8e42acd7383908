"""``/v2/autoscaler/decisions``: the decisions of ``appliance autoscale``, reported by it and read by anyone with
the ``read`` role (:mod:`appliance.core.autoscaler`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import Response

from ..core.autoscaler import AutoscalerDecisions, Decision
from ..core.errors import InvalidArgument

DEFAULT_LIMIT = 100
MAX_REPORT = 100  # decisions in one report
_MAX_BODY = 256 * 1024


class AutoscalerEndpoint:
    def __init__(self, decisions: AutoscalerDecisions) -> None:
        self._decisions = decisions

    async def decisions(self, limit: str = str(DEFAULT_LIMIT), model: str = "") -> dict[str, Any]:
        """The newest decisions (``?limit=N``, of one model with ``?model=NAME``), oldest first."""
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 9):
            raise InvalidArgument(f"'limit' must be a whole number, got '{limit[:32]}'")
        return {"decisions": self._decisions.recent(int(limit), model)}

    async def report(self, request: Request) -> Response:
        """``{"decisions": [...]}`` from the autoscaler daemon; all of them are checked before any is kept."""
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise InvalidArgument(f"a report is at most {_MAX_BODY} bytes")
        try:
            doc = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise InvalidArgument("the request body is not valid JSON") from None
        items = doc.get("decisions") if isinstance(doc, dict) else None
        if not isinstance(items, list) or len(items) > MAX_REPORT:
            raise InvalidArgument(f"'decisions' must be a list of at most {MAX_REPORT} decisions")
        decisions = [Decision.from_json(item, f"decisions[{i}]") for i, item in enumerate(items)]
        for decision in decisions:
            self._decisions.record(decision)
        return Response(status_code=204)

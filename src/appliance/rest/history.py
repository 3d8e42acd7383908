"""``GET /v2/history`` (the last hours of each model's and the device's figures) and ``GET /v2/events`` (the
timeline: loads, parks, canary steps, autoscaler decisions, throttling): what the admin panel draws."""

from __future__ import annotations

import math
from typing import Any

from ..core.errors import InvalidArgument
from ..core.events import EventLog
from ..core.history import History

DEFAULT_EVENTS = 200


def _since(text: str) -> float:
    try:
        value = float(text) if text else 0.0
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"'since' must be seconds since the epoch, got '{text[:32]}'")
    return value


class HistoryEndpoint:
    def __init__(self, history: History, events: EventLog) -> None:
        self._history, self._events = history, events

    async def history(self, model: str = "", since: str = "") -> dict[str, Any]:
        """Series after ``since`` (epoch seconds), of one ``model`` or all, and the device's."""
        return self._history.to_json(model, _since(since))

    async def events(self, model: str = "", since: str = "", limit: str = str(DEFAULT_EVENTS)) -> dict[str, Any]:
        """The newest events after ``since`` (of ``model`` and the device, when named), oldest first."""
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 9):
            raise InvalidArgument(f"'limit' must be a whole number, got '{limit[:32]}'")
        return {"events": self._events.recent(int(limit), model, _since(since))}

"""What happened to each model, and to the device, in order: the timeline the admin panel draws against latency.

Loads (and failed loads), unloads, parks, instance changes, canary steps and rollbacks, the autoscaler's
decisions, thermal throttling and power mode changes, and at start what the boot found on the data partition and
decided about an A/B update, are kept, the newest :data:`KEEP`, in memory
(``GET /v2/events``). Each event is one line a person reads (``detail``) and the figures behind it (``data``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

KEEP = 5000
KINDS = (
    "load", "load_failed", "unload", "park", "instances", "canary", "autoscaler", "throttling", "power_mode",
    "data_partition", "update",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    time: float  # seconds since the epoch
    kind: str  # one of KINDS
    model: str  # the model or route it concerns; "" for the device
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, keep: int = KEEP, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._clock = clock

    def add(self, kind: str, model: str, detail: str, **data: Any) -> None:
        assert kind in KINDS, kind
        self._events.append(Event(self._clock(), kind, model, detail, data))

    def restore(self, saved: list[dict[str, Any]], now: float) -> int:
        """Put back saved events (``recent``'s), oldest first, before any of this run; events from the future
        (a clock set back) are left out. Returns how many were put back."""
        earlier = [
            Event(float(e["time"]), str(e["kind"]), str(e["model"]), str(e["detail"]), dict(e.get("data") or {}))
            for e in saved
            if e["kind"] in KINDS and float(e["time"]) <= now
        ]
        current = list(self._events)
        self._events.clear()
        self._events.extend(earlier + current)
        return len(earlier)

    def recent(self, limit: int, model: str = "", since: float = 0.0) -> list[dict[str, Any]]:
        """The newest ``limit`` events after ``since`` (of ``model`` and of the device, when a model is named),
        oldest first."""
        chosen = [e for e in self._events if e.time > since and (not model or e.model in (model, ""))]
        return [e.to_json() for e in chosen[-limit:]] if limit > 0 else []

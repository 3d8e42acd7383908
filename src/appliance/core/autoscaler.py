"""The autoscaler's decisions, as the service keeps them: readable through the admin API and as metrics.

``appliance autoscale`` (:mod:`appliance.scaling`) runs as its own daemon and reports each decision here
(``POST /v2/autoscaler/decisions``), so that the API, ``/metrics`` and the panel show one record; the service
keeps the newest :data:`KEEP` in memory. A decision changes nothing by itself: the instance count is changed by
the daemon through ``POST /v2/repository/models/{model}/instances``, audited as any admin action.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .errors import InvalidArgument
from .events import EventLog

KEEP = 1000
ACTIONS = ("up", "down", "hold", "park", "power_up", "power_down")
_MAX_TEXT = 512
_MAX_INPUTS = 32


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision: what the autoscaler saw (``inputs``), what it chose and why.

    ``model`` is empty for a power mode decision, whose ``current`` and ``desired`` are nvpmodel modes."""

    time: float  # seconds since the epoch
    model: str
    action: str  # one of ACTIONS
    current: int
    desired: int
    reason: str
    inputs: dict[str, float | None] = field(default_factory=dict)
    at_max: bool = False  # desired is held down by max_instances (or the highest power mode)
    dry_run: bool = False
    applied: bool = False
    error: str = ""  # why applying it failed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any, where: str = "decision") -> Decision:
        """A decision from its JSON; anything malformed is an :class:`InvalidArgument` naming the field."""
        if not isinstance(doc, dict):
            raise InvalidArgument(f"'{where}' must be an object")
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidArgument(f"'{where}.{unknown[0][:40]}' is not a field of a decision")

        def number(name: str) -> float:
            value = doc.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidArgument(f"'{where}.{name}' must be a number")
            return float(value)

        def whole(name: str) -> int:
            value = doc.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
                raise InvalidArgument(f"'{where}.{name}' must be a whole number from 0")
            return value

        def text(name: str, required: bool = True) -> str:
            value = doc.get(name, None if required else "")
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise InvalidArgument(f"'{where}.{name}' must be a string of at most {_MAX_TEXT} characters")
            return value

        def flag(name: str) -> bool:
            value = doc.get(name, False)
            if not isinstance(value, bool):
                raise InvalidArgument(f"'{where}.{name}' must be true or false")
            return value

        action = text("action")
        if action not in ACTIONS:
            raise InvalidArgument(f"'{where}.action' must be one of {', '.join(ACTIONS)}, got '{action[:40]}'")
        raw_inputs = doc.get("inputs", {})
        if not isinstance(raw_inputs, dict) or len(raw_inputs) > _MAX_INPUTS:
            raise InvalidArgument(f"'{where}.inputs' must be an object of at most {_MAX_INPUTS} numbers")
        inputs: dict[str, float | None] = {}
        for key, value in raw_inputs.items():
            ok = value is None or (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            )
            if len(key) > 64 or not ok:
                raise InvalidArgument(f"'{where}.inputs.{key[:40]}' must be a number or null")
            inputs[key] = None if value is None else float(value)
        return cls(
            time=number("time"),
            model=text("model"),
            action=action,
            current=whole("current"),
            desired=whole("desired"),
            reason=text("reason"),
            inputs=inputs,
            at_max=flag("at_max"),
            dry_run=flag("dry_run"),
            applied=flag("applied"),
            error=text("error", required=False),
        )


class AutoscalerDecisions:
    """The newest decisions, and per model the latest one (for the gauges). A Prometheus collector."""

    def __init__(self, events: EventLog | None = None, keep: int = KEEP) -> None:
        self._events = events  # the timeline: every decision but a hold goes there too
        self._recent: deque[Decision] = deque(maxlen=keep)
        self._latest: dict[str, Decision] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def record(self, decision: Decision) -> None:
        self._recent.append(decision)
        if self._events is not None and decision.action != "hold":
            what = "dry run: " if decision.dry_run else ("failed: " if decision.error else "")
            self._events.add(
                "autoscaler",
                decision.model,
                f"{what}{decision.action} {decision.current} -> {decision.desired}: {decision.reason}",
                action=decision.action,
                current=decision.current,
                desired=decision.desired,
            )
        self._latest[decision.model] = decision
        key = (decision.model, decision.action)
        self._counts[key] = self._counts.get(key, 0) + 1

    def recent(self, limit: int, model: str = "") -> list[dict[str, Any]]:
        """The newest ``limit`` decisions (of ``model``, when named), oldest first."""
        chosen = [d for d in self._recent if not model or d.model == model]
        return [d.to_json() for d in chosen[-limit:]] if limit > 0 else []

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "appliance_autoscaler_decisions",
            "Decisions the autoscaler reported, by model and action (power decisions have model='').",
            labels=["model", "action"],
        )
        for (model, action), count in sorted(self._counts.items()):
            decisions.add_metric([model, action], count)
        yield decisions
        desired = GaugeMetricFamily(
            "appliance_autoscaler_desired_instances", "The instances the autoscaler last chose.", labels=["model"]
        )
        at_max = GaugeMetricFamily(
            "appliance_autoscaler_at_max", "1 while the autoscaler wants more than max_instances.", labels=["model"]
        )
        for model, d in sorted(self._latest.items()):
            if model:
                desired.add_metric([model], d.desired)
                at_max.add_metric([model], int(d.at_max))
        yield desired
        yield at_max
        power = self._latest.get("")
        if power is not None:
            yield GaugeMetricFamily(
                "appliance_autoscaler_power_mode", "The nvpmodel mode the autoscaler last chose.", value=power.desired
            )

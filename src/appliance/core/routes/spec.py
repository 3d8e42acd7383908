"""A route's declaration, as the admin API and the routes file give it, checked field by field.

``{"arms": [{"model": "m", "version": "1", "weight": 90}, {"model": "m", "version": "2", "weight": 10}],
"sticky": "x-user-id", "canary": {...}, "shadow_atol": 1e-5}``. :func:`parse_route` turns the JSON into a
:class:`RouteSpec` or raises :class:`~appliance.core.errors.InvalidArgument` naming the field; what needs the
loaded models (do they exist, do their tensors agree) is checked by the route table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidArgument

#: Route names follow model names' rules: one path segment, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_STICKY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
MAX_ARMS = 16


@dataclass(frozen=True, slots=True)
class Arm:
    """A model (and version; "" is the model's highest ready version) that serves ``weight`` parts of the traffic,
    or, when ``shadow``, gets a copy of every request and answers no client."""

    model: str
    version: str = ""
    weight: int = 0
    shadow: bool = False

    @property
    def label(self) -> str:
        """How metrics and the admin API name the arm: ``m:2``, or ``m`` for the model's default version."""
        return f"{self.model}:{self.version}" if self.version else self.model


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """Move ``arm`` through ``steps`` (percent of the traffic), one step per ``interval_s`` in which it did as
    well as the stable arm (or, with ``baseline``, a fresh copy of it): at most ``max_error_rate_delta`` more
    errors and a p95 latency at most ``max_p95_ratio`` times; a window with fewer than ``min_requests`` on
    either side decides nothing."""

    arm: int
    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval_s: float = 60.0
    min_requests: int = 200
    max_error_rate_delta: float = 0.01
    max_p95_ratio: float = 1.2
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    arms: tuple[Arm, ...]
    sticky: str = ""  # header, gRPC metadata key or request parameter whose value pins a client to an arm
    canary: CanaryPolicy | None = None
    shadow_atol: float = 0.0  # a shadow's output differs when some element is further than this from the arm's

    def serving(self) -> list[int]:
        """Indexes of the arms that answer clients (not shadows)."""
        return [i for i, a in enumerate(self.arms) if not a.shadow]

    def with_weights(self, weights: dict[int, int]) -> RouteSpec:
        return replace(self, arms=tuple(replace(a, weight=weights.get(i, a.weight)) for i, a in enumerate(self.arms)))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"arms": [_arm_json(a) for a in self.arms]}
        if self.sticky:
            doc["sticky"] = self.sticky
        if self.shadow_atol:
            doc["shadow_atol"] = self.shadow_atol
        if self.canary is not None:
            c = self.canary
            doc["canary"] = {
                "arm": c.arm,
                "steps": list(c.steps),
                "interval_s": c.interval_s,
                "min_requests": c.min_requests,
                "max_error_rate_delta": c.max_error_rate_delta,
                "max_p95_ratio": c.max_p95_ratio,
                "baseline": c.baseline,
            }
        return doc


def _arm_json(arm: Arm) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": arm.model}
    if arm.version:
        doc["version"] = arm.version
    if arm.shadow:
        doc["shadow"] = True
    else:
        doc["weight"] = arm.weight
    return doc


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise InvalidArgument(
            f"route name '{shown}': use 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )


def parse_route(name: str, doc: Any) -> RouteSpec:
    """The declaration of route ``name``; InvalidArgument naming the field that is wrong."""
    check_name(name)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"route '{name}': the declaration must be a JSON object")
    known = {"arms", "sticky", "canary", "shadow_atol"}
    for key in doc:
        if key not in known:
            raise InvalidArgument(f"route '{name}': unknown field '{key}' (known: {', '.join(sorted(known))})")
    arms = doc.get("arms")
    if not isinstance(arms, list) or not arms:
        raise InvalidArgument(f"route '{name}': 'arms' must be a non-empty list")
    if len(arms) > MAX_ARMS:
        raise InvalidArgument(f"route '{name}': 'arms' has {len(arms)} arms, at most {MAX_ARMS} are allowed")
    parsed = tuple(_parse_arm(name, i, a) for i, a in enumerate(arms))
    labels = [a.label for a in parsed]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise InvalidArgument(f"route '{name}': arm {i} ({label}) is declared twice")
    serving = [a for a in parsed if not a.shadow]
    if not serving:
        raise InvalidArgument(f"route '{name}': 'arms' has only shadow arms; at least one arm must serve")
    if sum(a.weight for a in serving) == 0:
        raise InvalidArgument(f"route '{name}': the weights of the arms are all zero; at least one must be positive")
    sticky = doc.get("sticky", "")
    if not isinstance(sticky, str) or (sticky and not _STICKY.fullmatch(sticky)):
        raise InvalidArgument(f"route '{name}': 'sticky' must be a header or parameter name (letters, digits, _.-)")
    atol = doc.get("shadow_atol", 0.0)
    if not _is_number(atol) or not math.isfinite(atol) or atol < 0:
        raise InvalidArgument(f"route '{name}': 'shadow_atol' must be a non-negative number")
    spec = RouteSpec(name, parsed, sticky.lower(), None, float(atol))
    if doc.get("canary") is not None:
        spec = replace(spec, canary=_parse_canary(spec, doc["canary"]))
    return spec


def _parse_arm(route: str, index: int, doc: Any) -> Arm:
    what = f"route '{route}': arm {index}"
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: must be an object with 'model' and 'weight'")
    for key in doc:
        if key not in ("model", "version", "weight", "shadow"):
            raise InvalidArgument(f"{what}: unknown field '{key}' (known: model, shadow, version, weight)")
    model = doc.get("model")
    if not isinstance(model, str) or not _NAME.fullmatch(model):
        raise InvalidArgument(f"{what}: 'model' must be a model name")
    version = doc.get("version", "")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or (version and not (version.isascii() and version.isdigit())):
        raise InvalidArgument(f"{what} (model '{model}'): 'version' must be a version number")
    if len(version) > 18:
        raise InvalidArgument(f"{what} (model '{model}'): 'version' has more than 18 digits")
    shadow = doc.get("shadow", False)
    if not isinstance(shadow, bool):
        raise InvalidArgument(f"{what} (model '{model}'): 'shadow' must be true or false")
    weight = doc.get("weight", 0 if shadow else None)
    if weight is None:
        raise InvalidArgument(f"{what} (model '{model}'): 'weight' is missing")
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0 or weight > 1_000_000:
        raise InvalidArgument(f"{what} (model '{model}'): 'weight' must be an integer from 0 to 1000000")
    if shadow and weight:
        raise InvalidArgument(f"{what} (model '{model}'): a shadow arm answers no client, so its 'weight' must be 0")
    return Arm(model, version.lstrip("0") or ("0" if version else ""), weight, shadow)


def _parse_canary(spec: RouteSpec, doc: Any) -> CanaryPolicy:
    what = f"route '{spec.name}': canary"
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: must be an object")
    defaults = CanaryPolicy(arm=0)
    known = {"arm", "steps", "interval_s", "min_requests", "max_error_rate_delta", "max_p95_ratio", "baseline"}
    for key in doc:
        if key not in known:
            raise InvalidArgument(f"{what}: unknown field '{key}' (known: {', '.join(sorted(known))})")
    serving = spec.serving()
    if len(serving) < 2:
        raise InvalidArgument(f"{what}: a canary needs a route with at least two serving arms, this one has one")
    if len(serving) > 2:
        raise InvalidArgument(
            f"{what}: a canary needs exactly two serving arms (stable and canary), not {len(serving)}"
        )
    arm = doc.get("arm")
    if not isinstance(arm, int) or isinstance(arm, bool) or arm not in serving:
        raise InvalidArgument(f"{what}.arm: must be the index of a serving arm ({' or '.join(map(str, serving))})")
    steps = doc.get("steps", list(defaults.steps))
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
    ):
        raise InvalidArgument(f"{what}.steps: must be a non-empty list of percentages from 1 to 100")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise InvalidArgument(f"{what}.steps: must be increasing, got {steps}")
    baseline = doc.get("baseline", False)
    if not isinstance(baseline, bool):
        raise InvalidArgument(f"{what}.baseline: must be true or false")
    if baseline and any(s > 50 for s in steps if s < 100):
        raise InvalidArgument(
            f"{what}.steps: with a baseline, the canary and the baseline each get the step's share, so every step "
            f"below 100 must be at most 50, got {steps}"
        )
    interval = _number(doc, "interval_s", defaults.interval_s, what, low=0.05, high=86400.0)
    min_requests = doc.get("min_requests", defaults.min_requests)
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or not 1 <= min_requests <= 10_000_000:
        raise InvalidArgument(f"{what}.min_requests: must be an integer from 1 to 10000000")
    delta = _number(doc, "max_error_rate_delta", defaults.max_error_rate_delta, what, low=0.0, high=1.0)
    ratio = _number(doc, "max_p95_ratio", defaults.max_p95_ratio, what, low=1.0, high=1000.0)
    return CanaryPolicy(arm, tuple(steps), interval, min_requests, delta, ratio, baseline)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(doc: dict[str, Any], key: str, default: float, what: str, low: float, high: float) -> float:
    value = doc.get(key, default)
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidArgument(f"{what}.{key}: must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)

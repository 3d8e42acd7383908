"""Canary analysis: compare the canary arm with the stable arm over the same window, and decide.

Pure logic over :class:`Window` summaries, so it is tested without a server or a clock. The route
(:mod:`appliance.core.routes.route`) keeps the windows and applies the decisions.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any

from .spec import CanaryPolicy

#: Latencies kept per arm and window for the p95 (reservoir sampling beyond it).
RESERVOIR = 20_000


class Verdict(str, enum.Enum):
    ADVANCE = "advance"  # passed: the canary gets the next step
    PROMOTE = "promote"  # passed the last step, or promoted by an admin: the canary takes all the traffic
    WAIT = "wait"  # too few requests on one side to judge: the step holds and the next window decides
    ROLLBACK = "rollback"  # failed, or rolled back by an admin: the canary gets no traffic
    PAUSE = "pause"  # an admin stopped the analysis: the weights hold
    RESUME = "resume"  # an admin restarted it


class CanaryStatus(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


class Window:
    """What one arm did since the last decision: requests, server-side errors, and the latencies of successes."""

    __slots__ = ("errors", "latencies", "requests", "_rng", "_seen")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._seen = 0
        self._rng = rng or random.Random()

    def success(self, seconds: float) -> None:
        self.requests += 1
        self._seen += 1
        if len(self.latencies) < RESERVOIR:
            self.latencies.append(seconds)
        else:  # reservoir sampling: every success has the same chance to be kept
            slot = self._rng.randrange(self._seen)
            if slot < RESERVOIR:
                self.latencies[slot] = seconds

    def error(self) -> None:
        self.requests += 1
        self.errors += 1

    def summary(self) -> WindowSummary:
        p95 = None
        if self.latencies:
            ordered = sorted(self.latencies)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return WindowSummary(self.requests, self.errors, p95)


@dataclass(frozen=True, slots=True)
class WindowSummary:
    requests: int
    errors: int
    p95_s: float | None  # None: no successful request

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p95_ms": None if self.p95_s is None else round(self.p95_s * 1000, 3),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision, with what it was based on: kept with the route, shown by its GET, logged."""

    time: float  # seconds since the epoch
    verdict: Verdict
    step: int  # the canary's share (percent) after the decision
    reason: str
    canary: WindowSummary | None = None
    reference: WindowSummary | None = None  # the stable arm, or the baseline
    thresholds: dict[str, float] = field(default_factory=dict)
    by: str = "analysis"  # "analysis", or "admin" for the admin API's actions

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "time": round(self.time, 3),
            "decision": self.verdict.value,
            "step": self.step,
            "by": self.by,
            "reason": self.reason,
        }
        if self.canary is not None and self.reference is not None:
            doc["measured"] = {"canary": self.canary.to_json(), "reference": self.reference.to_json()}
            doc["thresholds"] = self.thresholds
        return doc

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Decision:
        measured = doc.get("measured") or {}

        def summary(d: dict[str, Any] | None) -> WindowSummary | None:
            if not d:
                return None
            p95 = d.get("p95_ms")
            return WindowSummary(int(d["requests"]), int(d["errors"]), None if p95 is None else p95 / 1000)

        return Decision(
            time=float(doc["time"]),
            verdict=Verdict(doc["decision"]),
            step=int(doc["step"]),
            reason=str(doc.get("reason", "")),
            canary=summary(measured.get("canary")),
            reference=summary(measured.get("reference")),
            thresholds={k: float(v) for k, v in (doc.get("thresholds") or {}).items()},
            by=str(doc.get("by", "analysis")),
        )


def judge(policy: CanaryPolicy, canary: WindowSummary, reference: WindowSummary) -> tuple[Verdict, str]:
    """PASS (as ADVANCE), ROLLBACK or WAIT for one window, and why, with the numbers."""
    if canary.requests < policy.min_requests or reference.requests < policy.min_requests:
        return Verdict.WAIT, (
            f"too few requests to judge: canary {canary.requests}, reference {reference.requests}, "
            f"min_requests {policy.min_requests}"
        )
    delta = canary.error_rate - reference.error_rate
    if delta > policy.max_error_rate_delta:
        return Verdict.ROLLBACK, (
            f"error rate {canary.error_rate:.4f} against {reference.error_rate:.4f}: "
            f"+{delta:.4f} > max_error_rate_delta {policy.max_error_rate_delta:g}"
        )
    if canary.p95_s is not None and reference.p95_s:
        ratio = canary.p95_s / reference.p95_s
        if ratio > policy.max_p95_ratio:
            return Verdict.ROLLBACK, (
                f"p95 {canary.p95_s * 1000:.3f} ms against {reference.p95_s * 1000:.3f} ms: "
                f"{ratio:.3f}x > max_p95_ratio {policy.max_p95_ratio:g}"
            )
    ratio_text = f"{canary.p95_s / reference.p95_s:.3f}x" if canary.p95_s is not None and reference.p95_s else "n/a"
    return Verdict.ADVANCE, f"error rate +{max(delta, 0.0):.4f}, p95 ratio {ratio_text}: within thresholds"


def thresholds(policy: CanaryPolicy) -> dict[str, float]:
    return {
        "min_requests": policy.min_requests,
        "max_error_rate_delta": policy.max_error_rate_delta,
        "max_p95_ratio": policy.max_p95_ratio,
    }

"""One route at run time: which arm serves a request, what each arm did, the shadows, and the canary's state.

Everything here runs on the event loop thread: counters need no locks. Choosing an arm is one ``random()`` and
a bisection, or, with a sticky key, one hash per arm (weighted rendezvous hashing: a key keeps its arm while the
weights hold, and when they change only the keys that must move do, toward the arm that grew).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ..errors import Conflict, InferenceError, Status
from ..model import ModelVersion
from ..stats import LATENCY_BUCKETS, Histogram
from ..types import InferRequest, InferResponse, RequestedOutput
from .canary import CanaryStatus, Decision, Verdict, Window, WindowSummary, judge, thresholds
from .spec import RouteSpec

log = logging.getLogger(__name__)

#: Statuses that count as the arm's errors; a client's bad request or disconnect is not the arm's fault.
SERVER_ERRORS = frozenset({Status.INTERNAL, Status.UNAVAILABLE, Status.QUEUE_FULL, Status.DEADLINE_EXCEEDED})
#: Shadow requests in flight per route; beyond it a copy is skipped (and counted) rather than queued.
MAX_SHADOWS_IN_FLIGHT = 64
#: Decisions kept per route (the oldest go first).
MAX_DECISIONS = 200

#: How the data plane runs a request: ``call(request, own_inputs, served)`` on ``served``, or on the model the
#: request names when None; ``own_inputs`` asks it to copy inputs read from shared memory, so that a shadow can
#: still read them once the request is done.
Call = Callable[[InferRequest, bool, "ModelVersion | None"], Awaitable[InferResponse]]


class ArmStats:
    """Counters of one arm since the route was declared, and, on a route with a canary, its window for the
    analysis (None otherwise: a plain route keeps no latencies)."""

    __slots__ = ("compared", "differed", "errors", "histogram", "requests", "skipped", "window")

    def __init__(self, window: bool) -> None:
        self.requests = 0
        self.errors = 0
        self.histogram = Histogram(LATENCY_BUCKETS)  # successful requests, seconds
        self.window = Window() if window else None
        self.compared = 0  # shadow arms: answers compared with the serving arm's
        self.differed = 0  # ... and found different beyond shadow_atol
        self.skipped = 0  # ... copies not sent, MAX_SHADOWS_IN_FLIGHT being in flight

    def success(self, seconds: float) -> None:
        self.requests += 1
        self.histogram.observe(seconds)
        if self.window is not None:
            self.window.success(seconds)

    def error(self) -> None:
        self.requests += 1
        self.errors += 1
        if self.window is not None:
            self.window.error()

    def to_json(self, shadow: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "latency_seconds": {
                "buckets": [[le, n] for le, n in self.histogram.cumulative()],
                "sum": round(self.histogram.sum, 6),
            },
        }
        if shadow:
            doc.update(compared=self.compared, differed=self.differed, skipped=self.skipped)
        return doc


class Route:
    def __init__(self, spec: RouteSpec, call: Call, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.arms = [ArmStats(spec.canary is not None) for _ in spec.arms]
        self.canary_status: CanaryStatus | None = CanaryStatus.RUNNING if spec.canary else None
        self.canary_step = 0  # index into spec.canary.steps
        self.decisions: deque[Decision] = deque(maxlen=MAX_DECISIONS)
        self._call = call
        self._clock = clock
        self._rng = random.Random()
        self._shadows = [i for i, a in enumerate(spec.arms) if a.shadow]
        self._shadow_tasks: set[asyncio.Future[None]] = set()
        # A canary's baseline: a copy of the stable version, served as one more arm after the declared ones
        self.baseline: ModelVersion | None = None
        self.baseline_index = len(spec.arms)
        self.baseline_weight = 0
        self.arms.append(ArmStats(spec.canary is not None))
        if spec.canary is not None:
            self._set_canary_share(spec.canary.steps[0])
        self._weights_changed()

    # -- choosing an arm -------------------------------------------------------------------------

    def weight(self, index: int) -> int:
        return self.baseline_weight if index == self.baseline_index else self.spec.arms[index].weight

    def label(self, index: int) -> str:
        """How the metrics, the admin API and ``routed_to`` name an arm; the baseline is its version's ``@baseline``."""
        if index == self.baseline_index:
            _, stable = self.canary_indexes()
            return f"{self.spec.arms[stable].model}:{self.baseline.version if self.baseline else '?'}@baseline"
        return self.spec.arms[index].label

    def _weights_changed(self) -> None:
        candidates = [*self.spec.serving(), *([self.baseline_index] if self.baseline is not None else [])]
        self._serving = [i for i in candidates if self.weight(i) > 0]
        self._cumulative: list[int] = []
        total = 0
        for i in self._serving:
            total += self.weight(i)
            self._cumulative.append(total)
        self._total = total
        self._arm_keys = {i: self.label(i).encode() for i in self._serving}

    def choose(self, sticky: str | None) -> int:
        """The index of the arm that serves a request; ``sticky`` (the request's key) pins it by hashing."""
        if len(self._serving) == 1:
            return self._serving[0]
        if sticky is None:
            at = bisect_right(self._cumulative, self._rng.random() * self._total)
            return self._serving[min(at, len(self._serving) - 1)]
        key = b"\0" + sticky.encode()
        best, best_score = self._serving[0], -math.inf
        for i in self._serving:  # weighted rendezvous hashing: the highest weight / -ln(u) wins
            digest = hashlib.blake2b(self._arm_keys[i] + key, digest_size=8).digest()
            u = (int.from_bytes(digest) + 1) / (2**64 + 1)  # in (0, 1)
            score = self.weight(i) / -math.log(u)
            if score > best_score:
                best, best_score = i, score
        return best

    def sticky_value(self, request: InferRequest) -> str | None:
        name = self.spec.sticky
        if not name:
            return None
        value = request.parameters.get(name) if request.parameters else None
        if value is None:
            value = request.headers.get(name)
        return None if value is None else str(value)

    # -- serving ---------------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        index = self.choose(self.sticky_value(request))
        stats = self.arms[index]
        served = None
        if index == self.baseline_index:
            served = self.baseline
            assert served is not None
            request.model_name, request.model_version = served.name, str(served.version)
        else:
            arm = self.spec.arms[index]
            request.model_name, request.model_version = arm.model, arm.version
        shadows = self._shadows
        start = time.perf_counter()
        try:
            response = await self._call(request, bool(shadows), served)
        except InferenceError as exc:
            if exc.status in SERVER_ERRORS:
                stats.error()
            raise
        stats.success(time.perf_counter() - start)
        routed = f"{response.model_name}:{response.model_version}"
        response.parameters["routed_to"] = routed + "@baseline" if served is not None else routed
        for shadow in shadows:
            self._send_shadow(shadow, request, response)
        return response

    def _send_shadow(self, index: int, request: InferRequest, served: InferResponse) -> None:
        stats = self.arms[index]
        if len(self._shadow_tasks) >= MAX_SHADOWS_IN_FLIGHT:
            stats.skipped += 1
            return
        arm = self.spec.arms[index]
        copy = InferRequest(
            arm.model,
            arm.version,
            request.id,
            inputs=list(request.inputs),
            outputs=[RequestedOutput(o.name, o.classification) for o in request.outputs],
            priority=request.priority,
            timeout_us=request.timeout_us,
            parameters=request.parameters,
        )
        task = asyncio.ensure_future(self._shadow(stats, copy, served))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, stats: ArmStats, request: InferRequest, served: InferResponse) -> None:
        start = time.perf_counter()
        try:
            response = await self._call(request, False, None)
        except InferenceError as exc:
            if exc.status in SERVER_ERRORS:
                stats.error()
            return
        stats.success(time.perf_counter() - start)
        stats.compared += 1
        if differs(served, response, self.spec.shadow_atol):
            stats.differed += 1

    async def stop(self) -> None:
        """Cancel the shadow requests in flight (their answers would go nowhere); unload the baseline."""
        for task in list(self._shadow_tasks):
            task.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        await self.release_baseline()

    def attach_baseline(self, copy: ModelVersion) -> None:
        """Serve ``copy`` (of the stable version) as the baseline arm, with the canary's share."""
        self.baseline = copy
        if self.canary_status in (CanaryStatus.RUNNING, CanaryStatus.PAUSED) and self.spec.canary is not None:
            self._set_canary_share(self.spec.canary.steps[self.canary_step])

    async def release_baseline(self) -> None:
        """Once the canary is done (or the route goes): no traffic to the baseline, then unload it (it drains)."""
        copy, self.baseline = self.baseline, None
        self.baseline_weight = 0
        self._weights_changed()
        if copy is not None:
            await copy.stop()

    def needs_baseline(self) -> bool:
        """Whether a baseline copy should serve now: the canary asks for one and is not done."""
        policy = self.spec.canary
        running = self.canary_status in (CanaryStatus.RUNNING, CanaryStatus.PAUSED)
        return policy is not None and policy.baseline and running

    # -- the canary ------------------------------------------------------------------------------

    def canary_indexes(self) -> tuple[int, int]:
        """The canary arm's index and the stable arm's."""
        assert self.spec.canary is not None
        canary = self.spec.canary.arm
        stable = next(i for i in self.spec.serving() if i != canary)
        return canary, stable

    def _set_canary_share(self, percent: int) -> None:
        """The canary gets ``percent`` of the traffic; with a baseline serving, the baseline as much, and the stable
        arm the rest (at 100, the canary is promoted: it gets everything)."""
        canary, stable = self.canary_indexes()
        copy = self.baseline is not None and percent < 100
        self.baseline_weight = percent if copy else 0
        self.spec = self.spec.with_weights({canary: percent, stable: 100 - percent - self.baseline_weight})
        self._weights_changed()

    def canary_share(self) -> int:
        canary, _ = self.canary_indexes()
        return self.spec.arms[canary].weight

    def analyse(self) -> Decision | None:
        """The periodic decision: compare the window of the canary with the stable arm's, act on it, open a
        new window. None when no canary is running."""
        policy = self.spec.canary
        if policy is None or self.canary_status is not CanaryStatus.RUNNING:
            return None
        canary, stable = self.canary_indexes()
        against = self.baseline_index if self.baseline is not None else stable
        measured, reference = _summary(self.arms[canary]), _summary(self.arms[against])
        verdict, reason = judge(policy, measured, reference)
        if verdict is Verdict.ADVANCE:
            if self.canary_step + 1 >= len(policy.steps) or policy.steps[self.canary_step + 1] >= 100:
                verdict = Verdict.PROMOTE
                reason += "; last step passed: promoted"
                self._finish(CanaryStatus.PROMOTED)
            else:
                self.canary_step += 1
                self._set_canary_share(policy.steps[self.canary_step])
        elif verdict is Verdict.ROLLBACK:
            self._finish(CanaryStatus.ROLLED_BACK)
        if verdict is not Verdict.WAIT:
            self.new_window()
        decision = Decision(
            self._clock(), verdict, self.canary_share(), reason, measured, reference, thresholds(policy)
        )
        self._record(decision)
        return decision

    def new_window(self) -> None:
        for stats in self.arms:
            if stats.window is not None:
                stats.window = Window()

    def _finish(self, status: CanaryStatus) -> None:
        self.canary_status = status
        self._set_canary_share(100 if status is CanaryStatus.PROMOTED else 0)

    def act(self, verdict: Verdict) -> Decision:
        """An admin's promote, rollback, pause or resume; Conflict when no canary can take it."""
        status = self.canary_status
        name = self.spec.name
        if self.spec.canary is None or status is None:
            raise Conflict(f"route '{name}' has no canary")
        if verdict in (Verdict.PROMOTE, Verdict.ROLLBACK, Verdict.PAUSE) and status not in (
            CanaryStatus.RUNNING,
            CanaryStatus.PAUSED,
        ):
            raise Conflict(f"route '{name}': no canary is running (it was {status.value})")
        if verdict is Verdict.PAUSE and status is CanaryStatus.PAUSED:
            raise Conflict(f"route '{name}': the canary is already paused")
        if verdict is Verdict.RESUME and status is not CanaryStatus.PAUSED:
            raise Conflict(f"route '{name}': the canary is not paused (it is {status.value})")
        if verdict is Verdict.PROMOTE:
            self._finish(CanaryStatus.PROMOTED)
        elif verdict is Verdict.ROLLBACK:
            self._finish(CanaryStatus.ROLLED_BACK)
        elif verdict is Verdict.PAUSE:
            self.canary_status = CanaryStatus.PAUSED
        else:
            self.canary_status = CanaryStatus.RUNNING
            self.new_window()  # what happened while paused is not judged
        decision = Decision(self._clock(), verdict, self.canary_share(), f"{verdict.value} by an admin", by="admin")
        self._record(decision)
        return decision

    def _record(self, decision: Decision) -> None:
        if decision.verdict is Verdict.WAIT and self.decisions and self.decisions[-1].verdict is Verdict.WAIT:
            self.decisions.pop()  # a run of windows with too few requests is one entry: the latest
        self.decisions.append(decision)
        log.info(
            "route '%s': canary %s at %d%% (%s): %s",
            self.spec.name,
            decision.verdict.value,
            decision.step,
            decision.by,
            decision.reason,
        )

    # -- state kept on disk ----------------------------------------------------------------------

    def state_json(self) -> dict[str, Any] | None:
        """What a restart must not lose beyond the declaration: the canary's status, step and decisions."""
        if self.canary_status is None:
            return None
        return {
            "status": self.canary_status.value,
            "step": self.canary_step,
            "decisions": [d.to_json() for d in self.decisions],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back the state of :meth:`state_json`: status, step (and so the weights) and decisions."""
        if self.spec.canary is None:
            return
        self.canary_status = CanaryStatus(state["status"])
        self.canary_step = min(int(state["step"]), len(self.spec.canary.steps) - 1)
        self.decisions.extend(Decision.from_json(d) for d in state.get("decisions", []))
        if self.canary_status in (CanaryStatus.PROMOTED, CanaryStatus.ROLLED_BACK):
            self._finish(self.canary_status)
        else:
            self._set_canary_share(self.spec.canary.steps[self.canary_step])

    def to_json(self) -> dict[str, Any]:
        doc = self.spec.to_json()
        for arm, stats, entry in zip(self.spec.arms, self.arms, doc["arms"]):  # the baseline's stats come below
            entry["label"] = arm.label
            entry["stats"] = stats.to_json(arm.shadow)
        doc = {"name": self.spec.name, **doc}
        if self.canary_status is not None:
            doc["canary"].update(
                status=self.canary_status.value,
                share=self.canary_share(),
                decisions=[d.to_json() for d in self.decisions],
            )
            if self.baseline is not None:
                doc["canary"]["baseline_arm"] = {
                    "label": self.label(self.baseline_index),
                    "weight": self.baseline_weight,
                    "stats": self.arms[self.baseline_index].to_json(False),
                }
        return doc


def _summary(stats: ArmStats) -> WindowSummary:
    assert stats.window is not None  # a route with a canary keeps windows
    return stats.window.summary()


def differs(served: InferResponse, shadow: InferResponse, atol: float) -> bool:
    """Whether the shadow's answer differs from the served one: another set of outputs, shape or datatype, or an
    element further than ``atol`` (numbers; NaN equals NaN) or not equal (BYTES)."""
    theirs = {o.name: o for o in shadow.outputs}
    if len(theirs) != len(served.outputs):
        return True
    for ours in served.outputs:
        other = theirs.get(ours.name)
        if other is None or other.datatype != ours.datatype or tuple(other.shape) != tuple(ours.shape):
            return True
        a, b = ours.data, other.data
        if a.dtype.kind in "OSUb" or b.dtype.kind in "OSUb":
            if not np.array_equal(a, b):
                return True
        elif not np.allclose(a, b, rtol=0.0, atol=atol, equal_nan=True):
            return True
    return False

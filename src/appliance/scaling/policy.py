"""How many instances a model should have: a recommendation per look, then a stabilisation window.

Each look recommends ``ceil(ongoing / target_ongoing_requests)`` instances (Ray Serve's rule), one more when the
p95 is over its objective while requests wait, none more while the GPU is at its ceiling, clamped to
``[min_instances, max_instances]``; a load within ``1 ± tolerance`` of the target keeps the count.

The count changes only when the recommendations of a whole window agree, as Kubernetes' HPA does with
``stabilizationWindowSeconds``: up to the *lowest* recommendation of the last ``scale_up_delay_s``, down to the
*highest* of the last ``scale_down_delay_s``. A load that swings every few seconds therefore moves the count by
its trend, never by its swings: a short burst does not outlast the up window, a short lull does not outlast the
down window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .config import ModelPolicy
from .signals import ModelLoad


@dataclass(frozen=True, slots=True)
class Recommendation:
    desired: int
    reason: str
    at_max: bool


def recommend(policy: ModelPolicy, load: ModelLoad) -> Recommendation:
    """This look's recommendation, before stabilisation."""
    current = max(load.instances, 1)
    target = policy.target_ongoing_requests
    ratio = load.ongoing / (current * target)
    if abs(ratio - 1) <= policy.tolerance:
        desired, reason = current, f"in flight {load.ongoing:.2f} within tolerance of {current} x {target:g}"
    else:
        desired = math.ceil(load.ongoing / target - 1e-9) if load.ongoing > 0 else 0
        reason = f"in flight {load.ongoing:.2f} for a target of {target:g} per instance"
    objective_s = policy.p95_objective_ms / 1000
    if objective_s > 0 and load.p95_s is not None and load.p95_s > objective_s and load.ongoing > current:
        if desired <= current:
            desired = current + 1
            reason = f"p95 {load.p95_s * 1000:.1f} ms over the objective {policy.p95_objective_ms:g} ms, requests wait"
    ceiling = policy.gpu_load_ceiling
    if desired > current and load.gpu_load is not None and load.gpu_load >= ceiling:
        desired = current
        reason = f"GPU load {load.gpu_load:.2f} at its ceiling {ceiling:g}: more instances would only queue"
    at_max = desired > policy.max_instances
    if at_max:
        reason += f"; held at max_instances {policy.max_instances}"
    elif desired < policy.min_instances:
        reason += f"; held at min_instances {policy.min_instances}"
    return Recommendation(min(max(desired, policy.min_instances), policy.max_instances), reason, at_max)


class Stabiliser:
    """The recommendations of one model over the longer of its two windows, and the count they agree on."""

    def __init__(self, policy: ModelPolicy) -> None:
        self.policy = policy
        self._history: deque[tuple[float, int]] = deque()

    def decide(self, now: float, current: int, recommended: int) -> int:
        """The count to have now: ``current`` unless a whole window agrees on another.

        Before a window has filled, the time not yet seen counts as a recommendation of ``current``."""
        if not self._history:
            self._history.append((now - max(self.policy.scale_up_delay_s, self.policy.scale_down_delay_s), current))
        self._history.append((now, recommended))
        horizon = now - max(self.policy.scale_up_delay_s, self.policy.scale_down_delay_s)
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            self._history.popleft()
        up = self._lowest_since(now - self.policy.scale_up_delay_s)
        if up > current:
            return up
        down = self._highest_since(now - self.policy.scale_down_delay_s)
        if down < current:
            return down
        return current

    def _window(self, since: float) -> list[int]:
        # The recommendation in force at `since` (the last one made before it) and every one after.
        values: list[int] = []
        for i, (_, value) in enumerate(self._history):
            following = self._history[i + 1][0] if i + 1 < len(self._history) else math.inf
            if following > since:
                values.append(value)
        return values

    def _lowest_since(self, since: float) -> int:
        return min(self._window(since))

    def _highest_since(self, since: float) -> int:
        return max(self._window(since))

    def forget(self) -> None:
        """Start over (after the count was changed, or the model reloaded)."""
        self._history.clear()

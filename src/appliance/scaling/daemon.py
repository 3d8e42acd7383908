"""``appliance autoscale``: look at the service every ``interval_s``, decide, act, report.

Each look scrapes ``/metrics`` (:mod:`.signals`), recommends and stabilises each configured model's instance
count (:mod:`.policy`), changes it through ``POST /v2/repository/models/{model}/instances`` unless ``dry_run``,
parks an idle model under memory pressure (``[memory]``: ``POST /v2/repository/models/{model}/park``), steps the
power mode where ``[power]`` is enabled (:mod:`.power`), and logs every decision with its reason and inputs and
reports it to the service (``/v2/autoscaler/decisions``, the ``appliance_autoscaler_*`` metrics).

The service is never restarted, and its absence is not an error: unreachable, or answering 401, the daemon
waits with back-off (up to :data:`MAX_BACKOFF_S`) and tries again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.autoscaler import Decision
from .client import AdminClient, ServiceError
from .config import AutoscalerConfig, check_models
from .policy import Stabiliser, recommend
from .power import PowerStepper, request_mode
from .signals import ModelLoad, Scrape, loads, parse_scrape

log = logging.getLogger("appliance.autoscaler")

MAX_BACKOFF_S = 60.0
RETRY_FAILED_CHANGE_S = 60.0  # after the service refused a change for a model
_MAX_UNREPORTED = 100


@dataclass(slots=True)
class _ModelState:
    stabiliser: Stabiliser
    note: str = ""  # the kind of the last hold reported (not_loaded, parked, no_count, at_max)
    retry_after: float = 0.0


class Autoscaler:
    def __init__(
        self,
        config: AutoscalerConfig,
        client: AdminClient,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        power_request: Callable[[int], None] = request_mode,
    ) -> None:
        self.config = config
        self.client = client
        self._clock = clock
        self._wall = wall
        self._power_request = power_request
        self._models = {name: _ModelState(Stabiliser(p)) for name, p in config.model_policies().items()}
        self._power = PowerStepper(config.power) if config.power.enabled else None
        self._previous: Scrape | None = None
        self._unreported: list[Decision] = []
        self._checked = False
        self._last_active: dict[str, float] = {}  # when each model last had a request (monotonic)

    def step(self) -> list[Decision]:
        """One look; the decisions it made. ServiceError when the service cannot be read."""
        if not self._checked:
            check_models(self.config, self.client.models())  # ConfigError: refused at start
            self.client.report([])  # proves the key is an admin's (a read key: 403, waited out like a 401)
            self._checked = True
        scrape = parse_scrape(self.client.metrics(), self._clock())
        previous, self._previous = self._previous, scrape
        if previous is None:
            return []
        now = scrape.time
        decisions: list[Decision] = []
        current_loads = loads(previous, scrape)
        for name, state in self._models.items():
            load = current_loads.get(name)
            if (
                load is None
                or load.request_rate > 0
                or load.pending > 0
                or load.ongoing > 0
                or name not in self._last_active
            ):
                self._last_active[name] = now
            decision = self._decide_model(name, state, load, now)
            if decision is not None:
                decisions.append(decision)
        if self.config.memory.enabled:
            decision = self._decide_park(scrape, current_loads, now)
            if decision is not None:
                decisions.append(decision)
        if self._power is not None:
            decision = self._decide_power(scrape)
            if decision is not None:
                decisions.append(decision)
        for decision in decisions:
            log.info(
                "%s %s: %d -> %d: %s%s%s %s",
                decision.model or "power mode",
                decision.action,
                decision.current,
                decision.desired,
                decision.reason,
                " (dry run)" if decision.dry_run else "",
                f" FAILED: {decision.error}" if decision.error else "",
                json.dumps(decision.inputs),
            )
        self._report(decisions)
        return decisions

    def _decision(
        self,
        model: str,
        action: str,
        current: int,
        desired: int,
        reason: str,
        inputs: dict[str, float | None],
        *,
        at_max: bool = False,
        applied: bool = False,
        error: str = "",
    ) -> Decision:
        return Decision(
            self._wall(), model, action, current, desired, reason, inputs, at_max, self.config.dry_run, applied, error
        )

    def _note(
        self, name: str, state: _ModelState, kind: str, reason: str, current: int, inputs: dict[str, float | None]
    ) -> Decision | None:
        """A hold worth a record, reported once when it begins (``kind`` tells one kind of hold from another)."""
        if state.note == kind:
            return None
        state.note = kind
        if kind != "at_max":
            state.stabiliser.forget()
        return self._decision(name, "hold", current, current, reason, inputs=inputs, at_max=kind == "at_max")

    def _decide_model(self, name: str, state: _ModelState, load: ModelLoad | None, now: float) -> Decision | None:
        policy = state.stabiliser.policy
        if load is not None and load.parked:
            return self._note(name, state, "parked", "parked: loads again on its next request", 0, {})
        if load is None or not load.ready:
            return self._note(name, state, "not_loaded", "not loaded: nothing to scale", 0, {})
        if load.instances < 1:
            reason = "its backend reports no instance count: not scaled"
            return self._note(name, state, "no_count", reason, 0, load.inputs())
        current = load.instances
        recommendation = recommend(policy, load)
        desired = state.stabiliser.decide(now, current, recommendation.desired)
        inputs = {**load.inputs(), "recommended": recommendation.desired, "target": policy.target_ongoing_requests}
        if desired == current:
            if recommendation.at_max:
                return self._note(name, state, "at_max", recommendation.reason, current, inputs)
            if state.note == "at_max":
                return self._note(name, state, "", f"no longer held at max: {recommendation.reason}", current, inputs)
            state.note = ""
            return None
        if now < state.retry_after:
            return None
        state.note = "at_max" if recommendation.at_max and desired == policy.max_instances else ""
        action = "up" if desired > current else "down"
        window = policy.scale_up_delay_s if action == "up" else policy.scale_down_delay_s
        reason = f"{recommendation.reason}; every recommendation of the last {window:g} s agrees on {desired}"
        applied, error = False, ""
        if not self.config.dry_run:
            try:
                self.client.set_instances(name, desired)
                applied = True
            except ServiceError as exc:
                if exc.retryable:
                    raise
                error = str(exc)
                state.retry_after = now + RETRY_FAILED_CHANGE_S
        state.stabiliser.forget()
        return self._decision(
            name,
            action,
            current,
            desired,
            reason,
            inputs=inputs,
            at_max=recommendation.at_max,
            applied=applied,
            error=error,
        )

    def _decide_park(self, scrape: Scrape, current: dict[str, ModelLoad], now: float) -> Decision | None:
        """Under memory pressure, park one idle model: the one that frees the most memory per second of reload.

        Pressure: less than ``min_available_ratio`` of the device's memory available, or the loaded models holding
        more than ``model_budget_bytes`` (by the service's estimates)."""
        memory = self.config.memory
        available, total = scrape.memory_available, scrape.memory_total
        held = sum(load.memory_bytes or 0 for load in current.values() if load.ready and not load.parked)
        pressure = ""
        if memory.min_available_ratio > 0 and available is not None and total:
            if available / total < memory.min_available_ratio:
                pressure = f"available memory {available / total:.1%} below {memory.min_available_ratio:.0%}"
        if not pressure and memory.model_budget_bytes > 0 and held > memory.model_budget_bytes:
            pressure = f"models hold {held / 1e6:.0f} MB, over the budget of {memory.model_budget_bytes / 1e6:.0f} MB"
        if not pressure:
            return None
        candidates = []
        for name, state in self._models.items():
            load, after = current.get(name), state.stabiliser.policy.park_idle_after_s
            idle_s = now - self._last_active.get(name, now)
            if load is None or not load.ready or load.parked or after <= 0 or idle_s < after or now < state.retry_after:
                continue
            frees = load.memory_bytes or 0.0
            cost = (load.load_seconds if load.load_seconds is not None else math.inf) / max(frees, 1.0)
            candidates.append((cost, name, load, idle_s))
        if not candidates:
            return None
        _, name, load, idle_s = min(candidates)
        state = self._models[name]
        inputs: dict[str, float | None] = {
            "available_ratio": None if available is None or not total else round(available / total, 4),
            "models_bytes": held,
            "memory_bytes": load.memory_bytes,
            "load_seconds": load.load_seconds,
            "idle_s": round(idle_s, 1),
        }
        reason = (
            f"{pressure}: idle for {idle_s:.1f} s, frees about {(load.memory_bytes or 0) / 1e6:.0f} MB, "
            f"loads again in {load.load_seconds or 0:.2f} s"
        )
        applied, error = False, ""
        if not self.config.dry_run:
            try:
                self.client.park(name)
                applied = True
            except ServiceError as exc:
                if exc.retryable:
                    raise
                error = str(exc)
        # Not again before the next scrapes show what came of it (after a refusal: a minute).
        state.retry_after = now + (RETRY_FAILED_CHANGE_S if error else 2 * self.config.interval_s)
        return self._decision(name, "park", load.instances, 0, reason, inputs=inputs, applied=applied, error=error)

    def _decide_power(self, scrape: Scrape) -> Decision | None:
        assert self._power is not None
        step = self._power.decide(scrape.time, scrape.gpu_load, scrape.power_mode)
        if step is None:
            return None
        inputs: dict[str, float | None] = {"gpu_load": scrape.gpu_load, "power_mode": scrape.power_mode}
        if step.desired == step.current:
            return self._decision("", "hold", step.current, step.current, step.reason, inputs=inputs, at_max=True)
        action = (
            "power_up"
            if self.config.power.modes.index(step.desired) > self.config.power.modes.index(step.current)
            else "power_down"
        )
        applied, error = False, ""
        if not self.config.dry_run:
            try:
                self._power_request(step.desired)
                applied = True  # asked: appliance-power-mode.service applies it, the next scrape shows it
            except OSError as exc:
                error = f"cannot write the power mode request: {exc}"
        return self._decision(
            "", action, step.current, step.desired, step.reason, inputs=inputs, applied=applied, error=error
        )

    def _report(self, decisions: list[Decision]) -> None:
        """Send decisions to the service; kept (the newest :data:`_MAX_UNREPORTED`) while it cannot take them."""
        self._unreported = (self._unreported + decisions)[-_MAX_UNREPORTED:]
        if not self._unreported:
            return
        try:
            self.client.report(self._unreported)
            self._unreported = []
        except ServiceError as exc:
            log.warning("decisions not reported yet (%d kept): %s", len(self._unreported), exc)

    def lost_contact(self) -> None:
        """The service went away: the next scrape starts a new interval."""
        self._previous = None

    def run(self, stop: threading.Event) -> None:
        """Look every ``interval_s`` until ``stop`` is set; wait and retry with back-off while the service is away.

        A configuration that names a model the service lacks raises ConfigError (the caller exits)."""
        backoff = self.config.interval_s
        while not stop.is_set():
            wait = self.config.interval_s
            try:
                self.step()
                backoff = self.config.interval_s
            except ServiceError as exc:
                self.lost_contact()
                wait = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                log.warning("service not usable: %s; next try in %.1f s", exc, wait)
            stop.wait(wait)

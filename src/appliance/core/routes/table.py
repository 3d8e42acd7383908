"""The routes of one server: declared, replaced and deleted through the admin API, kept in the routes file, run
by the data plane, analysed by one canary task per route, and reported in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..errors import Conflict, InferenceError, InternalError, InvalidArgument, NotFound, Unavailable
from ..events import EventLog
from ..metadata import ModelMetadata, TensorMetadata
from ..model import ModelVersion
from ..repository import ModelRepository
from .canary import Decision, Verdict
from .route import Call, Route
from .spec import RouteSpec, check_name, parse_route
from .store import RoutesFileError, read_routes, write_routes

log = logging.getLogger(__name__)


class RouteTable:
    """Routes by name. ``path`` is the routes file (None: routes live in memory only); ``call`` runs a request
    on a model (the data plane's)."""

    def __init__(self, repository: ModelRepository, path: Path | None, call: Call) -> None:
        self.repository = repository
        self.path = path
        self.routes: dict[str, Route] = {}
        self._call = call
        self._canaries: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one admin change at a time, each kept on disk before the next
        self.decision_counts: dict[tuple[str, str], int] = {}  # (route, decision): for the metrics
        self.events: EventLog | None = None  # the timeline (set by the data plane)

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.routes

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back the routes of the routes file. A route that cannot be taken back is left out, with an error
        naming the file and the line; the others serve."""
        if self.path is None:
            log.info("routes: no routes file; declared routes last until the server stops")
            return
        try:
            stored = await asyncio.to_thread(read_routes, self.path)
        except RoutesFileError as exc:
            log.error("%s; starting with no routes", exc)
            return
        for entry in stored:
            where = f"routes file {self.path} line {entry.line}"
            try:
                spec = parse_route(entry.name, entry.declaration)
                self._check_name_free(entry.name)
                route = Route(spec, self._call)
                if entry.state is not None:
                    route.restore(entry.state)
                await self._load_baseline(route)
            except InferenceError as exc:
                log.error("%s: %s; the route is left out", where, exc.message)
                continue
            except (KeyError, TypeError, ValueError) as exc:
                log.error(
                    "%s: route '%s': its canary state is not readable (%s); the route is left out",
                    where,
                    entry.name,
                    exc,
                )
                continue
            self.routes[entry.name] = route
            self._start_canary(route)
            log.info("route '%s' taken back from %s", entry.name, self.path)

    async def stop(self) -> None:
        for name in list(self._canaries):
            await self._stop_canary(name)
        for route in self.routes.values():
            await route.stop()

    # -- the admin API ---------------------------------------------------------------------------

    def report(self, name: str) -> dict[str, Any]:
        return self._route(name).to_json()

    def reports(self) -> list[dict[str, Any]]:
        return [self.routes[name].to_json() for name in sorted(self.routes)]

    async def declare(self, name: str, doc: Any) -> dict[str, Any]:
        """Declare a route, or replace one (its counters and canary start again)."""
        spec = parse_route(name, doc)
        async with self._lock:
            self._check_name_free(name)
            self._check_arms(spec)
            old = self.routes.get(name)
            route = Route(spec, self._call)
            await self._load_baseline(route)
            try:
                await self._save({**self.routes, name: route})  # on disk first: a failed write changes nothing
            except InternalError:
                await route.stop()
                raise
            await self._stop_canary(name)
            self.routes[name] = route
            if old is not None:
                await old.stop()
            self._start_canary(route)
        log.info("route '%s' %s: %s", name, "replaced" if old else "declared", route.spec.to_json())
        return route.to_json()

    async def delete(self, name: str) -> None:
        async with self._lock:
            route = self._route(name)
            await self._save({n: r for n, r in self.routes.items() if n != name})
            await self._stop_canary(name)
            del self.routes[name]
            await route.stop()
        log.info("route '%s' deleted", name)

    async def act(self, name: str, verdict: Verdict) -> dict[str, Any]:
        """promote, rollback, pause or resume the route's canary."""
        async with self._lock:
            route = self._route(name)
            decision = route.act(verdict)
            self._count(name, decision.verdict.value)
            self._event(name, decision)
            if not route.needs_baseline():
                await route.release_baseline()
            await self._save()
        return route.to_json()

    def _route(self, name: str) -> Route:
        route = self.routes.get(name)
        if route is None:
            check_name(name)
            raise NotFound(f"route '{name}' is not declared")
        return route

    def _check_name_free(self, name: str) -> None:
        if name in self.repository.models or name in self.repository.names_on_disk():
            raise Conflict(f"route '{name}' has the name of model '{name}' in the model repository")

    def _check_arms(self, spec: RouteSpec) -> None:
        """Every arm is a model version that serves now, and all agree on their inputs and outputs."""
        reference: tuple[int, ModelMetadata] | None = None
        for index, arm in enumerate(spec.arms):
            what = f"route '{spec.name}': arm {index} ({arm.label})"
            if arm.model in self.routes:
                raise InvalidArgument(f"{what}: '{arm.model}' is a route; an arm must be a model")
            try:
                metadata = self.repository.get(arm.model, arm.version).metadata([])
            except (NotFound, Unavailable) as exc:
                raise InvalidArgument(f"{what}: {exc.message}") from None
            if reference is None:
                reference = (index, metadata)
                continue
            first, expected = reference
            for kind, ours, theirs in (
                ("input", expected.inputs, metadata.inputs),
                ("output", expected.outputs, metadata.outputs),
            ):
                problem = _tensors_differ(ours, theirs)
                if problem:
                    raise InvalidArgument(
                        f"{what} differs from arm {first} ({spec.arms[first].label}) in {kind} {problem}"
                    )

    # -- serving ---------------------------------------------------------------------------------

    def metadata(self, name: str) -> ModelMetadata:
        """What a client sees of the route: the name, and the tensors of its first serving arm."""
        route = self._route(name)
        first = route.spec.arms[route.spec.serving()[0]]
        metadata = self.repository.get(first.model, first.version).metadata([])
        return ModelMetadata(name, (), metadata.platform, metadata.inputs, metadata.outputs)

    def stable_model(self, name: str) -> ModelVersion:
        """The model version of the route's stable arm (with a canary, the arm it is compared against; otherwise
        the first serving arm): what image requests read their preprocessing from."""
        route = self._route(name)
        index = route.canary_indexes()[1] if route.spec.canary is not None else route.spec.serving()[0]
        arm = route.spec.arms[index]
        return self.repository.get(arm.model, arm.version)

    def ready(self, name: str) -> bool:
        """Ready when every arm that gets traffic is."""
        route = self._route(name)
        for index in route.spec.serving():
            arm = route.spec.arms[index]
            if arm.weight == 0:
                continue
            try:
                self.repository.get(arm.model, arm.version)
            except (NotFound, Unavailable):
                return False
        return True

    # -- the canary analysis ---------------------------------------------------------------------

    def _start_canary(self, route: Route) -> None:
        if route.spec.canary is not None:
            self._canaries[route.spec.name] = asyncio.create_task(self._analyse_forever(route))

    async def _stop_canary(self, name: str) -> None:
        task = self._canaries.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _analyse_forever(self, route: Route) -> None:
        assert route.spec.canary is not None
        interval = route.spec.canary.interval_s
        route.new_window()
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    decision = route.analyse()
                    if decision is None:
                        continue
                    self._count(route.spec.name, decision.verdict.value)
                    if decision.verdict is not Verdict.WAIT:
                        self._event(route.spec.name, decision)
                    if not route.needs_baseline():
                        await route.release_baseline()
                    if decision.verdict is not Verdict.WAIT:
                        await self._save()
            except Exception:
                log.exception("route '%s': the canary analysis failed", route.spec.name)

    async def _load_baseline(self, route: Route) -> None:
        """Load the copy of the stable version that a canary with ``baseline`` compares against."""
        if not route.needs_baseline():
            return
        _, stable = route.canary_indexes()
        arm = route.spec.arms[stable]
        what = f"route '{route.spec.name}': canary.baseline (a copy of arm {stable}, {arm.label})"
        try:
            served = self.repository.get(arm.model, arm.version)
            copy = await self.repository.load_copy(arm.model, arm.version, f"{served.version}@{route.spec.name}")
        except (NotFound, Unavailable, InvalidArgument) as exc:
            raise InvalidArgument(f"{what}: {exc.message}") from None
        route.attach_baseline(copy)
        log.info("%s: loaded", what)

    def _event(self, name: str, decision: Decision) -> None:
        if self.events is not None:
            self.events.add(
                "canary",
                name,
                f"{decision.verdict.value} ({decision.by}), now {decision.step}%: {decision.reason}",
                decision=decision.verdict.value,
                step=decision.step,
                by=decision.by,
            )

    def _count(self, name: str, decision: str) -> None:
        key = (name, decision)
        self.decision_counts[key] = self.decision_counts.get(key, 0) + 1

    # -- the routes file -------------------------------------------------------------------------

    async def _save(self, table: dict[str, Route] | None = None) -> None:
        """Write ``table`` (the routes as they are now, by default) to the routes file; InternalError naming the
        file when it cannot be written."""
        if self.path is None:
            return
        table = self.routes if table is None else table
        routes: dict[str, dict[str, Any]] = {}
        for name in sorted(table):
            route = table[name]
            entry = route.spec.to_json()
            state = route.state_json()
            if state is not None:
                entry["state"] = state
            routes[name] = entry
        try:
            await asyncio.to_thread(write_routes, self.path, routes)
        except OSError as exc:
            log.error("routes file %s: cannot be written: %s", self.path, exc)
            raise InternalError(f"the routes cannot be kept in {self.path}: {exc.strerror or exc}") from None

    # -- metrics ---------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        labels = ["route", "arm"]
        requests = CounterMetricFamily(
            "appliance_route_requests", "Requests each arm of a route served.", labels=labels
        )
        errors = CounterMetricFamily(
            "appliance_route_errors", "Requests an arm failed on the server's side (not the client's).", labels=labels
        )
        latency = HistogramMetricFamily(
            "appliance_route_request_duration_seconds", "Time of an arm's successful requests.", labels=labels
        )
        weight = GaugeMetricFamily("appliance_route_weight", "The weight of each serving arm now.", labels=labels)
        compared = CounterMetricFamily(
            "appliance_shadow_comparisons", "Answers of a shadow arm compared with the serving arm's.", labels=labels
        )
        differed = CounterMetricFamily(
            "appliance_shadow_differences", "Shadow answers that differed beyond shadow_atol.", labels=labels
        )
        skipped = CounterMetricFamily(
            "appliance_shadow_skipped", "Requests not copied to a shadow arm (too many in flight).", labels=labels
        )
        share = GaugeMetricFamily(
            "appliance_canary_share", "Percent of a route's traffic on its canary.", labels=["route"]
        )
        decisions = CounterMetricFamily(
            "appliance_canary_decisions",
            "Decisions of the canary analysis and the admin API.",
            labels=["route", "decision"],
        )
        for name, route in list(self.routes.items()):
            indexes = [*range(len(route.spec.arms)), *([route.baseline_index] if route.baseline is not None else [])]
            for index in indexes:  # the declared arms, and a canary's baseline when one serves
                values, stats = [name, route.label(index)], route.arms[index]
                requests.add_metric(values, stats.requests)
                errors.add_metric(values, stats.errors)
                latency.add_metric(values, stats.histogram.cumulative(), stats.histogram.sum)
                if index < len(route.spec.arms) and route.spec.arms[index].shadow:
                    compared.add_metric(values, stats.compared)
                    differed.add_metric(values, stats.differed)
                    skipped.add_metric(values, stats.skipped)
                else:
                    weight.add_metric(values, route.weight(index))
            if route.canary_status is not None:
                share.add_metric([name], route.canary_share())
        for (name, decision), count in sorted(self.decision_counts.items()):
            decisions.add_metric([name, decision], count)
        yield from (requests, errors, latency, weight, compared, differed, skipped, share, decisions)


def _tensors_differ(ours: tuple[TensorMetadata, ...], theirs: tuple[TensorMetadata, ...]) -> str:
    """How two arms' inputs (or outputs) differ, naming the tensor; "" when they agree. A -1 matches any size."""
    mine = {t.name: t for t in ours}
    other = {t.name: t for t in theirs}
    for name in mine.keys() - other.keys():
        return f"'{name}': it has none"
    for name in other.keys() - mine.keys():
        return f"'{name}': the other arm has none"
    for name, tensor in mine.items():
        peer = other[name]
        if peer.datatype != tensor.datatype:
            return f"'{name}': datatype {peer.datatype}, not {tensor.datatype}"
        if len(peer.shape) != len(tensor.shape) or any(
            a != b and -1 not in (a, b) for a, b in zip(peer.shape, tensor.shape)
        ):
            return f"'{name}': shape {list(peer.shape)}, not {list(tensor.shape)}"
    return ""

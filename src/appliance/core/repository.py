"""The model repository in Triton's layout, and the lifecycle of the model versions loaded from it.

``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/<model file>``. Loading (reading files, creating
sessions, warm-up) runs in a worker thread; swapping versions in and out happens on the event loop. A model
that fails to load is UNAVAILABLE with its error as the reason; the others keep serving. Loading a model that
is already loaded loads the new versions first, then swaps them in and drains the old ones (no request fails).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format
from prometheus_client.core import GaugeMetricFamily, Metric
from tritonclient.grpc import model_config_pb2 as mc

from .backend import BackendUnreachable, FactoryFor, LoadError
from .batching import Placement
from .cache import ResponseCache
from .errors import (
    Conflict,
    InvalidArgument,
    Unavailable,
    no_available_versions,
    unknown_model,
    unknown_version,
    version_not_ready,
)
from .events import EventLog
from .metadata import RepositoryModel
from .model import BatchedModelVersion, DirectModelVersion, ModelVersion, State, serve
from .model_config import ConfigError, available_versions, read_config, select_versions
from .stats import Metrics

#: The most execution instances a model version may have (an Orin has 6 to 12 cores and one GPU).
MAX_INSTANCES = 64
PARKED = "parked: loads again on its next request"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class VersionStatus:
    state: State
    reason: str = ""
    served: ModelVersion | None = None


@dataclass(slots=True)
class ModelEntry:
    name: str
    config: mc.ModelConfig | None = None
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    state: State = State.UNAVAILABLE  # of the model as a whole, for the index
    reason: str = ""
    retry: bool = False  # its backend was unreachable: refresh() loads it again
    parked: bool = False  # unloaded to free memory; its next request loads it again (park(), wake())
    load_seconds: float | None = None  # what its last successful load took
    memory_bytes: int | None = None  # the resident memory its last successful load added (an estimate)

    def ready_versions(self) -> list[int]:
        return sorted(v for v, s in self.versions.items() if s.state is State.READY)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Settings that loading needs (see :class:`appliance.settings.Settings`)."""

    intra_op_thread_count: int = 1
    ort_allow_spinning: bool = False
    placement: Placement = Placement(compute_us=100, alone_compute_us=1000)
    triton_url: str = ""


class ModelRepository:
    def __init__(
        self,
        root: Path,
        options: LoadOptions,
        metrics: Metrics,
        factory_for: FactoryFor,
        cache: ResponseCache | None = None,
    ) -> None:
        self.root = root
        self.cache = cache  # the response cache, for the models whose config enables it
        self.options = options
        self.metrics = metrics
        self.factory_for = factory_for  # which backend serves a config (appliance.backends.factory_for)
        self.models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loads: dict[str, tuple[str | None, asyncio.Future[None]]] = {}  # load under way, by model
        self.reserved: Callable[[str], bool] = lambda name: False  # names a model may not take (routes')
        self._loaded_once = False
        self.events: EventLog | None = None  # the timeline (set by the data plane)

    def names_on_disk(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # -- lookup ----------------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The model version that serves a request; NotFound or Unavailable with a reason otherwise."""
        entry = self.models.get(name)
        if entry is None:
            raise unknown_model(name)
        if entry.parked:
            raise Parked(name)
        if not version:
            ready = entry.ready_versions()
            if not ready:
                raise no_available_versions(name, f"{entry.state.value} {entry.reason}".rstrip())
            served = entry.versions[ready[-1]].served
        else:
            if not (version.isascii() and version.isdigit() and len(version) <= 18):
                shown = version if len(version) <= 32 else version[:32] + "..."
                raise InvalidArgument(f"model version '{shown}' is not a number of at most 18 digits")
            status = entry.versions.get(int(version))
            if status is None:
                raise unknown_version(name, version)
            if status.state is not State.READY:
                raise version_not_ready(name, version, f"{status.state.value} {status.reason}".rstrip())
            served = status.served
        assert served is not None
        return served

    def index(self) -> list[RepositoryModel]:
        """Triton's repository index: every model on disk or loaded, with each version's state."""
        rows: list[RepositoryModel] = []
        for name in sorted(set(self.names_on_disk()) | set(self.models)):
            entry = self.models.get(name)
            if entry is None or not entry.versions:
                rows.append(
                    RepositoryModel(name) if entry is None else RepositoryModel(name, None, entry.state, entry.reason)
                )
                continue
            for version, status in sorted(entry.versions.items()):
                rows.append(RepositoryModel(name, str(version), status.state, status.reason))
        return rows

    # -- load / unload ---------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str, config_json: str | None = None) -> None:
        """Load (or reload) a model; raises the load error after recording it in the model's status.

        Loads of one model run one at a time. A call made while a load of the same model with the same config
        is under way waits for that load and shares its outcome, error included, instead of loading again.
        The load runs to its end even if the caller goes away (a client that disconnects)."""
        if "/" in name or name.startswith(".") or not name:
            raise InvalidArgument(f"invalid model name '{name}'")
        if self.reserved(name):
            raise Conflict(f"model '{name}' has the name of route '{name}'; delete the route first")
        current = self._loads.get(name)
        if current is not None and current[0] == config_json:
            await asyncio.shield(current[1])
            return
        task = asyncio.ensure_future(self._load(name, config_json))
        self._loads[name] = (config_json, task)

        def forget(done: asyncio.Future[None]) -> None:
            if self._loads.get(name, (None, None))[1] is task:
                del self._loads[name]
            if not done.cancelled():
                done.exception()  # seen here too: every caller may have gone away (_load has logged it)

        task.add_done_callback(forget)
        await asyncio.shield(task)

    async def _load(self, name: str, config_json: str | None) -> None:
        async with self._lock(name):
            entry = self.models.setdefault(name, ModelEntry(name))
            previous = {v: s for v, s in entry.versions.items() if s.served is not None}
            # A parked model stays parked until this load ends: requests meanwhile wait for it (wake()).
            entry.state, entry.reason = State.LOADING, ""
            try:
                config, loaded, errors = await asyncio.to_thread(self._measured_load, entry, config_json)
            except (ConfigError, LoadError) as exc:
                # What served before keeps serving; the error is reported
                entry.state = State.READY if previous else State.UNAVAILABLE
                entry.reason = str(exc)
                entry.retry = isinstance(exc, BackendUnreachable)
                entry.parked = False  # the reason says why it is not serving; requests fail fast on it
                if not previous:
                    entry.versions = {}
                log.error("model '%s' failed to load: %s", name, exc)
                self._event("load_failed", name, str(exc))
                raise LoadError(f"failed to load '{name}': {exc}") from None
            entry.retry = any(isinstance(exc, BackendUnreachable) for exc in errors.values())
            failed = {v: _reason(exc) for v, exc in errors.items()}
            for served in loaded.values():
                served.start()
            versions = {v: VersionStatus(State.READY, "", s) for v, s in loaded.items()}
            for version, reason in failed.items():
                # A version that served before and fails to reload keeps serving (hot-swap: a failed load
                # never takes a model away); one that did not is unavailable, with the reason.
                before = previous.pop(version) if version in previous else None
                versions[version] = before or VersionStatus(State.UNAVAILABLE, reason)
            entry.config, entry.versions, entry.parked = config, versions, False
            serving = any(s.state is State.READY for s in versions.values())
            entry.state = State.READY if serving else State.UNAVAILABLE
            entry.reason = "; ".join(f"version {v}: {r}" for v, r in failed.items())
            for status in previous.values():  # replaced by a new load, or no longer selected by the policy
                assert status.served is not None
                # Replaced where it runs when the new versions run the same way (Triton: one model per name).
                await status.served.stop(replaced=any(type(v) is type(status.served) for v in loaded.values()))
            for version, reason in failed.items():
                log.error("model '%s' version %d failed to load: %s", name, version, reason)
            log.info("model '%s' loaded: versions %s ready", name, sorted(loaded))
            self._event(
                "load" if loaded else "load_failed",
                name,
                f"versions {sorted(loaded)} ready" + (f"; {entry.reason}" if failed else ""),
                versions=sorted(loaded),
                seconds=entry.load_seconds,
            )
            if failed:  # the caller learns of every version that did not load, and what serves instead
                kept = [str(v) for v in failed if versions[v].state is State.READY]
                still = f"; the previous version {', '.join(kept)} keeps serving" if kept else ""
                raise LoadError(f"failed to load '{name}': {entry.reason}{still}")

    def _measured_load(
        self, entry: ModelEntry, config_json: str | None
    ) -> tuple[mc.ModelConfig, dict[int, ModelVersion], dict[int, LoadError | ConfigError]]:
        """:meth:`_load_files`, recording what it took: seconds, and an estimate of the memory the model holds: the
        larger of the resident memory the load added and the size of its version folders (weights are most of a
        model, and a load after another model was unloaded may reuse freed memory and add little), and never less
        than an earlier load's. What the autoscaler weighs, not an account."""
        before, start = resident_bytes(), time.perf_counter()
        config, loaded, errors = self._load_files(entry.name, config_json)
        if loaded:
            entry.load_seconds = time.perf_counter() - start
            after = resident_bytes()
            added = 0 if before is None or after is None else max(after - before, 0)
            if not self._loaded_once:  # the first load also pays the runtime's own start, which parking never frees
                added, self._loaded_once = 0, True
            files = sum(_folder_bytes(self.root / entry.name / str(v)) for v in loaded)
            entry.memory_bytes = max(added, files, entry.memory_bytes or 0)
        return config, loaded, errors

    def _load_files(
        self, name: str, config_json: str | None
    ) -> tuple[mc.ModelConfig, dict[int, ModelVersion], dict[int, LoadError | ConfigError]]:
        """Blocking part of a load: config, completion, sessions and warm-up of each selected version; returns
        the config, the versions that loaded and the error of each that did not."""
        model_dir = self.root / name
        where = model_dir / "config.pbtxt"
        if not model_dir.is_dir():
            raise LoadError(f"no model folder {model_dir}")
        if config_json is not None:
            config = mc.ModelConfig()
            try:
                json_format.Parse(config_json, config)
            except json_format.ParseError as exc:
                raise ConfigError(f"config given with the load request: {exc}") from None
        else:
            config = read_config(where)
        if config.name and config.name != name:
            raise ConfigError(f"{where}: name '{config.name}' does not match the model folder '{name}'")
        config.name = name
        for unsupported in ("sequence_batching", "ensemble_scheduling"):
            if config.HasField(unsupported):
                raise ConfigError(f"{where}: {unsupported} is not supported on this appliance")
        factory = self.factory_for(config, self.options.triton_url)
        versions = available_versions(model_dir)
        if not versions:
            raise ConfigError(f"{model_dir}: no version folders (expected e.g. {model_dir / '1'})")
        selected = select_versions(config, versions, str(where))
        factory.complete_config(config, model_dir, selected[-1])
        loaded: dict[int, ModelVersion] = {}
        failed: dict[int, LoadError | ConfigError] = {}
        for version in selected:
            try:
                backend = factory.load(config, model_dir, version, self.options)
                loaded[version] = serve(
                    name, version, config, model_dir, backend, self.metrics, self.options.placement, self.cache
                )
            except (LoadError, ConfigError) as exc:
                failed[version] = exc
        return config, loaded, failed

    async def load_copy(self, name: str, version: str, label: str) -> ModelVersion:
        """A second, independent copy of the version that serves ``name`` / ``version`` now: its own sessions and
        batcher, its statistics labelled ``label``, never in the model table (a canary's baseline). The caller
        starts it and stops it. Only for versions served in process."""
        served = self.get(name, version)
        if not isinstance(served, BatchedModelVersion):
            raise InvalidArgument(f"model '{name}' is not served in process: a copy of it cannot run beside it")
        model_dir = self.root / name

        def build() -> ModelVersion:
            factory = self.factory_for(served.config, self.options.triton_url)
            backend = factory.load(served.config, model_dir, served.version, self.options)
            return serve(
                name,
                served.version,
                served.config,
                model_dir,
                backend,
                self.metrics,
                self.options.placement,
                stats_version=label,
            )

        try:
            copy = await asyncio.to_thread(build)
        except (LoadError, ConfigError) as exc:
            raise InvalidArgument(f"a copy of model '{name}' version {served.version} failed to load: {exc}") from None
        copy.start()
        return copy

    async def unload(self, name: str) -> None:
        """Stop serving a model: new requests get UNAVAILABLE, queued and running ones finish first."""
        entry = self.models.get(name)
        if entry is None:
            raise unknown_model(name)
        async with self._lock(name):
            serving = [s for s in entry.versions.values() if s.served is not None]
            for status in entry.versions.values():
                if status.served is not None:
                    status.state = State.UNLOADING
            entry.state = State.UNLOADING
            for status in serving:
                assert status.served is not None
                await status.served.stop()
                status.served = None
                status.state, status.reason = State.UNAVAILABLE, "unloaded"
            entry.state, entry.reason, entry.retry, entry.parked = State.UNAVAILABLE, "unloaded", False, False
        log.info("model '%s' unloaded", name)
        self._event("unload", name, "unloaded")

    async def park(self, name: str) -> None:
        """Unload a model to free its memory, to be loaded again by its next request (:meth:`wake`). Refused
        (Conflict) while it has requests in flight; a request that comes while it parks waits for the reload."""
        entry = self.models.get(name)
        if entry is None:
            raise unknown_model(name)
        async with self._lock(name):
            serving = [s for s in entry.versions.values() if s.served is not None]
            if entry.parked:
                raise Conflict(f"model '{name}' is parked already")
            if not serving:
                raise Conflict(f"model '{name}' is not loaded: nothing to park")
            busy = sum(s.served.in_flight for s in serving if s.served is not None)
            if busy:
                raise Conflict(f"model '{name}' has {busy} requests in flight: not parked")
            entry.parked = True  # from here on, requests wait for wake() instead of failing
            for status in serving:
                assert status.served is not None
                await status.served.stop()
                status.served = None
                status.state, status.reason = State.UNAVAILABLE, PARKED
            entry.state, entry.reason = State.UNAVAILABLE, PARKED
        self._event("park", name, PARKED, memory_bytes=entry.memory_bytes, load_seconds=entry.load_seconds)
        log.info(
            "model '%s' parked (%s MB freed, %.3f s to load again)",
            name,
            _mb(entry.memory_bytes),
            entry.load_seconds or 0,
        )

    async def wake(self, name: str, version: str, timeout_s: float) -> ModelVersion:
        """The version that serves a request for a parked model, once the model has loaded again; loads are shared
        by every request that waits. Unavailable when it does not load within ``timeout_s`` (it goes on loading)
        or fails to."""
        try:
            await asyncio.wait_for(asyncio.shield(self.load(name)), timeout_s)
        except TimeoutError:
            raise Unavailable(
                f"model '{name}' is loading again after it was parked and was not ready within {timeout_s:g} s"
            ) from None
        except LoadError as exc:
            raise Unavailable(str(exc)) from None
        return self.get(name, version)

    def collect(self) -> Iterator[Metric]:
        """What parking weighs, per model: ``appliance_model_parked``, and what its last load took."""
        parked = GaugeMetricFamily("appliance_model_parked", "1 while the model is parked.", labels=["model"])
        seconds = GaugeMetricFamily(
            "appliance_model_load_duration_seconds", "What the model's last load took.", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "appliance_model_memory_bytes",
            "Resident memory the model's last load added (an estimate).",
            labels=["model"],
        )
        for name, entry in sorted(self.models.items()):
            parked.add_metric([name], int(entry.parked))
            if entry.load_seconds is not None:
                seconds.add_metric([name], entry.load_seconds)
            if entry.memory_bytes is not None:
                memory.add_metric([name], entry.memory_bytes)
        yield from (parked, seconds, memory)

    async def set_instances(self, name: str, count: int) -> bool:
        """Serve ``name`` on ``count`` execution instances per version, without failing a request. In place
        where every serving version's backend can (ONNX Runtime: sessions come and go; returns True), else by a
        reload with the count in the config (hot-swap: the new versions load and warm up, then take over;
        returns False). The model's config then says ``count`` (one instance group, of the first group's kind)."""
        if not 1 <= count <= MAX_INSTANCES:
            raise InvalidArgument(f"'count' must be between 1 and {MAX_INSTANCES}, got {count}")
        entry = self.models.get(name)
        if entry is None:
            raise unknown_model(name)
        async with self._lock(name):
            served = [s.served for s in entry.versions.values() if s.served is not None]
            if not served or entry.config is None:
                raise no_available_versions(name, "not loaded")
            config = mc.ModelConfig()
            config.CopyFrom(entry.config)
            kind = config.instance_group[0].kind if config.instance_group else mc.ModelInstanceGroup.KIND_AUTO
            del config.instance_group[:]
            config.instance_group.add(count=count, kind=kind)
            in_place = all(isinstance(v, BatchedModelVersion) and v.resizable for v in served)
            if in_place:
                for version in served:
                    assert isinstance(version, BatchedModelVersion)
                    await version.resize(count)
                    del version.config.instance_group[:]  # what GET config answers
                    version.config.instance_group.extend(config.instance_group)
                entry.config = config
                log.info("model '%s': %d instances (in place)", name, count)
                self._event("instances", name, f"{count} instances (in place)", count=count)
                return True
        await self.load(name, json_format.MessageToJson(config))
        log.info("model '%s': %d instances (reloaded)", name, count)
        self._event("instances", name, f"{count} instances (reloaded)", count=count)
        return False

    def _event(self, kind: str, name: str, detail: str, **data: object) -> None:
        if self.events is not None:
            self.events.add(kind, name, detail, **data)

    async def unload_all(self) -> None:
        for name in list(self.models):
            await self.unload(name)

    async def refresh(self) -> None:
        """Follow backends that live outside this process (Triton): a version whose backend lost it goes
        UNAVAILABLE, and is loaded there again once the backend is back."""
        for entry in list(self.models.values()):
            if entry.retry and not self._lock(entry.name).locked():
                try:
                    await self.load(entry.name)
                    log.info("model '%s': its backend is reachable again; loaded", entry.name)
                except LoadError:
                    pass  # still unreachable (retry stays set) or failed for good (the reason says why)
                continue
            for version, status in entry.versions.items():
                served = status.served
                if not isinstance(served, DirectModelVersion) or status.state is State.UNLOADING:
                    continue  # only a self-scheduling backend (Triton) can lose a version behind our back
                if status.state is State.READY and not await served.backend.is_ready():
                    status.state, status.reason = State.UNAVAILABLE, "not ready in Triton (down or restarting)"
                    served.stats.ready = False
                    log.warning("model '%s' version %d: %s", entry.name, version, status.reason)
                elif status.state is State.UNAVAILABLE and await served.backend.reload():
                    status.state, status.reason = State.READY, ""
                    served.stats.ready = True
                    log.info("model '%s' version %d: ready again in Triton", entry.name, version)
            entry.state = State.READY if entry.ready_versions() else State.UNAVAILABLE

    def served_versions(self) -> list[ModelVersion]:
        return [s.served for e in self.models.values() for s in e.versions.values() if s.served is not None]


class Parked(Unavailable):
    """:meth:`ModelRepository.get` on a parked model: UNAVAILABLE to every caller but inference, which wakes the
    model (:meth:`ModelRepository.wake`) and waits for it."""

    def __init__(self, name: str) -> None:
        super().__init__(no_available_versions(name, PARKED).message)
        self.name = name


def resident_bytes() -> int | None:
    """This process's resident memory (``/proc/self/statm``); None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    except OSError:
        return 0


def _mb(value: int | None) -> str:
    return "?" if value is None else f"{value / 1e6:.0f}"


def _reason(exc: LoadError | ConfigError) -> str:
    """A version's load error as its status shows it."""
    return f"backend unreachable: {exc}" if isinstance(exc, BackendUnreachable) else str(exc)

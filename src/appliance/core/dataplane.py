"""The data plane: every operation of the Open Inference Protocol and Triton's extensions, transport-free.

REST (``appliance.rest``) and gRPC (``appliance.grpc``) are thin adapters over this class: they decode,
call one method, and encode. Errors are :class:`~appliance.core.errors.InferenceError` subclasses that each
adapter maps through a single table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from .. import __version__
from ..settings import LocalCacheConfig, ModelControlMode, RedisCacheConfig, Settings
from .auth.guard import Guard
from .autoscaler import AutoscalerDecisions
from .backend import FactoryFor, LoadError
from .batching import Placement
from .cache import LocalResponseCache, ResponseCache
from .errors import Conflict, InvalidArgument, NotFound, Unavailable, unknown_model
from .events import EventLog
from .files import write_atomically
from .history import SAVE_EVERY_S, History, history_text, restore_history
from .image import ImageInference, ImageResponse
from .metadata import ModelMetadata, ModelStatistics, RegionStatus, RepositoryModel, ServerMetadata
from .model import ModelVersion, State
from .model_config import ModelConfig
from .poller import RepositoryPoller
from .redis_cache import RedisResponseCache
from .repository import LoadOptions, ModelRepository, Parked
from .routes import RouteTable
from .shared_memory import SharedMemoryRegistry, cuda_unsupported, require_local_client
from .stats import Metrics
from .types import InferRequest, InferResponse, InputTensor, RequestTracer
from .warmup import WarmUpReport, warm_up_now

log = logging.getLogger(__name__)

SERVER_NAME = "appliance"
EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "binary_tensor_data",
    "system_shared_memory",
)


class DataPlane:
    def __init__(self, settings: Settings, factory_for: FactoryFor) -> None:
        """``factory_for`` chooses the backend of each model (:func:`appliance.backends.factory_for`)."""
        self.settings = settings
        self.metrics = Metrics()
        self.cache: ResponseCache | None = None
        match settings.response_cache():
            case LocalCacheConfig(size=size):
                self.cache = LocalResponseCache(size)
            case RedisCacheConfig() as redis:
                self.cache = RedisResponseCache(redis)
        self.metrics.cache = self.cache
        self.repository = ModelRepository(
            settings.model_repository,
            LoadOptions(
                intra_op_thread_count=settings.intra_op_thread_count,
                ort_allow_spinning=settings.ort_allow_spinning,
                placement=Placement(settings.inline_compute_us, settings.inline_alone_compute_us),
                triton_url=settings.triton_url,
            ),
            self.metrics,
            factory_for,
            self.cache,
        )
        self.shared_memory = SharedMemoryRegistry()
        self.routes = RouteTable(self.repository, settings.routes_file, self._infer_on_model)
        self.repository.reserved = self.routes.__contains__
        self.metrics.registry.register(self.routes)
        # The timeline (loads, parks, canary steps, autoscaler decisions, throttling) and the last hours of figures
        self.events = EventLog()
        self.history = History(self.metrics, self.events, settings.history_interval_s, settings.history_keep_s)
        self.repository.events = self.routes.events = self.events
        self.autoscaler = AutoscalerDecisions(self.events)  # what appliance autoscale reports
        self.metrics.registry.register(self.autoscaler)
        self.metrics.registry.register(self.repository)  # parked models, and what each load took
        self.build_id = settings.resolved_build_id()
        # With auth off there is no guard, and the adapters route requests straight to their handlers.
        self.guard = Guard(settings) if settings.auth else None
        if self.guard is not None:
            self.metrics.registry.register(self.guard)
        self._started = False
        self._refresher: asyncio.Task[None] | None = None
        self.poller = (
            RepositoryPoller(self.repository, settings.repository_poll_secs)
            if settings.model_control_mode is ModelControlMode.POLL
            else None
        )
        self._polling: asyncio.Task[None] | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None
        self._draining = False
        # Set by the server when tracing is on (appliance.tracing); None: requests never reach OpenTelemetry
        self.tracer: RequestTracer | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.images = ImageInference(self)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the response cache, then load the models the control mode asks for. A model that fails is
        logged and left UNAVAILABLE; a cache that cannot connect keeps trying (requests run without it)."""
        if self.cache is not None:
            await self.cache.start()
        if self.poller is not None:
            await self.poller.prime()  # before loading: a change made while the models load is seen
        if self.settings.history_file is not None:  # before the loads: their events come after the saved ones
            path = self.settings.history_file
            log.info("%s", await asyncio.to_thread(restore_history, path, self.history, self.events, time.time()))
        names = self.repository.names_on_disk()
        if self.settings.model_control_mode is ModelControlMode.EXPLICIT:
            wanted = self.settings.load_model
            names = names if "*" in wanted else list(wanted)
        if not self.settings.model_repository.is_dir():
            log.error("model repository %s does not exist", self.settings.model_repository)
        for name in names:
            try:
                await self.repository.load(name)
            except (LoadError, InvalidArgument, Conflict) as exc:
                log.error("%s", exc)
        await self.routes.start()  # after the models: a route's arms are models
        self._started = True
        if self.settings.triton_url:
            self._refresher = asyncio.create_task(self._refresh_forever())
        if self.poller is not None:
            self._polling = asyncio.create_task(self.poller.run_forever())
        self._sampling = asyncio.create_task(self.history.run())
        if self.settings.history_file is not None:
            self._saving = asyncio.create_task(self._save_history_forever(self.settings.history_file))

    async def _save_history_forever(self, path: Path) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            await self._save_history(path)

    async def _save_history(self, path: Path) -> None:
        text = history_text(self.history, self.events)  # on the loop, where the series change
        try:
            await asyncio.to_thread(write_atomically, path, text)
        except OSError as exc:
            log.warning("history: cannot write %s: %s", path, exc.strerror or exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.triton_check_interval_s)
            try:
                await self.repository.refresh()
            except Exception:
                log.exception("checking Triton-served models failed")

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting inference, then wait up to ``timeout_s`` for every accepted request to finish.

        Returns whether everything finished in time."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("drain: %d requests still running after %.1f s", self._inflight, timeout_s)
            return False
        return True

    async def stop(self) -> None:
        for task in (self._refresher, self._polling, self._sampling, self._saving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # a load it started runs to its end; unload_all waits for it
        if self._started and self.settings.history_file is not None:
            await self._save_history(self.settings.history_file)
        await self.routes.stop()
        await self.repository.unload_all()
        self.shared_memory.close()
        if self.cache is not None:
            await self.cache.close()

    # -- health and metadata ---------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._started and not self._draining

    def server_metadata(self) -> ServerMetadata:
        version = __version__ + (f"+{self.build_id}" if self.build_id else "")
        return ServerMetadata(SERVER_NAME, version, EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model (or that version) serves now. As in Triton, a version the version policy does not
        serve, or that is not on disk, is not ready rather than an error; an unknown model is NotFound. A route
        is ready when every arm that gets traffic is."""
        if name in self.routes and not version:
            return self.routes.ready(name)
        if name not in self.repository.models:
            raise unknown_model(name)
        try:
            self.repository.get(name, version)
        except (Unavailable, NotFound):
            return False
        return True

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        if name in self.routes and not version:
            return self.routes.metadata(name)
        served = self.repository.get(name, version)
        if version:  # as Triton: the metadata of one version lists that version alone
            return served.metadata([str(served.version)])
        return served.metadata([str(v) for v in self.repository.models[name].ready_versions()])

    def model_config(self, name: str, version: str = "") -> ModelConfig:
        """Triton's own typed ``ModelConfig`` message, the schema of ``config.pbtxt``."""
        return self.repository.get(name, version).config

    async def refresh_metrics(self) -> None:
        """Before a metrics scrape: read the figures a remote response cache (Redis) keeps itself."""
        if self.cache is not None:
            await self.cache.refresh_statistics()

    def model_statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        if name:
            if name not in self.repository.models:
                raise unknown_model(name)
            if version:
                served = [self.repository.get(name, version)]
            else:
                served = [v for v in self.repository.served_versions() if v.name == name]
        else:
            served = self.repository.served_versions()
        return [v.stats.statistics() for v in served]

    # -- repository ------------------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryModel]:
        rows = self.repository.index()
        return [r for r in rows if r.state is State.READY] if ready_only else rows

    def _check_explicit(self, action: str) -> None:
        if self.settings.model_control_mode is ModelControlMode.POLL:  # Triton's text and status
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")
        if self.settings.model_control_mode is not ModelControlMode.EXPLICIT:
            raise Unavailable(f"cannot {action} models: model control mode is not 'explicit'")

    async def load_model(self, name: str, config_json: str | None = None) -> None:
        self._check_explicit("load")
        if not (self.settings.model_repository / name).is_dir() and name not in self.repository.models:
            raise NotFound(f"model '{name}' is not in the model repository")
        try:
            await self.repository.load(name, config_json)
        except LoadError as exc:
            raise InvalidArgument(str(exc)) from None

    async def set_instances(self, name: str, count: int) -> bool:
        """Change a model's execution instances (the autoscaler's lever), in any model control mode: in place
        where the backend can (True), else by a hot-swap reload (False). A load error is a 400 naming it."""
        if name in self.routes:
            raise InvalidArgument(f"'{name}' is a route: set the instances of its arms' models")
        try:
            return await self.repository.set_instances(name, count)
        except LoadError as exc:
            raise InvalidArgument(str(exc)) from None

    async def park_model(self, name: str) -> None:
        """Unload a model to free memory until its next request loads it again (the autoscaler's memory lever), in
        any model control mode; refused (409) while it has requests in flight."""
        if name in self.routes:
            raise InvalidArgument(f"'{name}' is a route: park the models of its arms")
        await self.repository.park(name)

    async def warm_up(self, name: str, version: str = "") -> WarmUpReport:
        """Run a loaded model's warm-up samples now, timed (:mod:`.warmup`); a parked model loads first."""
        if name in self.routes:
            raise InvalidArgument(f"'{name}' is a route: warm up the models of its arms")
        try:
            served = self.repository.get(name, version)
        except Parked:
            served = await self._wake(name, version)
        return await warm_up_now(served, self.settings.model_repository / name)

    async def unload_model(self, name: str) -> None:
        self._check_explicit("unload")
        await self.repository.unload(name)

    # -- shared memory ---------------------------------------------------------------------------

    # Every call says whether its client is on this machine (:func:`~.shared_memory.require_local_client`).

    def register_system_shared_memory(self, name: str, key: str, offset: int, byte_size: int, local: bool) -> None:
        require_local_client(local)
        self.shared_memory.register(name, key, offset, byte_size)

    def unregister_system_shared_memory(self, name: str, local: bool) -> None:
        require_local_client(local)
        self.shared_memory.unregister(name)

    def system_shared_memory_status(self, name: str, local: bool) -> list[RegionStatus]:
        require_local_client(local)
        return self.shared_memory.status(name)

    def register_cuda_shared_memory(self, name: str) -> None:
        """CUDA shared memory is not supported (neither is it by Triton on Jetson): always an error."""
        raise cuda_unsupported()

    def cuda_shared_memory_status(self, name: str = "") -> list[RegionStatus]:
        """No CUDA region is ever registered: the whole status is empty, a named one is not found."""
        if name:
            raise NotFound(f"Unable to find cuda shared memory region: '{name}'")
        return []

    # -- inference -------------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        if self.tracer is not None and request.trace is None:
            return await self.tracer.infer(self.infer, request)  # sets request.trace, then calls back
        if self._draining:
            raise Unavailable("server is shutting down and accepts no new requests")
        route = self.routes.get(request.model_name)
        # An unknown model fails here, before it counts as in flight
        try:  # synchronous on the hot path; only a parked model waits
            served = self.repository.get(request.model_name, request.model_version) if route is None else None
        except Parked:
            served = await self._wake(request.model_name, request.model_version)
        self._inflight += 1
        self._idle.clear()
        try:
            if served is None:
                assert route is not None
                return await route.infer(request)  # an arm's parked model wakes in _infer_on_model
            return await self._infer_on(served, request, False)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def infer_images(
        self, name: str, version: str, images: list[bytes], headers: Mapping[str, str], transport: str
    ) -> ImageResponse:
        """Encoded images (JPEG / PNG) through the model's declared preprocessing, one inference per batch, and its
        declared postprocessing (:mod:`appliance.core.image`)."""
        return await self.images.infer(name, version, images, headers, transport)

    async def _infer_on_model(
        self, request: InferRequest, own_inputs: bool, served: ModelVersion | None
    ) -> InferResponse:
        """A request that a route has given an arm: on ``served``, or on the model the request names when None (a
        canary's baseline copy is not in the repository). ``own_inputs``: copy what is read from shared memory,
        so the inputs outlive the request (a shadow arm reads them after)."""
        if served is None:
            try:
                served = self.repository.get(request.model_name, request.model_version)
            except Parked:
                served = await self._wake(request.model_name, request.model_version)
        return await self._infer_on(served, request, own_inputs)

    async def _wake(self, name: str, version: str) -> ModelVersion:
        """A parked model loads again for an inference request, which waits (bounded by ``park_wake_timeout_s``)
        instead of failing."""
        return await self.repository.wake(name, version, self.settings.park_wake_timeout_s)

    async def _infer_on(self, served: ModelVersion, request: InferRequest, own_inputs: bool) -> InferResponse:
        if not request.uses_shared_memory():
            return await served.infer(request)
        require_local_client(request.local_client)
        with self.shared_memory.lease(request) as lease:
            lease.read_inputs()
            if own_inputs:
                read = {i.name for i in request.shared_memory_inputs}
                request.inputs = [
                    InputTensor(t.name, t.datatype, t.shape, t.data.copy()) if t.name in read else t
                    for t in request.inputs
                ]
            response = await served.infer(request)
            lease.write_outputs(response)
            return response

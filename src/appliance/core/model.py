"""One served model version: its config, backend, batcher and statistics, and the request checks.

How requests reach the backend depends on its kind (:mod:`.backend`): a :class:`BatchedModelVersion` forms
batches in a :class:`~.batching.DynamicBatcher` for a :class:`~.backend.BatchBackend`; a
:class:`DirectModelVersion` sends each request straight to a :class:`~.backend.SelfSchedulingBackend`.
:func:`serve` makes the one that fits a freshly loaded backend.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from . import datatypes
from .backend import Backend, BatchBackend, LoadError, SelfSchedulingBackend
from .batching import DynamicBatcher, Execution, Placement
from .cache import ResponseCache, content_digest, response_key
from .errors import InferenceError, InvalidArgument, Status
from .metadata import ModelMetadata, TensorMetadata
from .model_config import (
    BatchingPolicy,
    ConfigError,
    TensorSpec,
    batching_policy,
    input_specs,
    instance_count,
    latency_objective_s,
    output_specs,
    read_labels,
)
from .stats import Metrics, VersionStats
from .types import InferRequest, InferResponse, OutputTensor

log = logging.getLogger(__name__)

# Output datatypes Triton has no classification of (its TopkClassifications: "unsupported type").
_NO_CLASSIFICATION = frozenset({"FP16", "BOOL", "BYTES"})


class State(str, enum.Enum):
    """Model version states, spelled as Triton's repository index spells them."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class _InputCheck:
    spec: TensorSpec
    dims: tuple[int, ...]
    fixed: bool  # no -1 in dims: the shape check is a tuple comparison


class ModelVersion(abc.ABC):
    """A loaded model version. Built in a worker thread (:func:`serve`), started on the event loop (``start``)."""

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        model_dir: Path,
        metrics: Metrics,
        cache: ResponseCache | None = None,
        stats_version: str = "",
    ) -> None:
        where = f"{model_dir / 'config.pbtxt'}"
        self.name = name
        self.version = version
        self.config = config
        self.inputs = input_specs(config, where)
        self.outputs = output_specs(config, where)
        self.policy: BatchingPolicy = batching_policy(config, where)
        self.max_batch_size = config.max_batch_size
        self.labels: dict[str, list[str]] = {
            o.name: read_labels(model_dir, o.label_filename) for o in self.outputs if o.label_filename
        }
        self._checks = {s.name: _InputCheck(s, s.dims, -1 not in s.dims) for s in self.inputs}
        self._required = [s.name for s in self.inputs if not s.optional]
        self._outputs_by_name = {o.name: o for o in self.outputs}
        # A copy of a version served beside it (a canary's baseline) counts under its own label
        self.stats = VersionStats(metrics, name, stats_version or str(version))
        self.stats.latency_objective_s = latency_objective_s(config, where)
        self.in_flight = 0  # requests inside infer() now
        # Triton's rule: the response cache serves a model whose config enables it, on a server that has one.
        self.cache = cache if config.response_cache.enable else None
        self.digest = ""
        if self.cache is not None:
            self.digest = content_digest(model_dir, version, config.SerializeToString(deterministic=True))
        elif config.response_cache.enable:
            log.warning("model '%s': response_cache is enabled but the server has no cache (--cache-config)", name)

    @property
    def platform(self) -> str:
        platform: str = self.config.platform or {"onnxruntime": "onnxruntime_onnx"}.get(
            self.config.backend, self.config.backend
        )
        return platform

    @abc.abstractmethod
    def start(self) -> None:
        """Begin serving (on the event loop)."""

    @abc.abstractmethod
    async def stop(self, replaced: bool = False) -> None:
        """Stop serving: the requests already accepted finish, then the backend lets the version go (``replaced``: a
        new load of the same model took its place; see :meth:`SelfSchedulingBackend.unload`)."""

    @abc.abstractmethod
    async def _run(
        self, inputs: dict[str, NDArray[Any]], batch_size: int, shape_key: object, request: InferRequest
    ) -> tuple[dict[str, NDArray[Any]], float]:
        """Checked inputs -> the backend's outputs, and the seconds the request waited in a queue of ours."""

    # -- requests --------------------------------------------------------------------------------

    def check(self, request: InferRequest) -> tuple[dict[str, NDArray[Any]], int, object]:
        """Check a request against the config; return the model's inputs, the batch size and a shape key."""
        batched = self.max_batch_size > 0
        inputs: dict[str, NDArray[Any]] = {}
        batch_size = 1
        shape_key: list[tuple[int, ...]] = []
        # Triton's texts where it has one (its InferenceRequest::Normalize), "[request id: ...] " first as there.
        for tensor in request.inputs:
            check = self._checks.get(tensor.name)
            if check is None:
                raise InvalidArgument(
                    f"unexpected input '{tensor.name}': model '{self.name}' has inputs "
                    f"{', '.join(repr(s.name) for s in self.inputs)}"
                )
            if tensor.name in inputs:
                raise InvalidArgument(f"input '{tensor.name}' is given twice")
            spec = check.spec
            if tensor.datatype != spec.datatype.name:
                raise InvalidArgument(
                    f"{_request_tag(request)}inference input '{tensor.name}' data-type is '{tensor.datatype}', "
                    f"but model '{self.name}' expects '{spec.datatype.name}'"
                )
            shape = tensor.shape
            item = shape[1:] if batched else shape
            if batched and not shape:
                raise InvalidArgument(
                    f"{_request_tag(request)}input '{tensor.name}' has no shape but model requires batch dimension "
                    f"for '{self.name}'"
                )
            if batched and inputs and shape[0] != batch_size:
                raise InvalidArgument(
                    f"{_request_tag(request)}input '{tensor.name}' batch size does not match other inputs "
                    f"for '{self.name}'"
                )
            if batched and shape[0] > self.max_batch_size:
                raise InvalidArgument(
                    f"{_request_tag(request)}inference request batch-size must be <= {self.max_batch_size} "
                    f"for '{self.name}' (input '{tensor.name}' has shape {_dims(shape)})"
                )
            if batched and shape[0] < 1:
                raise InvalidArgument(
                    f"{_request_tag(request)}input '{tensor.name}': batch size {shape[0]} is not at least 1"
                )
            if not (item == check.dims if check.fixed else _matches(item, check.dims)):
                raise InvalidArgument(
                    f"{_request_tag(request)}unexpected shape for input '{tensor.name}' for model '{self.name}'. "
                    f"Expected {_dims(([-1] if batched else []) + list(spec.dims))}, got {_dims(shape)}. "
                    + (_IMPLICIT_BATCH_NOTE if batched else "")
                )
            if batched:
                batch_size = shape[0]
            data = tensor.data
            if spec.reshape is not None:
                data = data.reshape(((shape[0],) if batched else ()) + spec.reshape)
            inputs[tensor.name] = data
            if not check.fixed:
                shape_key.append(item)
        if len(inputs) < len(self._required):
            missing = [n for n in self._required if n not in inputs]
            if missing:
                expected = (
                    f"{len(self.inputs)} inputs"
                    if len(self._required) == len(self.inputs)
                    else f"number of inputs between {len(self._required)} and {len(self.inputs)}"
                )
                raise InvalidArgument(
                    f"{_request_tag(request)}expected {expected} but got {len(inputs)} inputs for model '{self.name}'. "
                    f"Got input(s) {_names(inputs)}, but missing required input(s) {_names(missing)}. "
                    "Please provide all required input(s)."
                )
        for requested in request.outputs:
            if requested.name not in self._outputs_by_name:
                raise InvalidArgument(
                    f"unexpected inference output '{requested.name}' for model '{self.name}' (its outputs: "
                    f"{', '.join(repr(o.name) for o in self.outputs)})"
                )
            if requested.classification < 0:
                raise InvalidArgument(f"output '{requested.name}': classification must be positive")
            datatype = self._outputs_by_name[requested.name].datatype.name
            if requested.classification and datatype in _NO_CLASSIFICATION:
                raise InvalidArgument(f"class result not available for output due to unsupported type '{datatype}'")
        return inputs, batch_size, tuple(shape_key) if shape_key else None

    async def infer(self, request: InferRequest) -> InferResponse:
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution and is cached per loop pass,
        # which made every sub-millisecond request last 0 ns in the statistics.
        start = time.perf_counter()
        self.in_flight += 1  # a model with requests in flight is never parked
        try:
            inputs, batch_size, shape_key = self.check(request)
            key, lookup_s = b"", 0.0
            if self.cache is not None:
                lookup = time.perf_counter()
                key = response_key(self.name, self.version, self.digest, request.inputs, request.outputs)
                cached = await self.cache.get(key)
                if cached is not None:
                    end = time.perf_counter()
                    self.stats.request_cache_hit(end - start, end - lookup)
                    return InferResponse(self.name, str(self.version), request.id, cached)
                lookup_s = time.perf_counter() - lookup
            outputs, queued_s = await self._run(inputs, batch_size, shape_key, request)
            response = self._response(request, outputs, batch_size)
            if self.cache is not None:
                insert = time.perf_counter()
                await self.cache.put(key, response.outputs)
                self.stats.cache_missed(lookup_s + time.perf_counter() - insert)
        except InferenceError as exc:
            self.stats.request_failed(exc.status, time.perf_counter() - start)
            raise
        except asyncio.CancelledError:
            self.stats.request_failed(Status.CANCELLED, time.perf_counter() - start)
            raise
        finally:
            self.in_flight -= 1
        self.stats.request_succeeded(time.perf_counter() - start, queued_s)
        return response

    def _response(self, request: InferRequest, outputs: dict[str, NDArray[Any]], batch_size: int) -> InferResponse:
        batched = self.max_batch_size > 0
        wanted = request.outputs or None
        tensors = []
        for spec in self.outputs if wanted is None else [self._outputs_by_name[o.name] for o in wanted]:
            array = outputs[spec.name]
            if spec.reshape is not None:
                array = array.reshape(((batch_size,) if batched else ()) + spec.dims)
            classification = 0
            if wanted is not None:
                classification = next(o.classification for o in wanted if o.name == spec.name)
            if classification:
                array = self._classify(array, classification, self.labels.get(spec.name), batched)
                tensors.append(OutputTensor(spec.name, "BYTES", array.shape, array))
            else:
                datatype = "BYTES" if array.dtype == object else datatypes.of_array(array).name
                tensors.append(OutputTensor(spec.name, datatype, array.shape, array))
        return InferResponse(self.name, str(self.version), request.id, tensors)

    @staticmethod
    def _classify(array: NDArray[Any], top: int, labels: list[str] | None, batched: bool) -> NDArray[Any]:
        """Triton's classification extension: the top N as "score:index[:label]" strings, the score as Triton's
        std::to_string writes it (an integer as an integer, a float with six decimals). Sorted in the output's own
        type, so 64-bit integers keep their order; equal scores by index."""
        rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
        count = rows.shape[1]
        top = min(top, count)
        integers = array.dtype.kind in "iu"
        out = np.empty((rows.shape[0], top), dtype=object)
        for r, row in enumerate(rows):
            # A stable ascending sort of the reversed row, read backwards: descending, equal scores by index.
            order = count - 1 - np.argsort(row[::-1], kind="stable")[::-1][:top]
            for c, index in enumerate(order):
                label = f":{labels[index]}" if labels and index < len(labels) else ""
                score = str(int(row[index])) if integers else f"{float(row[index]):f}"
                out[r, c] = f"{score}:{index}{label}".encode()
        return out if batched else out[0]

    # -- metadata --------------------------------------------------------------------------------

    def metadata(self, versions: list[str]) -> ModelMetadata:
        def tensor(spec: TensorSpec) -> TensorMetadata:
            return TensorMetadata(spec.name, spec.datatype.name, tuple(spec.client_shape(self.max_batch_size)))

        return ModelMetadata(
            name=self.name,
            versions=tuple(versions),
            platform=self.platform,
            inputs=tuple(tensor(s) for s in self.inputs),
            outputs=tuple(tensor(s) for s in self.outputs),
        )


class BatchedModelVersion(ModelVersion):
    """Served by a backend that executes the batches the core forms: a DynamicBatcher, one thread per instance."""

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        model_dir: Path,
        backend: BatchBackend,
        metrics: Metrics,
        placement: Placement,
        cache: ResponseCache | None = None,
        stats_version: str = "",
    ) -> None:
        super().__init__(name, version, config, model_dir, metrics, cache, stats_version)
        self.backend = backend
        self.batcher = DynamicBatcher(
            self.policy,
            backend.execute,
            backend.instance_count,
            [s.name for s in self.inputs],
            [o.name for o in self.outputs],
            self.stats.batch_executed,
            placement=placement,
            name=f"{name}/{version}",
        )
        self.stats.pending = lambda: self.batcher.pending
        self.stats.instances = lambda: self.batcher.instance_count

    def start(self) -> None:
        self.batcher.start()
        self.stats.ready = True

    @property
    def resizable(self) -> bool:
        """Whether :meth:`resize` works in place (else a new instance count takes a reload)."""
        return self.backend.resizable

    async def resize(self, count: int) -> None:
        """Serve on ``count`` instances from now on, without failing or holding up a request."""
        await self.batcher.resize(count, self.backend.resize)

    async def stop(self, replaced: bool = False) -> None:
        self.stats.ready = False
        await self.batcher.stop()
        await asyncio.to_thread(self.backend.close)

    async def _run(
        self, inputs: dict[str, NDArray[Any]], batch_size: int, shape_key: object, request: InferRequest
    ) -> tuple[dict[str, NDArray[Any]], float]:
        trace = request.trace
        outputs, enqueued, dispatched = await self.batcher.submit(
            inputs, batch_size, shape_key, request.priority, request.timeout_us, trace
        )
        if trace is not None:
            trace.enqueued, trace.dispatched = enqueued, dispatched
        return outputs, dispatched - enqueued


class DirectModelVersion(ModelVersion):
    """Served by a backend that schedules by itself (Triton): each request goes straight to it, no batcher."""

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        model_dir: Path,
        backend: SelfSchedulingBackend,
        metrics: Metrics,
        cache: ResponseCache | None = None,
        stats_version: str = "",
    ) -> None:
        super().__init__(name, version, config, model_dir, metrics, cache, stats_version)
        self.backend = backend
        self._output_names = [o.name for o in self.outputs]
        # The instances its config gives the backend (Triton's instance_group): what a reload changes.
        self.stats.instances = lambda: instance_count(self.config)
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self.stats.ready = True

    async def stop(self, replaced: bool = False) -> None:
        self.stats.ready = False
        await self._idle.wait()
        await self.backend.unload(replaced)

    async def _run(
        self, inputs: dict[str, NDArray[Any]], batch_size: int, shape_key: object, request: InferRequest
    ) -> tuple[dict[str, NDArray[Any]], float]:
        self._inflight += 1
        self._idle.clear()
        start = time.perf_counter()
        try:
            outputs = await self.backend.infer(inputs, self._output_names, request.priority, request.timeout_us)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        end = time.perf_counter()
        execution = Execution(batch_size, 1, 0.0, end - start, 0.0, end)
        self.stats.batch_executed(execution)
        if request.trace is not None:
            request.trace.execution = execution
        return outputs, 0.0


def serve(
    name: str,
    version: int,
    config: mc.ModelConfig,
    model_dir: Path,
    backend: Backend,
    metrics: Metrics,
    placement: Placement,
    cache: ResponseCache | None = None,
    stats_version: str = "",
) -> ModelVersion:
    """The model version that serves a freshly loaded backend, as its kind asks. A batch backend is warmed up
    first (a self-scheduling one warms up by itself), and closed when that or the config checks fail. ``cache``
    is the server's response cache, used when the config enables it; ``stats_version`` labels the statistics of
    a copy served beside the version itself."""
    match backend:
        case BatchBackend():
            try:
                warm_up(backend, config, model_dir)
                return BatchedModelVersion(
                    name, version, config, model_dir, backend, metrics, placement, cache, stats_version
                )
            except Exception:
                backend.close()
                raise
        case SelfSchedulingBackend():
            return DirectModelVersion(name, version, config, model_dir, backend, metrics, cache, stats_version)


def _matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims))


def _request_tag(request: InferRequest) -> str:
    """How Triton's errors start: ``[request id: ...] `` (made only when an error is raised)."""
    return f"[request id: {request.id or '<id_unknown>'}] "


def _names(names: Iterable[str]) -> str:
    """Input names as Triton lists them in its errors: ``['INPUT0','INPUT1']``."""
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _dims(dims: Sequence[int]) -> str:
    """A shape as Triton writes it in its errors: ``[-1,16]``."""
    return "[" + ",".join(str(d) for d in dims) + "]"


_IMPLICIT_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each "
    "input shape. If you want to specify the full shape including the batch dim in your input dims config, try "
    "setting max_batch_size to zero. See the model configuration docs for more info on max_batch_size."
)


# -- warm-up -------------------------------------------------------------------------------------


def warmup_samples(config: mc.ModelConfig, model_dir: Path) -> list[tuple[str, int, dict[str, NDArray[Any]]]]:
    """(name, count, inputs) to run on every instance before a version reports ready.

    ``model_warmup`` from the config when present (zero_data, random_data or input_data_file from the model's
    ``warmup/`` folder); otherwise one batch-1 request of zeros, the implicit warm-up, left out for a model with a
    BYTES input: no string can be made up that every such model accepts (one that parses numbers fails on "").
    """
    batched = config.max_batch_size > 0
    samples = []
    if config.model_warmup:
        rng = np.random.default_rng(0)
        for warmup in config.model_warmup:
            inputs = {}
            for name, spec in warmup.inputs.items():
                type_name = mc.DataType.Name(spec.data_type)
                if type_name not in datatypes.BY_CONFIG_NAME:
                    raise LoadError(f"model_warmup '{warmup.name}' input '{name}': unsupported {type_name}")
                dtype = datatypes.BY_CONFIG_NAME[type_name].dtype
                shape = ((max(1, warmup.batch_size),) if batched else ()) + tuple(spec.dims)
                which = spec.WhichOneof("input_data_type")
                if which == "input_data_file":
                    path = model_dir / "warmup" / spec.input_data_file
                    try:
                        raw = path.read_bytes()
                    except OSError as exc:
                        raise LoadError(f"model_warmup '{warmup.name}': cannot read {path}: {exc.strerror}") from None
                    one = datatypes.from_raw(raw, datatypes.BY_CONFIG_NAME[type_name], tuple(spec.dims), str(path))
                    array = np.broadcast_to(one, shape).copy()
                elif which == "random_data" and dtype.kind == "f":
                    array = rng.random(shape).astype(dtype)
                elif which == "random_data" and dtype.kind in "iub":
                    array = rng.integers(0, 2, shape).astype(dtype)
                else:
                    array = _zeros(shape, dtype)
                inputs[name] = array
            samples.append((warmup.name, max(1, warmup.count), inputs))
        return samples
    where = str(model_dir / "config.pbtxt")
    try:
        specs = input_specs(config, where)
    except ConfigError as exc:
        raise LoadError(str(exc)) from None
    inputs = {}
    for spec in specs:
        if spec.datatype.dtype.kind == "O":
            log.info("model '%s': no implicit warm-up (input '%s' is BYTES)", model_dir.name, spec.name)
            return []
        dims = spec.reshape if spec.reshape is not None else spec.dims
        shape = ((1,) if batched else ()) + tuple(1 if d < 0 else d for d in dims)
        dtype = spec.datatype.dtype
        inputs[spec.name] = _zeros(shape, dtype)
    samples.append(("zeros", 1, inputs))
    return samples


def _zeros(shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
    """Zero-filled input; empty strings for BYTES (``model_warmup``'s ``zero_data``, as in Triton)."""
    return np.full(shape, b"", dtype=object) if dtype.kind == "O" else np.zeros(shape, dtype)


def warm_up(backend: BatchBackend, config: mc.ModelConfig, model_dir: Path) -> None:
    """Run the warm-up samples on every instance. A failure of the config's ``model_warmup`` is a load error;
    the implicit warm-up (no ``model_warmup``) never keeps a model from serving: its failure is logged."""
    outputs = [o.name for o in config.output]
    for name, count, inputs in warmup_samples(config, model_dir):
        for instance in range(backend.instance_count):
            for _ in range(count):
                try:
                    backend.execute(instance, inputs, outputs)
                except Exception as exc:  # noqa: BLE001 - any backend failure
                    if config.model_warmup:
                        raise LoadError(f"warm-up '{name}' failed: {exc}") from None
                    log.warning(
                        "model '%s': implicit warm-up (batch 1 of zeros; the config has no model_warmup) failed, "
                        "serving without it: %s",
                        model_dir.name,
                        exc,
                    )
                    return

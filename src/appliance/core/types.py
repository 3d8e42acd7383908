"""Inference requests and responses as the core sees them, free of any transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from numpy.typing import NDArray

if TYPE_CHECKING:
    from .batching import Execution


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str  # KServe v2 name, as the client declared it
    shape: tuple[int, ...]
    data: NDArray[Any]  # already in ``shape`` and the declared datatype's numpy dtype


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    """Where a tensor lies in system shared memory: ``byte_size`` bytes at ``offset`` in a registered region."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class SharedMemoryInput:
    """An input whose data lies in a region; the data plane reads it into an :class:`InputTensor`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    ref: SharedMemoryRef


@dataclass(slots=True)
class RequestedOutput:
    name: str
    classification: int = 0  # > 0: return the top N classes as "score:index:label" strings
    binary: bool | None = None  # REST only: whether the client wants binary data for this output
    shared_memory: SharedMemoryRef | None = None  # write the output there instead of into the response


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""  # "" lets the version policy choose (the highest served version)
    id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    shared_memory_inputs: list[SharedMemoryInput] = field(default_factory=list)  # read into ``inputs`` by the core
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: every output
    priority: int = 0  # Triton schedule-policy extension; 0 is the model's default level
    timeout_us: int = 0  # Triton schedule-policy extension; 0 is the model's default
    parameters: dict[str, Any] = field(default_factory=dict)
    # Whether the client is on this machine; the adapters find out only for requests that use shared memory
    local_client: bool = False
    # The REST headers or gRPC metadata (lower-case keys), read by a route's sticky key
    headers: Mapping[str, str] = field(default_factory=dict)
    # Which adapter it came through ("http", "grpc", "grpc-stream"): names its trace span
    transport: str = ""
    # Set only while tracing is on (:mod:`appliance.tracing`): what the core measures of the request
    trace: TraceRecord | None = None

    def uses_shared_memory(self) -> bool:
        return bool(self.shared_memory_inputs) or any(o.shared_memory is not None for o in self.outputs)


@dataclass(slots=True)
class TraceRecord:
    """What the core measured of one traced request, for the spans made after it: the hot path holds no span.

    ``enqueued`` and ``dispatched`` are ``time.monotonic()`` (0.0: the request was not queued by the core);
    ``execution`` is the batch it ran in, timed by ``time.perf_counter()``.
    """

    enqueued: float = 0.0
    dispatched: float = 0.0
    execution: Execution | None = None


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: NDArray[Any]
    shared_memory: SharedMemoryRef | None = None  # set once ``data`` has been written there: not sent


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)


class RequestTracer(Protocol):
    """Tracing as the data plane sees it (:class:`appliance.tracing.Tracing`): it wraps a request's inference."""

    async def infer(
        self, call: Callable[[InferRequest], Awaitable[InferResponse]], request: InferRequest
    ) -> InferResponse: ...

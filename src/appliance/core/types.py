"""Inference requests and responses as the core sees them, free of any transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray


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

    def uses_shared_memory(self) -> bool:
        return bool(self.shared_memory_inputs) or any(o.shared_memory is not None for o in self.outputs)


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

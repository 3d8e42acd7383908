"""What the core reports about itself, free of any transport: server and model metadata, model statistics
(Triton's statistics extension) and the repository index.

The data plane returns these values; REST (``appliance.rest.encode``) and gRPC (``appliance.grpc.encode``)
each turn them into their own wire form. Durations are in nanoseconds, timestamps in milliseconds since the
epoch, as Triton reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import State


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str  # KServe v2 name
    shape: tuple[int, ...]  # as a client sends it: -1 for a variable dimension, the batch one included


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]  # the ready versions
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True, slots=True)
class Duration:
    """How many times something happened and how long it took in all."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True, slots=True)
class InferenceStatistics:
    """Per request: ``success``/``fail`` end to end, ``queue`` waiting; per batch: the three compute phases."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)  # response cache hits: lookup and extraction
    cache_miss: Duration = field(default_factory=Duration)  # response cache misses: lookup and insertion


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """The compute phases of the batches of one size."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """Triton's ``ModelStatistics`` of one model version."""

    name: str
    version: str
    last_inference_ms: int  # wall clock of the last successful request; 0 if none
    inference_count: int  # samples inferred (a request of batch 4 counts 4)
    execution_count: int  # batches executed
    inference_stats: InferenceStatistics
    batch_stats: tuple[BatchStatistics, ...]  # by batch size, ascending


@dataclass(frozen=True, slots=True)
class RepositoryModel:
    """One row of the repository index: a model version, or a model that has no versions loaded."""

    name: str
    version: str | None = None  # None: the row is about the model as a whole
    state: State | None = None  # None: never loaded
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered shared-memory region: ``byte_size`` bytes at ``offset`` in the object ``key``."""

    name: str
    key: str
    offset: int
    byte_size: int

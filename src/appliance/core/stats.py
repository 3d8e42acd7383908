"""Statistics of each model version: Triton's model statistics extension and the Prometheus metrics.

Both are fed from the same three events (a request finished, a request failed, a batch executed), so they
always agree. Prometheus children are bound once per model version, keeping label look-ups off the hot path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .batching import Execution
from .errors import Status

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The Prometheus metrics of one server, in their own registry (nothing global)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        r = self.registry
        self.success = Counter("appliance_request_success", "Inference requests that succeeded.", labels, registry=r)
        self.failure = Counter(
            "appliance_request_failure", "Inference requests that failed, by reason.", (*labels, "reason"), registry=r
        )
        self.inference_count = Counter(
            "appliance_inference_count", "Samples inferred (a request of batch 4 counts 4).", labels, registry=r
        )
        self.execution_count = Counter(
            "appliance_execution_count",
            "Batches executed; inference_count / execution_count is the mean batch size.",
            labels,
            registry=r,
        )
        self.queue_duration = Histogram(
            "appliance_queue_duration_seconds",
            "Time requests waited in the queue.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "appliance_compute_duration_seconds",
            "Time a batch spent executing (input, infer, output).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "appliance_request_duration_seconds",
            "End-to-end time of successful requests inside the server.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "appliance_batch_size", "Samples per executed batch.", labels, buckets=_BATCH_BUCKETS, registry=r
        )
        self.pending = Gauge("appliance_pending_requests", "Requests waiting in the queue.", labels, registry=r)
        self.ready = Gauge("appliance_model_ready", "1 when the model version is ready.", labels, registry=r)


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class _BatchStats:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class VersionStats:
    """Counters of one model version, in Triton's model statistics shape and in Prometheus."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.model = model
        self.version = version
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.compute_input = _Duration()
        self.compute_infer = _Duration()
        self.compute_output = _Duration()
        self.batches: dict[int, _BatchStats] = {}
        self._metrics = metrics
        self._m_success = metrics.success.labels(model, version)
        self._m_inference = metrics.inference_count.labels(model, version)
        self._m_execution = metrics.execution_count.labels(model, version)
        self._m_queue = metrics.queue_duration.labels(model, version)
        self._m_compute = metrics.compute_duration.labels(model, version)
        self._m_request = metrics.request_duration.labels(model, version)
        self._m_batch = metrics.batch_size.labels(model, version)
        self.pending_gauge = metrics.pending.labels(model, version)
        self.ready_gauge = metrics.ready.labels(model, version)

    def request_succeeded(self, total_s: float, queue_s: float) -> None:
        self.success.add(total_s)
        self.queue.add(queue_s)
        self.last_inference_ms = int(time.time() * 1000)  # wall clock: a timestamp, not a duration
        self._m_success.inc()
        self._m_request.observe(total_s)
        self._m_queue.observe(queue_s)

    def request_failed(self, status: Status, total_s: float) -> None:
        self.fail.add(total_s)
        self._metrics.failure.labels(self.model, self.version, status.value).inc()

    def batch_executed(self, execution: Execution) -> None:
        self.inference_count += execution.batch_size
        self.execution_count += 1
        self.compute_input.add(execution.input_s)
        self.compute_infer.add(execution.infer_s)
        self.compute_output.add(execution.output_s)
        batch = self.batches.get(execution.batch_size)
        if batch is None:
            batch = self.batches[execution.batch_size] = _BatchStats()
        batch.compute_input.add(execution.input_s)
        batch.compute_infer.add(execution.infer_s)
        batch.compute_output.add(execution.output_s)
        self._m_inference.inc(execution.batch_size)
        self._m_execution.inc()
        self._m_compute.observe(execution.input_s + execution.infer_s + execution.output_s)
        self._m_batch.observe(execution.batch_size)

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` as JSON (the REST shape; gRPC parses the same dict)."""
        zero = {"count": 0, "ns": 0}
        return {
            "name": self.model,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
        }

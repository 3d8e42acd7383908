"""Statistics of each model version: Triton's model statistics extension and the Prometheus metrics.

Both are fed from the same three events (a request finished, a request failed, a batch executed), so they
always agree. A request only adds to plain counters and bucket arrays of :class:`VersionStats`, all on the
event loop thread; one collector turns them into the Prometheus text at scrape time, so the hot path pays
no metric locks or label look-ups.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .batching import Execution
from .cache import ResponseCache
from .errors import Status
from .metadata import BatchStatistics, Duration, InferenceStatistics, ModelStatistics

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LABELS = ["model", "version"]


class Metrics:
    """The Prometheus metrics of one server, in their own registry (nothing global).

    A model version keeps its series after it is unloaded (``appliance_model_ready`` goes to 0), as
    Prometheus expects of counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._versions: dict[tuple[str, str], VersionStats] = {}
        self.cache: ResponseCache | None = None  # the server's response cache, when it has one
        self.registry.register(self)  # a collector is anything with collect()

    def add(self, stats: VersionStats) -> None:
        self._versions[(stats.model, stats.version)] = stats

    def versions(self) -> Iterator[VersionStats]:
        """The statistics of every model version (and copy) there has been."""
        return iter(list(self._versions.values()))

    def collect(self) -> Iterator[Metric]:
        """The metric families, read from the counters at scrape time."""
        success = CounterMetricFamily("appliance_request_success", "Inference requests that succeeded.", labels=_LABELS)
        failure = CounterMetricFamily(
            "appliance_request_failure", "Inference requests that failed, by reason.", labels=[*_LABELS, "reason"]
        )
        inference = CounterMetricFamily(
            "appliance_inference_count", "Samples inferred (a request of batch 4 counts 4).", labels=_LABELS
        )
        execution = CounterMetricFamily(
            "appliance_execution_count",
            "Batches executed; inference_count / execution_count is the mean batch size.",
            labels=_LABELS,
        )
        queue = HistogramMetricFamily(
            "appliance_queue_duration_seconds", "Time requests waited in the queue.", labels=_LABELS
        )
        compute = HistogramMetricFamily(
            "appliance_compute_duration_seconds", "Time a batch spent executing (input, infer, output).", labels=_LABELS
        )
        request = HistogramMetricFamily(
            "appliance_request_duration_seconds",
            "End-to-end time of successful requests inside the server.",
            labels=_LABELS,
        )
        batch = HistogramMetricFamily("appliance_batch_size", "Samples per executed batch.", labels=_LABELS)
        pending = GaugeMetricFamily("appliance_pending_requests", "Requests waiting in the queue.", labels=_LABELS)
        ready = GaugeMetricFamily("appliance_model_ready", "1 when the model version is ready.", labels=_LABELS)
        instances = GaugeMetricFamily(
            "appliance_model_instances",
            "Execution instances of the model version (for Triton-served models: its instance_group).",
            labels=_LABELS,
        )
        objective = GaugeMetricFamily(
            "appliance_model_latency_objective_seconds",
            "The model's p99 latency objective (config parameter latency_objective_ms), for alerts and dashboards.",
            labels=_LABELS,
        )
        hits = CounterMetricFamily("appliance_cache_hits", "Requests answered from the response cache.", labels=_LABELS)
        misses = CounterMetricFamily(
            "appliance_cache_misses", "Requests looked up in the response cache and not found.", labels=_LABELS
        )
        for v in list(self._versions.values()):
            labels = [v.model, v.version]
            success.add_metric(labels, v.success.count)
            for reason, count in sorted(v.failures.items()):
                failure.add_metric([*labels, reason], count)
            inference.add_metric(labels, v.inference_count)
            execution.add_metric(labels, v.execution_count)
            for family, histogram in (
                (queue, v.queue_histogram),
                (compute, v.compute_histogram),
                (request, v.request_histogram),
                (batch, v.batch_histogram),
            ):
                family.add_metric(labels, histogram.cumulative(), histogram.sum)
            pending.add_metric(labels, v.pending())
            ready.add_metric(labels, 1 if v.ready else 0)
            if v.instances is not None:
                instances.add_metric(labels, v.instances())
            if v.latency_objective_s is not None:
                objective.add_metric(labels, v.latency_objective_s)
            hits.add_metric(labels, v.cache_hit.count)
            misses.add_metric(labels, v.cache_miss.count)
        yield from (success, failure, inference, execution, queue, compute, request, batch, pending, ready, instances)
        yield from (objective, hits, misses)
        if self.cache is not None:
            cache = self.cache.statistics()
            yield CounterMetricFamily(
                "appliance_cache_evictions",
                "Responses evicted to keep the cache's budget (Redis: its evicted_keys).",
                value=cache.evictions,
            )
            yield GaugeMetricFamily("appliance_cache_bytes", "Bytes the response cache holds.", value=cache.bytes)
            yield GaugeMetricFamily("appliance_cache_budget_bytes", "The response cache's budget.", value=cache.budget)
            yield GaugeMetricFamily("appliance_cache_entries", "Responses the cache holds.", value=cache.entries)
            yield GaugeMetricFamily(
                "appliance_cache_available",
                "1 when the response cache can be used (a Redis cache: connected); 0 while requests run without it.",
                value=1 if cache.available else 0,
            )


class Histogram:
    """A Prometheus histogram's counts, without locks: updated on the event loop thread only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in that bucket
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(self.bounds, self.counts):
            total += count
            out.append((repr(float(bound)), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def total(self) -> Duration:
        return Duration(self.count, self.ns)


@dataclass(slots=True)
class _BatchStats:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class VersionStats:
    """Counters of one model version, in Triton's model statistics shape and for Prometheus."""

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
        self.cache_hit = _Duration()  # lookup and extraction of a response cache hit
        self.cache_miss = _Duration()  # lookup and insertion of a miss
        self.batches: dict[int, _BatchStats] = {}
        self.failures: dict[str, int] = {}  # by reason (a Status value)
        self.queue_histogram = Histogram(LATENCY_BUCKETS)
        self.compute_histogram = Histogram(LATENCY_BUCKETS)
        self.request_histogram = Histogram(LATENCY_BUCKETS)
        self.batch_histogram = Histogram(_BATCH_BUCKETS)
        self.ready = False
        self.pending: Callable[[], int] = lambda: 0  # requests waiting in the queue, read at scrape time
        self.instances: Callable[[], int] | None = None  # execution instances now (batched backends)
        self.latency_objective_s: float | None = None  # from the model's config (latency_objective_ms)
        metrics.add(self)

    def request_succeeded(self, total_s: float, queue_s: float) -> None:
        self.success.add(total_s)
        self.queue.add(queue_s)
        self.last_inference_ms = int(time.time() * 1000)  # wall clock: a timestamp, not a duration
        self.request_histogram.observe(total_s)
        self.queue_histogram.observe(queue_s)

    def request_cache_hit(self, total_s: float, lookup_s: float) -> None:
        """A request answered from the response cache: a success (as in Triton, whose ``success`` includes cache
        hits), with no queue time, no compute and no inference_count."""
        self.success.add(total_s)
        self.cache_hit.add(lookup_s)
        self.last_inference_ms = int(time.time() * 1000)
        self.request_histogram.observe(total_s)

    def cache_missed(self, seconds: float) -> None:
        """The lookup and insertion time of a request the response cache did not have."""
        self.cache_miss.add(seconds)

    def request_failed(self, status: Status, total_s: float) -> None:
        self.fail.add(total_s)
        self.failures[status.value] = self.failures.get(status.value, 0) + 1

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
        self.compute_histogram.observe(execution.input_s + execution.infer_s + execution.output_s)
        self.batch_histogram.observe(execution.batch_size)

    def statistics(self) -> ModelStatistics:
        """Triton's ``ModelStatistics`` of this version, as of now."""
        return ModelStatistics(
            name=self.model,
            version=self.version,
            last_inference_ms=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            inference_stats=InferenceStatistics(
                success=self.success.total(),
                fail=self.fail.total(),
                queue=self.queue.total(),
                compute_input=self.compute_input.total(),
                compute_infer=self.compute_infer.total(),
                compute_output=self.compute_output.total(),
                cache_hit=self.cache_hit.total(),
                cache_miss=self.cache_miss.total(),
            ),
            batch_stats=tuple(
                BatchStatistics(
                    batch_size=size,
                    compute_input=b.compute_input.total(),
                    compute_infer=b.compute_infer.total(),
                    compute_output=b.compute_output.total(),
                )
                for size, b in sorted(self.batches.items())
            ),
        )

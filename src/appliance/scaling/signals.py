"""What the autoscaler reads: the service's ``/metrics``, turned into each model's load over an interval.

Two scrapes make one :class:`ModelLoad` per model (its versions summed), the way Prometheus' ``rate()`` and
``histogram_quantile()`` would over the same interval:

- ``ongoing``: mean requests in flight, by Little's law the request time finished per second of wall time
  (``Δ appliance_request_duration_seconds_sum / Δt``), and at least the requests queued now;
- ``p95_s``: the 95th percentile of request time, interpolated in the histogram's buckets of the interval
  (None below :data:`MIN_P95_REQUESTS` requests: too few to say);
- ``instances`` and ``pending`` as the gauges read now; ``gpu_load`` from the device telemetry (None where
  the service has none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MIN_P95_REQUESTS = 20


@dataclass(slots=True)
class _Counters:
    duration_sum: float = 0.0
    requests: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    pending: float = 0.0
    instances: float = 0.0
    ready: bool = False
    parked: bool = False
    load_seconds: float | None = None
    memory_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class Scrape:
    """One reading of ``/metrics``: per model counters, and the device's GPU load."""

    time: float  # monotonic seconds
    models: dict[str, _Counters]
    gpu_load: float | None
    power_mode: int | None = None  # the nvpmodel mode the device reports
    memory_available: float | None = None  # bytes, of the memory CPU and GPU share
    memory_total: float | None = None


@dataclass(frozen=True, slots=True)
class ModelLoad:
    model: str
    ongoing: float
    pending: int
    instances: int
    ready: bool
    request_rate: float
    p95_s: float | None
    gpu_load: float | None
    parked: bool = False
    load_seconds: float | None = None  # what its last load took
    memory_bytes: float | None = None  # the service's estimate of the memory it holds (appliance_model_memory_bytes)

    def inputs(self) -> dict[str, float | None]:
        """The figures a decision is made on, as it records them."""
        return {
            "ongoing": round(self.ongoing, 3),
            "pending": self.pending,
            "instances": self.instances,
            "request_rate": round(self.request_rate, 3),
            "p95_ms": None if self.p95_s is None else round(self.p95_s * 1000, 3),
            "gpu_load": self.gpu_load,
        }


def parse_scrape(text: str, now: float) -> Scrape:
    """A :class:`Scrape` of the Prometheus text; series this module does not use are skipped."""
    models: dict[str, _Counters] = {}
    gpu_load: float | None = None
    power_mode: int | None = None
    memory: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = family.name
        if name == "appliance_device_gpu_load_ratio":
            gpu_load = family.samples[0].value if family.samples else None
            continue
        if name == "appliance_device_memory_bytes":
            memory = {s.labels.get("kind", ""): s.value for s in family.samples}
            continue
        if name == "appliance_device_power_mode":
            ids = [s.labels.get("id", "") for s in family.samples]
            power_mode = int(ids[0]) if ids and ids[0].isdigit() else None
            continue
        if name not in (
            "appliance_request_duration_seconds",
            "appliance_pending_requests",
            "appliance_model_instances",
            "appliance_model_ready",
            "appliance_model_parked",
            "appliance_model_load_duration_seconds",
            "appliance_model_memory_bytes",
        ):
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if not model:
                continue
            c = models.setdefault(model, _Counters())
            if sample.name.endswith("_bucket"):
                bound = math.inf if sample.labels["le"] == "+Inf" else float(sample.labels["le"])
                c.buckets[bound] = c.buckets.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                c.duration_sum += sample.value
            elif sample.name.endswith("_count"):
                c.requests += sample.value
            elif name == "appliance_pending_requests":
                c.pending += sample.value
            elif name == "appliance_model_instances":
                c.instances = max(c.instances, sample.value)
            elif name == "appliance_model_ready":
                c.ready = c.ready or sample.value == 1
            elif name == "appliance_model_parked":
                c.parked = sample.value == 1
            elif name == "appliance_model_load_duration_seconds":
                c.load_seconds = sample.value
            elif name == "appliance_model_memory_bytes":
                c.memory_bytes = sample.value
    return Scrape(now, models, gpu_load, power_mode, memory.get("available"), memory.get("total"))


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank ``q``."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the +Inf bucket: the highest finite bound is all one can say
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def loads(before: Scrape, after: Scrape) -> dict[str, ModelLoad]:
    """Each model's load between two scrapes (a model new in ``after`` counts from zero)."""
    dt = after.time - before.time
    out: dict[str, ModelLoad] = {}
    for model, now in after.models.items():
        then = before.models.get(model, _Counters())
        # A counter that went down was reset (the model was reloaded): count from zero, as rate() does.
        reset = now.requests < then.requests
        base = _Counters() if reset else then
        requests = now.requests - base.requests
        busy = now.duration_sum - base.duration_sum
        p95 = None
        if requests >= MIN_P95_REQUESTS:
            p95 = quantile(0.95, ((b, n - base.buckets.get(b, 0.0)) for b, n in now.buckets.items()))
        out[model] = ModelLoad(
            model=model,
            ongoing=max(busy / dt if dt > 0 else 0.0, now.pending),
            pending=int(now.pending),
            instances=int(now.instances),
            ready=now.ready,
            request_rate=requests / dt if dt > 0 else 0.0,
            p95_s=p95,
            gpu_load=after.gpu_load,
            parked=now.parked,
            load_seconds=now.load_seconds,
            memory_bytes=now.memory_bytes,
        )
    return out

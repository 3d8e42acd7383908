"""The last hours of each model's figures and the device's, sampled by the service itself (``GET /v2/history``):
what the admin panel charts without a Prometheus of its own.

Every ``interval_s`` (10 s) a sample turns the counters of each model (its versions summed) into the request
rate, the error rate and the p99 latency of the interval (from the request-time histogram, as
``histogram_quantile``), and reads the device's figures (GPU load, hottest zone, board power, memory in use,
power mode) through a function the server hands in (the core knows nothing of sysfs). Series keep ``keep_s``
(6 hours): 2,160 points each at 10 s. Changes of thermal throttling and of the power mode go to the event log.

With ``history_file`` set, the series and the timeline outlive a restart (an update, a power cut): saved every
:data:`SAVE_EVERY_S` and when the service stops, read back at start (:func:`history_text`, :func:`restore_history`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .events import KEEP, EventLog
from .stats import LATENCY_BUCKETS, Metrics

SCHEMA = 1
SAVE_EVERY_S = 600.0  # a few hundred KB every ten minutes: little wear on the data partition's flash

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceFigures:
    """What the history keeps of one device sample; None where the device does not report it."""

    gpu_load: float | None = None
    temperature_c: float | None = None  # the hottest thermal zone
    board_power_w: float | None = None
    memory_used_bytes: float | None = None
    power_mode: str | None = None  # the nvpmodel mode's name (or number)
    throttling: tuple[str, ...] = ()  # the zones at or above their passive trip point


MODEL_SERIES = ("request_rate", "error_rate", "p99_ms")
DEVICE_SERIES = ("gpu_load", "temperature_c", "board_power_w", "memory_used_bytes")


@dataclass(slots=True)
class _Counters:
    success: int
    fail: int
    buckets: list[int]  # per bucket, not cumulative, the last one +Inf


def _p99_ms(buckets: list[int]) -> float | None:
    total = sum(buckets)
    if total == 0:
        return None
    rank, seen, lower = 0.99 * total, 0, 0.0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
        if seen + count >= rank and count:
            if bound == float("inf"):
                return lower * 1000
            return (lower + (bound - lower) * (rank - seen) / count) * 1000
        seen, lower = seen + count, bound
    return None


class History:
    def __init__(
        self,
        metrics: Metrics,
        events: EventLog,
        interval_s: float = 10.0,
        keep_s: float = 6 * 3600,
        device: Callable[[], DeviceFigures] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self.device = device  # the device's figures (the server hands it in with device telemetry on)
        self._metrics, self._events, self._clock = metrics, events, clock
        self._points = max(2, int(keep_s / interval_s))
        self._time: deque[float] = deque(maxlen=self._points)
        self._models: dict[str, dict[str, deque[float | None]]] = {}
        self._device_series: dict[str, deque[float | None]] = {k: deque(maxlen=self._points) for k in DEVICE_SERIES}
        self._power_mode: deque[str | None] = deque(maxlen=self._points)
        self._last: dict[str, _Counters] = {}
        self._last_time: float | None = None
        self._throttling: tuple[str, ...] = ()
        self._mode: str | None = None

    def _counters(self) -> dict[str, _Counters]:
        out: dict[str, _Counters] = {}
        for stats in list(self._metrics.versions()):
            c = out.setdefault(stats.model, _Counters(0, 0, [0] * (len(LATENCY_BUCKETS) + 1)))
            c.success += stats.success.count
            c.fail += stats.fail.count
            c.buckets = [a + b for a, b in zip(c.buckets, stats.request_histogram.counts)]
        return out

    def sample(self, figures: DeviceFigures | None = None) -> None:
        """One point of every series, on the event loop (the first sample only sets the counters' baseline);
        ``figures``: the device's, read beforehand."""
        now, counters = self._clock(), self._counters()
        previous, previous_time = self._last, self._last_time
        self._last, self._last_time = counters, now
        if figures is not None:
            self._device_events(figures)
        if previous_time is None:
            return
        dt = max(now - previous_time, 1e-9)
        length = len(self._time)
        self._time.append(now)
        for model, c in counters.items():
            series = self._models.get(model)
            if series is None:  # a model new since the last sample: no figures before it
                series = self._models[model] = {k: deque([None] * length, maxlen=self._points) for k in MODEL_SERIES}
            before = previous.get(model)
            if before is None or c.success < before.success or c.fail < before.fail:
                before = _Counters(0, 0, [0] * len(c.buckets))  # new, or its counters started again
            series["request_rate"].append((c.success - before.success) / dt)
            series["error_rate"].append((c.fail - before.fail) / dt)
            series["p99_ms"].append(_p99_ms([a - b for a, b in zip(c.buckets, before.buckets)]))
        for model, series in self._models.items():
            if model not in counters:
                for values in series.values():
                    values.append(None)
        for key in DEVICE_SERIES:
            self._device_series[key].append(None if figures is None else getattr(figures, key))
        self._power_mode.append(None if figures is None else figures.power_mode)

    def _device_events(self, figures: DeviceFigures) -> None:
        for zone in sorted(set(figures.throttling) - set(self._throttling)):
            self._events.add("throttling", "", f"{zone} is throttling", zone=zone, throttling=True)
        for zone in sorted(set(self._throttling) - set(figures.throttling)):
            self._events.add("throttling", "", f"{zone} no longer throttling", zone=zone, throttling=False)
        self._throttling = figures.throttling
        if figures.power_mode is not None and figures.power_mode != self._mode:
            if self._mode is not None:
                self._events.add(
                    "power_mode", "", f"power mode {self._mode} -> {figures.power_mode}", mode=figures.power_mode
                )
            self._mode = figures.power_mode

    def to_json(self, model: str = "", since: float = 0.0) -> dict[str, Any]:
        """The series after ``since`` (of one model, when named), with their times."""
        start = next((i for i, t in enumerate(self._time) if t > since), len(self._time))
        times = list(self._time)[start:]

        def cut(values: deque[Any]) -> list[Any]:
            return list(values)[start:]

        models = {
            name: {key: cut(values) for key, values in series.items()}
            for name, series in sorted(self._models.items())
            if not model or name == model
        }
        device: dict[str, Any] = {key: cut(values) for key, values in self._device_series.items()}
        device["power_mode"] = cut(self._power_mode)
        return {"interval_s": self.interval_s, "time": times, "models": models, "device": device}

    def restore(self, doc: dict[str, Any], now: float) -> int:
        """Take back the points of ``doc`` (:meth:`to_json`'s) that are still within the kept span, followed by
        one empty point, so a chart's line breaks where the service was down. Returns the points taken. Called
        before the first sample."""
        if self._time:
            raise RuntimeError("history: restore() comes before the first sample")
        times = [float(t) for t in doc["time"]]
        keep = (self._points - 1) * self.interval_s
        start = next((i for i, t in enumerate(times) if t > now - keep and t <= now), len(times))
        taken = times[start:][-(self._points - 1) :]
        first = len(times) - len(taken)
        if not taken:
            return 0

        def points(values: list[Any]) -> list[Any]:
            if len(values) != len(times):
                raise ValueError(f"a series has {len(values)} points for {len(times)} times")
            return [v if v is None or isinstance(v, str) or math.isfinite(v) else None for v in values[first:]]

        # everything is read before anything changes: a damaged file leaves the history empty, not half filled
        models = {
            str(name): {key: [*points(series[key]), None] for key in MODEL_SERIES}
            for name, series in doc["models"].items()
        }
        device = {key: [*points(doc["device"][key]), None] for key in (*DEVICE_SERIES, "power_mode")}
        self._time.extend([*taken, taken[-1] + self.interval_s])  # and the gap
        for name, series in models.items():
            self._models[name] = {key: deque(values, maxlen=self._points) for key, values in series.items()}
        for key in DEVICE_SERIES:
            self._device_series[key].extend(device[key])
        self._power_mode.extend(device["power_mode"])
        return len(taken)

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled; a failing sample is logged and the next one tried."""
        while True:
            try:
                # sysfs is read in a thread; the counters on the loop, where they change
                figures = await asyncio.to_thread(self.device) if self.device is not None else None
                self.sample(figures)
            except Exception:
                log.exception("history: a sample failed")
            await asyncio.sleep(self.interval_s)


def history_text(history: History, events: EventLog) -> str:
    """The series and the timeline as the history file holds them; made on the event loop, where they change
    (the file is then written atomically in a thread: :func:`.files.write_atomically`)."""
    doc = {"schema": SCHEMA, "saved": time.time(), "history": history.to_json(), "events": events.recent(KEEP)}
    return json.dumps(doc, separators=(",", ":"))


def restore_history(path: Path, history: History, events: EventLog, now: float) -> str:
    """Read back what :func:`history_text` made, before the first sample; returns what it found, for the log. A
    missing file is a first start; an unreadable or damaged one is reported and left out (the charts start
    empty)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return f"history: no {path} yet; the charts start empty"
    except OSError as exc:
        return f"history: cannot read {path}: {exc.strerror}; the charts start empty"
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError(f"not a history file of schema {SCHEMA}")
        taken = history.restore(doc["history"], now)
        restored = events.restore(doc["events"], now)
    except json.JSONDecodeError as exc:
        return f"history: {path}:{exc.lineno}: not valid JSON ({exc.msg}); the charts start empty"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"history: {path}: damaged ({type(exc).__name__}: {exc}); the charts start empty"
    return f"history: {taken} points and {restored} events taken back from {path}"

"""Latency percentiles and throughput per batch size, over any runner callable (an engine, ONNX Runtime).

Calls run back to back on one thread, so throughput is ``batch / mean latency``: what one instance sustains.
The target on Orin (ResNet-50 FP16 at batch 16: >= 1,000 img/s, p99 < 15 ms) is measured with this on the
device: ``trt-optimize build ... --profile 1,8,16``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Runner = Callable[[dict[str, NDArray[Any]]], object]


@dataclass(frozen=True, slots=True)
class BatchProfile:
    batch_size: int
    iterations: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float  # samples per second

    def line(self) -> str:
        return (
            f"batch {self.batch_size:>4}: p50 {self.p50_ms:8.3f} ms  p90 {self.p90_ms:8.3f} ms  "
            f"p99 {self.p99_ms:8.3f} ms  {self.throughput:10.1f} samples/s  ({self.iterations} runs)"
        )


def summarize(batch_size: int, latencies_s: Sequence[float]) -> BatchProfile:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no latencies to summarize")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return BatchProfile(
        batch_size,
        int(ms.size),
        mean,
        float(p50),
        float(p90),
        float(p99),
        batch_size / (mean / 1000.0) if mean > 0 else float("inf"),
    )


def profile_runner(
    runner: Runner,
    make_inputs: Callable[[int], Mapping[str, NDArray[Any]]],
    batch_sizes: Sequence[int],
    iterations: int = 100,
    warmup: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> list[BatchProfile]:
    """Time ``iterations`` calls of ``runner`` per batch size, after ``warmup`` untimed ones."""
    results = []
    for batch in batch_sizes:
        inputs = dict(make_inputs(batch))
        for _ in range(warmup):
            runner(inputs)
        latencies = []
        for _ in range(iterations):
            start = clock()
            runner(inputs)
            latencies.append(clock() - start)
        results.append(summarize(batch, latencies))
    return results


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"--profile '{text}': expected batch sizes like 1,8,16")
    return sizes

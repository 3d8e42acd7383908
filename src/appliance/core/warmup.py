"""Warm a loaded model up on demand: its warm-up samples (the config's ``model_warmup``, else one batch-1
request of zeros, as at load: :func:`.model.warmup_samples`) sent through the scheduler like any request, and
timed. What an engineer runs after a power-mode change, a long idle or a swap to see that a model runs, and how
fast, without a client at hand."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import datatypes
from .backend import LoadError
from .errors import InferenceError, InvalidArgument
from .model import ModelVersion, warmup_samples
from .types import InferRequest, InputTensor


@dataclass(frozen=True, slots=True)
class WarmUpSample:
    name: str
    runs: int
    mean_ms: float
    max_ms: float
    error: str = ""  # the first failure; the sample's other runs are not tried

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.runs,
            "mean_ms": round(self.mean_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class WarmUpReport:
    model: str
    version: str
    samples: list[WarmUpSample]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "samples": [s.to_json() for s in self.samples]}


async def warm_up_now(served: ModelVersion, model_dir: Path) -> WarmUpReport:
    """Run ``served``'s warm-up samples, each as many times as its ``count``. A model with nothing to warm up
    with (a BYTES input and no ``model_warmup``) is a 400 that says so."""
    try:
        samples = await asyncio.to_thread(warmup_samples, served.config, model_dir)
    except LoadError as exc:
        raise InvalidArgument(f"model '{served.name}': {exc}") from None
    if not samples:
        raise InvalidArgument(
            f"model '{served.name}' has nothing to warm up with: its config has no model_warmup, and an input is "
            "BYTES (no request of zeros can be made up for it)"
        )
    done = []
    for name, count, inputs in samples:
        tensors = [InputTensor(n, datatypes.of_array(a).name, tuple(a.shape), a) for n, a in inputs.items()]
        times: list[float] = []
        error = ""
        for _ in range(count):
            request = InferRequest(served.name, str(served.version), id=f"warmup-{name}", inputs=list(tensors))
            start = time.perf_counter()
            try:
                await served.infer(request)
            except InferenceError as exc:
                error = str(exc)
                break
            times.append((time.perf_counter() - start) * 1000.0)
        mean = sum(times) / len(times) if times else 0.0
        done.append(WarmUpSample(name, len(times), mean, max(times, default=0.0), error))
    return WarmUpReport(served.name, str(served.version), done)

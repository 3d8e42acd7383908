"""Validation of an engine against ONNX Runtime: the same inputs through both, compared per precision.

Each output is compared element-wise (``|engine - ort| <= atol + rtol * |ort|``, as ``numpy.allclose``) for
fp32 and fp16, and by relative RMS error for int8 and best, whose element-wise errors are large by design.
Outputs that look like class scores (rank >= 2, last dimension > 1) are also compared by top-1 agreement:
the share of rows whose arg-max is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import OptimizeError

Runner = Callable[[dict[str, NDArray[Any]]], Mapping[str, NDArray[Any]]]


@dataclass(frozen=True, slots=True)
class Tolerance:
    rtol: float | None  # element-wise check when set
    atol: float
    max_relative_rms: float | None  # ||engine - ort|| / ||ort|| when set
    min_top1_agreement: float


TOLERANCES = {
    "fp32": Tolerance(rtol=1e-3, atol=1e-4, max_relative_rms=None, min_top1_agreement=0.999),
    "fp16": Tolerance(rtol=1e-2, atol=1e-2, max_relative_rms=None, min_top1_agreement=0.99),
    "int8": Tolerance(rtol=None, atol=0.0, max_relative_rms=0.15, min_top1_agreement=0.99),
    "best": Tolerance(rtol=None, atol=0.0, max_relative_rms=0.15, min_top1_agreement=0.99),
}


@dataclass(frozen=True, slots=True)
class OutputReport:
    name: str
    max_abs_error: float
    relative_rms: float
    outside_tolerance: int  # elements, for element-wise checks (0 otherwise)
    elements: int
    top1_agreement: float | None  # None when the output is not class scores
    passed: bool

    def line(self) -> str:
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.2%}"
        outside = f", {self.outside_tolerance}/{self.elements} outside tolerance" if self.outside_tolerance else ""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.name}: {verdict} (max abs error {self.max_abs_error:.3g}, relative RMS "
            f"{self.relative_rms:.3g}{outside}{top1})"
        )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    precision: str
    outputs: list[OutputReport]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def lines(self) -> list[str]:
        tol = TOLERANCES[self.precision]
        if tol.rtol is not None:
            rule = f"rtol {tol.rtol:g}, atol {tol.atol:g}"
        else:
            rule = f"relative RMS <= {tol.max_relative_rms:g}"
        head = f"validation against ONNX Runtime ({self.precision}: {rule}, top-1 >= {tol.min_top1_agreement:.1%})"
        return [head, *(f"  {o.line()}" for o in self.outputs)]


def top1_agreement(reference: NDArray[Any], candidate: NDArray[Any]) -> float | None:
    if reference.ndim < 2 or reference.shape[-1] < 2:
        return None
    ref = reference.reshape(-1, reference.shape[-1]).argmax(axis=1)
    cand = candidate.reshape(-1, candidate.shape[-1]).argmax(axis=1)
    return float(np.mean(ref == cand))


def compare(
    reference: Mapping[str, NDArray[Any]], candidate: Mapping[str, NDArray[Any]], precision: str
) -> ValidationReport:
    """Compare an engine's outputs with ONNX Runtime's under the tolerance of ``precision``."""
    tol = TOLERANCES[precision]
    reports = []
    for name, ref in reference.items():
        if name not in candidate:
            raise OptimizeError(f"output '{name}' missing from the engine's outputs ({', '.join(candidate)})")
        ref64 = np.asarray(ref, dtype=np.float64)
        cand64 = np.asarray(candidate[name], dtype=np.float64)
        if ref64.shape != cand64.shape:
            raise OptimizeError(
                f"output '{name}': engine shape {list(cand64.shape)} is not ONNX Runtime's {list(ref64.shape)}"
            )
        error = np.abs(cand64 - ref64)
        norm = float(np.sqrt(np.mean(ref64**2)))
        rel_rms = float(np.sqrt(np.mean(error**2))) / norm if norm > 0 else float(np.sqrt(np.mean(error**2)))
        outside = 0
        passed = True
        if tol.rtol is not None:
            outside = int(np.count_nonzero(error > tol.atol + tol.rtol * np.abs(ref64)))
            passed = outside == 0
        if tol.max_relative_rms is not None:
            passed = passed and rel_rms <= tol.max_relative_rms
        top1 = top1_agreement(ref64, cand64)
        if top1 is not None:
            passed = passed and top1 >= tol.min_top1_agreement
        reports.append(
            OutputReport(name, float(error.max(initial=0.0)), rel_rms, outside, int(ref64.size), top1, passed)
        )
    return ValidationReport(precision, reports)


def onnxruntime_runner(onnx_path: Path) -> Runner:
    """Runs the ONNX file on the CPU with ONNX Runtime: the reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(inputs: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return dict(zip(names, session.run(names, inputs)))

    return run


def random_inputs(
    shapes: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]], seed: int = 0
) -> dict[str, NDArray[Any]]:
    """Seeded inputs: normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in shapes.items():
        if np.dtype(dtype).kind == "f":
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif np.dtype(dtype).kind == "b":
            out[name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[name] = rng.integers(0, 10, shape).astype(dtype)
    return out


def validate(onnx_path: Path, engine: Runner, inputs: dict[str, NDArray[Any]], precision: str) -> ValidationReport:
    """Run ``inputs`` through ONNX Runtime and through ``engine`` and compare."""
    reference = onnxruntime_runner(onnx_path)(inputs)
    return compare(reference, engine(inputs), precision)

"""Validation maths against real ONNX Runtime outputs, profiling statistics, and the build decisions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from appliance.optimize.buildspec import BuildSpec, builder_flags, parser_error_message
from appliance.optimize.calibration import CalibrationData
from appliance.optimize.errors import OptimizeError
from appliance.optimize.profile import parse_batch_sizes, profile_runner, summarize
from appliance.optimize.progress import Progress
from appliance.optimize.validate import compare, onnxruntime_runner, top1_agreement, validate

from .conftest import mlp, mlp_weights, save


def _variant(tmp_path: Path, name: str, transform) -> Path:  # type: ignore[no-untyped-def]
    """The MLP with its weights passed through ``transform``: how a lower-precision engine would see them."""
    return save(mlp({k: transform(v).astype(np.float32) for k, v in mlp_weights().items()}), tmp_path / name)


def _int8(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max() / 127 or 1.0
    return np.round(w / scale) * scale


def test_tolerances_per_precision_against_onnxruntime(tmp_path: Path) -> None:
    reference = save(mlp(), tmp_path / "fp32.onnx")
    inputs = {"input": np.random.default_rng(1).standard_normal((256, 16)).astype(np.float32)}
    same = onnxruntime_runner(reference)
    fp16 = onnxruntime_runner(_variant(tmp_path, "fp16.onnx", lambda w: w.astype(np.float16)))
    int8 = onnxruntime_runner(_variant(tmp_path, "int8.onnx", _int8))
    other = onnxruntime_runner(save(mlp(seed=7), tmp_path / "other.onnx"))

    assert validate(reference, same, inputs, "fp32").passed
    assert not validate(reference, fp16, inputs, "fp32").passed
    assert validate(reference, fp16, inputs, "fp16").passed
    assert not validate(reference, int8, inputs, "fp16").passed
    report = validate(reference, int8, inputs, "int8")
    assert report.passed, report.lines()
    assert report.outputs[0].top1_agreement is not None and report.outputs[0].top1_agreement >= 0.99
    assert validate(reference, int8, inputs, "best").passed
    wrong = validate(reference, other, inputs, "int8")
    assert not wrong.passed and wrong.outputs[0].top1_agreement < 0.5  # type: ignore[operator]
    lines = wrong.lines()
    assert lines[0].startswith("validation against ONNX Runtime (int8: relative RMS <= 0.15")
    assert "logits: FAILED" in lines[1]


def test_comparison_maths() -> None:
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]], np.float32)
    cand = ref.copy()
    cand[3] = [1.0, 0.0, 0.0]  # one row of four disagrees
    assert top1_agreement(ref, cand) == 0.75
    assert top1_agreement(np.zeros(4), np.zeros(4)) is None  # not class scores
    report = compare({"p": ref}, {"p": cand}, "fp16")
    out = report.outputs[0]
    assert out.max_abs_error == pytest.approx(1.0) and out.outside_tolerance == 2 and not out.passed
    exact = compare({"p": ref}, {"p": ref + 1e-5}, "fp32").outputs[0]
    assert exact.passed and exact.top1_agreement == 1.0
    assert exact.relative_rms == pytest.approx(1e-5 / np.sqrt(np.mean(ref.astype(np.float64) ** 2)), rel=1e-3)
    with pytest.raises(OptimizeError, match=r"output 'p': engine shape \[3\] is not ONNX Runtime's \[4, 3\]"):
        compare({"p": ref}, {"p": np.zeros(3)}, "fp32")
    with pytest.raises(OptimizeError, match=r"output 'p' missing from the engine's outputs \(q\)"):
        compare({"p": ref}, {"q": ref}, "fp32")


def test_profile_statistics_with_a_fixed_clock() -> None:
    ticks = iter(np.cumsum([0.0] + [0.001, 0.0] * 99 + [0.010]).tolist())  # 99 runs of 1 ms, one of 10 ms
    calls = []
    rows = profile_runner(
        lambda inputs: calls.append(inputs),
        lambda b: {"x": np.zeros((b, 2))},
        [4],
        iterations=100,
        warmup=3,
        clock=lambda: next(ticks),
    )
    assert len(calls) == 103
    row = rows[0]
    assert row.p50_ms == pytest.approx(1.0) and row.p99_ms == pytest.approx(1.09, abs=0.01)
    assert row.mean_ms == pytest.approx(1.09) and row.throughput == pytest.approx(4 / 0.00109)
    assert "batch    4: p50" in row.line()
    assert summarize(1, [0.002, 0.004]).p50_ms == pytest.approx(3.0)
    assert parse_batch_sizes("1,8,16") == [1, 8, 16]
    with pytest.raises(ValueError, match="expected batch sizes"):
        parse_batch_sizes("1,x")


def test_profile_of_a_real_onnxruntime_session(mlp_onnx: Path) -> None:
    runner = onnxruntime_runner(mlp_onnx)
    rows = profile_runner(runner, lambda b: {"input": np.ones((b, 16), np.float32)}, [1, 8], iterations=20, warmup=2)
    assert [r.batch_size for r in rows] == [1, 8]
    assert all(0 < r.p50_ms <= r.p99_ms and r.throughput > 0 for r in rows)


def test_builder_flags_and_precision_checks(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    assert builder_flags(BuildSpec(onnx, "fp32"), True, True) == []
    assert builder_flags(BuildSpec(onnx, "fp16"), True, True) == ["FP16"]
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(b"cache")
    assert builder_flags(BuildSpec(onnx, "int8", calibration_cache=cache), True, True) == ["INT8"]
    assert builder_flags(BuildSpec(onnx, "best", calibration_cache=cache, dla_core=0), True, True) == [
        "FP16",
        "INT8",
        "GPU_FALLBACK",
    ]
    assert builder_flags(BuildSpec(onnx, "int8", strongly_typed=True), True, False) == []
    with pytest.raises(OptimizeError, match=r"precision fp16: this platform has no fast FP16"):
        builder_flags(BuildSpec(onnx, "fp16"), False, True)
    with pytest.raises(OptimizeError, match=r"precision int8: this platform has no fast INT8"):
        builder_flags(BuildSpec(onnx, "int8", calibration_cache=cache), True, False)
    with pytest.raises(OptimizeError, match=r"precision int8 needs --calibration-data DIR"):
        builder_flags(BuildSpec(onnx, "int8"), True, True)
    with pytest.raises(OptimizeError, match=r"missing.cache: calibration cache does not exist"):
        builder_flags(BuildSpec(onnx, "int8", calibration_cache=tmp_path / "missing.cache"), True, True)
    with pytest.raises(OptimizeError, match=r"the DLA runs FP16 and INT8 only"):
        builder_flags(BuildSpec(onnx, "fp32", dla_core=0), True, True)
    with pytest.raises(OptimizeError, match=r"m.onnx: has QuantizeLinear/DequantizeLinear nodes.*not fp16"):
        builder_flags(BuildSpec(onnx, "fp16", strongly_typed=True), True, True)
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    data = CalibrationData(tmp_path, (16,), np.dtype(np.float32))
    assert builder_flags(BuildSpec(onnx, "int8", calibration=data), True, True) == ["INT8"]


class FakeTensorRTParserErrorForTests:
    """Stands in for tensorrt.IParserError (TensorRT 10): node index, name, operator and description."""

    def __init__(self, node: int, name: str, op: str, desc: str) -> None:
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def desc(self) -> str:
        return self._desc


def test_parser_errors_name_node_and_op() -> None:
    errors = [
        FakeTensorRTParserErrorForTests(2, "nms", "NonMaxSuppression", "no importer registered"),
        FakeTensorRTParserErrorForTests(-1, "", "", "invalid graph"),
    ]
    assert parser_error_message(Path("m.onnx"), errors).splitlines() == [
        "m.onnx: TensorRT cannot parse node 2 'nms' (op NonMaxSuppression): no importer registered",
        "m.onnx: TensorRT cannot parse the model: invalid graph",
    ]


def test_progress_lines_for_the_journal_and_a_bar_for_a_terminal() -> None:
    out = io.StringIO()
    clock = iter([0.0, 0.0, 12.5, 12.5]).__next__
    progress = Progress(out, prefix="mlp/1: ", tty=False, clock=clock)
    progress.phase_start("Building engine", None, 8)
    progress.phase_start("Tactic timing", "Building engine", 100)
    for step in range(100):
        assert progress.step_complete("Tactic timing", step)
    progress.phase_finish("Tactic timing")
    for step in range(8):
        progress.step_complete("Building engine", step)
    progress.phase_finish("Building engine")
    assert out.getvalue().splitlines() == [
        "mlp/1: Building engine: started (8 steps)",
        "mlp/1: Building engine: 25% (2/8)",
        "mlp/1: Building engine: 50% (4/8)",
        "mlp/1: Building engine: 75% (6/8)",
        "mlp/1: Building engine: done in 12.5 s",
    ]
    tty = io.StringIO()
    bar = Progress(tty, tty=True)
    bar.phase_start("Building engine", None, 4)
    bar.step_complete("Building engine", 1)
    assert tty.getvalue().endswith("Building engine [##########          ] 2/4")
    bar.cancelled = True
    assert bar.step_complete("Building engine", 2) is False  # asks TensorRT to cancel

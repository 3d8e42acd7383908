"""ONNX Runtime in the test process: what a served model must answer, and how long the slow model takes here."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.support import models

_sessions: dict[bytes, ort.InferenceSession] = {}


def ort_run(model: bytes | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX file in-process; BYTES go in and come back as ``bytes`` objects, as over the wire."""
    data = model.read_bytes() if isinstance(model, Path) else model
    session = _sessions.get(data)
    if session is None:
        session = _sessions[data] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    string_inputs = {i.name for i in session.get_inputs() if i.type == "tensor(string)"}
    converted = {
        k: (np.vectorize(lambda b: b.decode(), otypes=[object])(v) if k in string_inputs else v)
        for k, v in feeds.items()
    }
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, converted)
    out = {}
    for name, value in zip(names, results):
        if value.dtype == object:
            value = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(value)
        out[name] = value
    return out


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Bit-for-bit equal values, shapes and dtypes (BYTES as bytes objects)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype == object:
        assert actual.dtype == object, actual.dtype
        assert [bytes(a) for a in actual.reshape(-1)] == [bytes(e) for e in expected.reshape(-1)]
    else:
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        np.testing.assert_array_equal(actual, expected)


# -- the slow model's clock ----------------------------------------------------------------------

_seconds_per_iteration: list[float] = []


def seconds_per_iteration() -> float:
    """Measured in-process once: how long one MatMul of the slow model takes here (single thread)."""
    if not _seconds_per_iteration:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(models.slow_model(), options, providers=["CPUExecutionProvider"])
        x = np.ones((1, 4), np.float32)
        session.run(None, {"x": x, "n": np.full((1, 1), 5, np.int64)})
        times = []
        for _ in range(3):
            start = time.perf_counter()
            session.run(None, {"x": x, "n": np.full((1, 1), 40, np.int64)})
            times.append((time.perf_counter() - start) / 40)
        _seconds_per_iteration.append(float(np.median(times)))
    return _seconds_per_iteration[0]


def iterations_for(seconds: float) -> int:
    """Iterations of the slow model that keep an instance busy for about ``seconds``."""
    return max(1, round(seconds / seconds_per_iteration()))

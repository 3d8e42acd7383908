"""The response cache in process: the LRU with its byte budget, and the key."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.core.cache import LocalResponseCache, response_key
from appliance.core.types import InputTensor, OutputTensor, RequestedOutput


def _out(value: float, n: int = 10) -> list[OutputTensor]:
    data = np.full((1, n), value, np.float32)
    return [OutputTensor("y", "FP32", data.shape, data)]


def test_lru_keeps_the_budget_and_evicts_the_least_recently_used():
    cache = LocalResponseCache(700)
    for key in (b"a", b"b", b"c"):
        cache.put(key, _out(1.0))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"d", _out(2.0))
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"d") is not None
    stats = cache.statistics()
    assert (stats.entries, stats.evictions, stats.hits, stats.misses) == (3, 1, 3, 1)
    assert stats.bytes <= stats.budget == 700


def test_an_entry_larger_than_the_budget_is_not_kept():
    cache = LocalResponseCache(700)
    cache.put(b"small", _out(1.0))
    cache.put(b"big", _out(1.0, n=1000))
    assert cache.get(b"big") is None and cache.get(b"small") is not None
    assert cache.statistics().evictions == 0


def test_hits_are_new_read_only_tensors_over_copies():
    cache = LocalResponseCache(10_000)
    original = _out(1.0)
    cache.put(b"k", original)
    original[0].data[0, 0] = 99.0  # the caller's array stays its own
    first, second = cache.get(b"k"), cache.get(b"k")
    assert first is not None and second is not None
    assert first[0] is not second[0]
    assert first[0].data[0, 0] == 1.0
    assert not first[0].data.flags.writeable
    with pytest.raises(ValueError):
        first[0].data[0, 0] = 2.0


def test_bytes_outputs_are_counted_and_kept():
    cache = LocalResponseCache(10_000)
    data = np.array([[b"0.9:3:cat", b"0.1:1:dog"]], dtype=object)
    cache.put(b"k", [OutputTensor("c", "BYTES", data.shape, data)])
    hit = cache.get(b"k")
    assert hit is not None and hit[0].data.tolist() == data.tolist()
    assert cache.statistics().bytes >= data.nbytes + 18


def test_the_key_covers_everything_that_makes_a_response():
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.ones((1, 2), np.int32)

    def key(**change: object) -> bytes:
        args: dict[str, object] = {
            "model": "m",
            "version": 1,
            "digest": "d",
            "inputs": [InputTensor("x", "FP32", (1, 4), x), InputTensor("b", "INT32", (1, 2), b)],
            "outputs": [RequestedOutput("y")],
        }
        args.update(change)
        return response_key(**args)  # type: ignore[arg-type]

    base = key()
    assert key() == base
    # the inputs' order is not part of it
    assert key(inputs=[InputTensor("b", "INT32", (1, 2), b), InputTensor("x", "FP32", (1, 4), x)]) == base
    x2 = x.reshape(2, 2)
    others = [
        key(model="n"),
        key(version=2),
        key(digest="e"),
        key(inputs=[InputTensor("x", "FP32", (2, 2), x2), InputTensor("b", "INT32", (1, 2), b)]),
        key(inputs=[InputTensor("x", "INT32", (1, 4), x.view(np.int32)), InputTensor("b", "INT32", (1, 2), b)]),
        key(inputs=[InputTensor("z", "FP32", (1, 4), x), InputTensor("b", "INT32", (1, 2), b)]),
        key(inputs=[InputTensor("x", "FP32", (1, 4), x + 1), InputTensor("b", "INT32", (1, 2), b)]),
        key(inputs=[InputTensor("x", "FP32", (1, 4), x)]),
        key(outputs=[]),
        key(outputs=[RequestedOutput("y", classification=2)]),
        key(outputs=[RequestedOutput("z")]),
    ]
    assert len({base, *others}) == len(others) + 1

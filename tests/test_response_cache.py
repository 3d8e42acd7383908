"""The response cache: ``response_cache { enable: true }`` in a model's config and ``--cache-config local,size=N``
on the server, over both transports with the real tritonclient; the LRU, the key and the flag in process."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from appliance.core.cache import LocalResponseCache, response_key
from appliance.core.types import InputTensor, OutputTensor, RequestedOutput
from appliance.settings import LocalCacheConfig, SettingsError, load_settings, parse_cache_config
from tests.support import models
from tests.support.appliance import serve_command
from tests.support.cache import cache_counts as _counts
from tests.support.cache import cache_metrics as _metrics
from tests.support.cache import image as _image
from tests.support.cache import infer as _infer
from tests.support.cache import statistics as _stats
from tests.support.cache import write_cache_repo


@pytest.fixture(scope="module")
def cache_repo(tmp_path_factory: pytest.TempPathFactory, demo_repo: Path) -> Path:
    return write_cache_repo(tmp_path_factory.mktemp("cache") / "repo", demo_repo)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_hit_returns_the_bytes_of_the_miss_and_counts_as_triton_does(server_factory, cache_repo, transport):
    server = server_factory(cache_repo, "--cache-config", "local,size=1048576")
    x = _image(0)
    miss = _infer(server, transport, "cnn", "image", x)
    hit = _infer(server, transport, "cnn", "image", x)
    assert miss.tobytes() == hit.tobytes() and miss.dtype == hit.dtype and miss.shape == hit.shape == (1, 10)
    stats = _stats(server, transport, "cnn")
    assert _counts(stats) == (1, 1)
    assert int(stats["inference_stats"]["cache_hit"]["ns"]) > 0
    assert int(stats["inference_stats"]["cache_miss"]["ns"]) > 0
    # As in Triton: success includes the hit, inference_count and execution_count do not.
    assert int(stats["inference_stats"]["success"]["count"]) == 2
    assert int(stats["inference_count"]) == 1 and int(stats["execution_count"]) == 1
    metrics = _metrics(server)
    assert metrics['appliance_cache_hits_total{model="cnn",version="1"}'] == 1
    assert metrics['appliance_cache_misses_total{model="cnn",version="1"}'] == 1
    assert metrics["appliance_cache_entries"] == 1
    assert 0 < metrics["appliance_cache_bytes"] <= metrics["appliance_cache_budget_bytes"] == 1048576
    assert metrics["appliance_cache_evictions_total"] == 0


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_other_inputs_or_outputs_are_misses(server_factory, cache_repo, transport):
    server = server_factory(cache_repo, "--cache-config", "local,size=1048576")
    _infer(server, transport, "cnn", "image", _image(0))
    _infer(server, transport, "cnn", "image", _image(1))  # other bytes
    _infer(server, transport, "cnn", "image", np.concatenate([_image(0), _image(0)]))  # other shape
    top3 = _infer(server, transport, "cnn", "image", _image(0), classification=3, output="probabilities")
    assert _counts(_stats(server, transport, "cnn")) == (0, 4)
    again = _infer(server, transport, "cnn", "image", _image(0), classification=3, output="probabilities")
    assert top3.tolist() == again.tolist() and top3.dtype == object
    assert _counts(_stats(server, transport, "cnn")) == (1, 4)


def test_a_model_without_response_cache_is_never_cached(server_factory, cache_repo):
    server = server_factory(cache_repo, "--cache-config", "local,size=1048576")
    x = np.ones((1, 64), np.float32)
    for transport in ("http", "grpc", "http"):
        _infer(server, transport, "mlp", "input", x)
    stats = _stats(server, "http", "mlp")
    assert _counts(stats) == (0, 0) and int(stats["execution_count"]) == 3


def test_without_a_server_cache_nothing_is_cached(server_factory, cache_repo):
    server = server_factory(cache_repo)
    for _ in range(2):
        _infer(server, "grpc", "cnn", "image", _image(0))
    stats = _stats(server, "grpc", "cnn")
    assert _counts(stats) == (0, 0) and int(stats["execution_count"]) == 2
    assert "appliance_cache_bytes" not in _metrics(server)
    assert "response_cache is enabled but the server has no cache (--cache-config)" in server.log()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_no_hit_across_versions_or_after_a_swap(server_factory, cache_repo, tmp_path, transport):
    repo = tmp_path / "repo"
    shutil.copytree(cache_repo, repo)
    server = server_factory(repo, "--cache-config", "local,size=1048576", "--model-control-mode", "explicit")
    client = server.http() if transport == "http" else server.grpc()
    client.load_model("add")
    x = np.array([[1.0, 2.0]], np.float32)
    assert _infer(server, transport, "add", "x", x, version="1").tolist() == [[2.0, 3.0]]
    assert _infer(server, transport, "add", "x", x, version="2").tolist() == [[3.0, 4.0]]
    assert _infer(server, transport, "add", "x", x, version="1").tolist() == [[2.0, 3.0]]  # a hit
    assert _counts(_stats(server, transport, "add", "1")) == (1, 1)
    assert _counts(_stats(server, transport, "add", "2")) == (0, 1)

    (repo / "add" / "1" / "model.onnx").write_bytes(models.add_model(10.0))  # same version, changed file
    client.load_model("add")
    assert _infer(server, transport, "add", "x", x, version="1").tolist() == [[11.0, 12.0]]
    assert _counts(_stats(server, transport, "add", "1")) == (0, 1)  # the new version's statistics
    assert _infer(server, transport, "add", "x", x, version="1").tolist() == [[11.0, 12.0]]
    assert _counts(_stats(server, transport, "add", "1")) == (1, 1)


def test_eviction_keeps_the_budget(server_factory, cache_repo):
    budget = 700  # an 'add' response ([1, 2] FP32) costs 232 bytes with its key and overhead: three fit
    server = server_factory(cache_repo, "--cache-config", f"local,size={budget}")
    xs = [np.array([[float(i), 0.0]], np.float32) for i in range(10)]
    for i, x in enumerate(xs):
        _infer(server, "http" if i % 2 else "grpc", "add", "x", x, version="1")
    metrics = _metrics(server)
    assert metrics["appliance_cache_entries"] == 3
    assert metrics["appliance_cache_evictions_total"] == 7
    assert 0 < metrics["appliance_cache_bytes"] <= budget
    assert _infer(server, "http", "add", "x", xs[-1], version="1").tolist() == [[10.0, 1.0]]  # the newest: a hit
    assert _infer(server, "http", "add", "x", xs[0], version="1").tolist() == [[1.0, 1.0]]  # the oldest: evicted
    assert _counts(_stats(server, "http", "add", "1")) == (1, 11)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_shared_memory_inputs_key_by_their_bytes_and_hits_fill_output_regions(server_factory, cache_repo, transport):
    server = server_factory(cache_repo, "--cache-config", "local,size=1048576")
    client, module = (server.http(), httpclient) if transport == "http" else (server.grpc(), grpcclient)
    tag = uuid.uuid4().hex[:8]
    made = [
        shm.create_shared_memory_region(f"{name}_{tag}", f"/appliance_test_{tag}_{name}", 64)
        for name in ("in", "out1", "out2")
    ]
    try:
        for name in ("in", "out1", "out2"):
            client.register_system_shared_memory(f"{name}_{tag}", f"/appliance_test_{tag}_{name}", 64)

        def infer(x: np.ndarray, out: str) -> np.ndarray:
            shm.set_shared_memory_region(made[0], [x])
            inp = module.InferInput("x", [1, 2], "FP32")
            inp.set_shared_memory(f"in_{tag}", x.nbytes)
            output = module.InferRequestedOutput("y")
            output.set_shared_memory(f"{out}_{tag}", 8)
            client.infer("add", [inp], model_version="1", outputs=[output])
            handle = made[1] if out == "out1" else made[2]
            return shm.get_contents_as_numpy(handle, np.float32, [1, 2])

        assert infer(np.array([[1.0, 2.0]], np.float32), "out1").tolist() == [[2.0, 3.0]]  # a miss
        assert infer(np.array([[1.0, 2.0]], np.float32), "out2").tolist() == [[2.0, 3.0]]  # a hit, other region
        assert infer(np.array([[5.0, 6.0]], np.float32), "out1").tolist() == [[6.0, 7.0]]  # new bytes: a miss
        assert _counts(_stats(server, transport, "add", "1")) == (1, 2)
    finally:
        client.unregister_system_shared_memory()
        for handle in made:
            shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("memcached,host=localhost", "unknown cache 'memcached'"),
        ("local", "needs its size in bytes"),
        ("local,size=", "size must be a positive number of bytes, got ''"),
        ("local,size=1MB", "size must be a positive number of bytes, got '1MB'"),
        ("local,size=0", "size must be a positive number of bytes, got '0'"),
        ("local,bytes=100", "unknown setting 'bytes=100'"),
    ],
)
def test_bad_cache_config_is_a_clear_cli_error(tmp_path, value, says):
    result = subprocess.run(
        serve_command(tmp_path, "--cache-config", value), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--cache-config '{value}'" in result.stderr and says in result.stderr


def test_cache_config_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_CACHE_CONFIG", "local,size=4096")
    assert load_settings().response_cache() == LocalCacheConfig(4096)
    monkeypatch.setenv("APPLIANCE_CACHE_CONFIG", "local,size=-1")
    with pytest.raises(SettingsError, match="cache_config: --cache-config 'local,size=-1': size must be"):
        load_settings()


def test_help_names_the_flag():
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert "--cache-config local,size=BYTES|redis,host=HOST,port=PORT" in result.stdout
    assert "response_cache" in result.stdout


# -- in process -----------------------------------------------------------------------------------


def _out(value: float, n: int = 10) -> list[OutputTensor]:
    data = np.full((1, n), value, np.float32)
    return [OutputTensor("y", "FP32", data.shape, data)]


def _local(budget: int, steps: Callable[[LocalResponseCache], Coroutine[Any, Any, None]]) -> LocalResponseCache:
    """Run ``steps`` on a new local cache on an event loop (get and put are coroutines)."""
    cache = LocalResponseCache(budget)
    asyncio.run(steps(cache))
    return cache


def test_lru_keeps_the_budget_and_evicts_the_least_recently_used():
    async def steps(cache: LocalResponseCache) -> None:
        for key in (b"a", b"b", b"c"):
            await cache.put(key, _out(1.0))
        assert await cache.get(b"a") is not None  # a is now the most recent
        await cache.put(b"d", _out(2.0))
        assert await cache.get(b"b") is None
        assert await cache.get(b"a") is not None and await cache.get(b"d") is not None

    stats = _local(700, steps).statistics()
    assert (stats.entries, stats.evictions, stats.hits, stats.misses) == (3, 1, 3, 1)
    assert stats.bytes <= stats.budget == 700 and stats.available


def test_an_entry_larger_than_the_budget_is_not_kept():
    async def steps(cache: LocalResponseCache) -> None:
        await cache.put(b"small", _out(1.0))
        await cache.put(b"big", _out(1.0, n=1000))
        assert await cache.get(b"big") is None and await cache.get(b"small") is not None

    assert _local(700, steps).statistics().evictions == 0


def test_hits_are_new_read_only_tensors_over_copies():
    async def steps(cache: LocalResponseCache) -> None:
        original = _out(1.0)
        await cache.put(b"k", original)
        original[0].data[0, 0] = 99.0  # the caller's array stays its own
        first, second = await cache.get(b"k"), await cache.get(b"k")
        assert first is not None and second is not None
        assert first[0] is not second[0]
        assert first[0].data[0, 0] == 1.0
        assert not first[0].data.flags.writeable
        with pytest.raises(ValueError):
            first[0].data[0, 0] = 2.0

    _local(10_000, steps)


def test_bytes_outputs_are_counted_and_kept():
    data = np.array([[b"0.9:3:cat", b"0.1:1:dog"]], dtype=object)

    async def steps(cache: LocalResponseCache) -> None:
        await cache.put(b"k", [OutputTensor("c", "BYTES", data.shape, data)])
        hit = await cache.get(b"k")
        assert hit is not None and hit[0].data.tolist() == data.tolist()

    assert _local(10_000, steps).statistics().bytes >= data.nbytes + 18


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), ("local,size=1", LocalCacheConfig(1)), ("local,size=1048576", LocalCacheConfig(1048576))],
)
def test_parse_cache_config(text, expected):
    assert parse_cache_config(text) == expected

"""The response cache in Redis (``--cache-config redis,host=H,port=P``), against a real ``redis-server``: the
server over both transports with the real tritonclient (hits, versions, statistics, Redis killed, hung and back,
a planted value), and in process the RESP client, the stored format and the settings."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from appliance.core.cache_codec import MAGIC, MalformedEntry, decode_outputs, encode_outputs
from appliance.core.redis_cache import KEY_PREFIX, RedisResponseCache, parse_info
from appliance.core.resp import RedisConnection, RedisConnectionError, RedisError, read_reply
from appliance.core.types import OutputTensor
from appliance.settings import RedisCacheConfig, SettingsError, load_settings, parse_cache_config
from tests.support import models
from tests.support.appliance import ServerProcess, serve_command
from tests.support.cache import cache_counts, cache_metrics, image, infer, statistics, write_cache_repo
from tests.support.redis import RedisProcess


@pytest.fixture(scope="module")
def cache_repo(tmp_path_factory: pytest.TempPathFactory, demo_repo: Path) -> Path:
    return write_cache_repo(tmp_path_factory.mktemp("redis-cache") / "repo", demo_repo)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own (64 MiB, allkeys-lru, nothing saved); killed at the end."""
    process = RedisProcess(tmp_path / "redis.log").start()
    try:
        yield process
    finally:
        process.kill()


def _serve(server_factory: Any, repo: Path, redis: RedisProcess, *extra: str, timeout_ms: int = 1000) -> ServerProcess:
    """A server on ``redis``. The socket timeout is 1 s rather than the default 100 ms where a test counts hits
    exactly, so that a loaded machine's pause cannot turn a hit into a miss; the hung-Redis test uses 100 ms."""
    config = f"redis,host=127.0.0.1,port={redis.port},socket_timeout={timeout_ms}"
    server: ServerProcess = server_factory(repo, "--cache-config", config, *extra)
    return server


def _stored_keys(redis: RedisProcess) -> list[bytes]:
    keys = redis.call(b"KEYS", KEY_PREFIX + b"*")
    assert isinstance(keys, list)
    return [k for k in keys if isinstance(k, bytes)]


def _stored(redis: RedisProcess, key: bytes = b"", value: bytes = b"") -> bytes:
    """Wait until the appliance's insert has reached Redis (it does not wait for SET's reply, so another
    connection can get there first): the only key of ours, or ``key`` holding ``value``. Returns the key."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        keys = _stored_keys(redis)
        if (not key and len(keys) == 1) or (key and redis.call(b"GET", key) == value):
            return key or keys[0]
        time.sleep(0.01)
    raise AssertionError(f"nothing stored in Redis: keys {_stored_keys(redis)}")


# -- the server ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_hit_returns_the_bytes_of_the_miss_and_is_counted(server_factory, cache_repo, redis, transport):
    server = _serve(server_factory, cache_repo, redis)
    x = image(0)
    miss = infer(server, transport, "cnn", "image", x)
    hit = infer(server, transport, "cnn", "image", x)
    assert miss.tobytes() == hit.tobytes() and miss.dtype == hit.dtype and miss.shape == hit.shape == (1, 10)
    top3 = infer(server, transport, "cnn", "image", x, classification=3, output="probabilities")  # BYTES: a miss
    again = infer(server, transport, "cnn", "image", x, classification=3, output="probabilities")
    assert top3.tolist() == again.tolist() and top3.dtype == object
    stats = statistics(server, transport, "cnn")
    assert cache_counts(stats) == (2, 2)
    assert int(stats["inference_stats"]["success"]["count"]) == 4 and int(stats["execution_count"]) == 2
    (key, *others) = sorted(_stored_keys(redis))
    assert len(others) == 1 and len(key) == len(KEY_PREFIX) + 32  # the prefix and the sha256 digest
    metrics = cache_metrics(server)
    assert metrics['appliance_cache_hits_total{model="cnn",version="1"}'] == 2
    assert metrics['appliance_cache_misses_total{model="cnn",version="1"}'] == 2
    assert metrics["appliance_cache_available"] == 1
    assert metrics["appliance_cache_entries"] == 2  # Redis's own figures, read by INFO at the scrape
    assert metrics["appliance_cache_budget_bytes"] == redis.maxmemory
    assert 0 < metrics["appliance_cache_bytes"] <= redis.maxmemory
    assert metrics["appliance_cache_evictions_total"] == 0


def test_two_servers_share_the_cache(server_factory, cache_repo, redis):
    first, second = _serve(server_factory, cache_repo, redis), _serve(server_factory, cache_repo, redis)
    x = image(7)
    miss = infer(first, "grpc", "cnn", "image", x)
    _stored(redis)
    hit = infer(second, "http", "cnn", "image", x)
    assert miss.tobytes() == hit.tobytes()
    assert cache_counts(statistics(first, "grpc", "cnn")) == (0, 1)
    assert cache_counts(statistics(second, "http", "cnn")) == (1, 0)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_no_hit_across_versions_or_after_a_swap(server_factory, cache_repo, redis, tmp_path, transport):
    repo = tmp_path / "repo"
    shutil.copytree(cache_repo, repo)
    server = _serve(server_factory, repo, redis, "--model-control-mode", "explicit")
    client = server.http() if transport == "http" else server.grpc()
    client.load_model("add")
    x = np.array([[1.0, 2.0]], np.float32)
    assert infer(server, transport, "add", "x", x, version="1").tolist() == [[2.0, 3.0]]
    assert infer(server, transport, "add", "x", x, version="2").tolist() == [[3.0, 4.0]]
    assert infer(server, transport, "add", "x", x, version="1").tolist() == [[2.0, 3.0]]  # a hit
    assert cache_counts(statistics(server, transport, "add", "1")) == (1, 1)
    assert cache_counts(statistics(server, transport, "add", "2")) == (0, 1)

    (repo / "add" / "1" / "model.onnx").write_bytes(models.add_model(10.0))  # same version, changed file
    client.load_model("add")
    assert infer(server, transport, "add", "x", x, version="1").tolist() == [[11.0, 12.0]]
    assert cache_counts(statistics(server, transport, "add", "1")) == (0, 1)
    assert infer(server, transport, "add", "x", x, version="1").tolist() == [[11.0, 12.0]]
    assert cache_counts(statistics(server, transport, "add", "1")) == (1, 1)


def test_a_malformed_value_in_redis_is_a_miss(server_factory, cache_repo, redis):
    server = _serve(server_factory, cache_repo, redis)
    x = np.array([[3.0, 4.0]], np.float32)
    assert infer(server, "http", "add", "x", x, version="1").tolist() == [[4.0, 5.0]]
    key = _stored(redis)
    good = redis.call(b"GET", key)
    assert isinstance(good, bytes) and good.startswith(MAGIC)
    for planted in (b"not ours", good[:-1], MAGIC + b"\xff" * 16):
        redis.call(b"SET", key, planted)
        assert infer(server, "grpc", "add", "x", x, version="1").tolist() == [[4.0, 5.0]]  # run again
        _stored(redis, key, good)  # and stored again
    redis.call(b"DEL", key)
    redis.call(b"RPUSH", key, b"a list")  # a key of ours holding another type: GET fails with WRONGTYPE
    assert infer(server, "http", "add", "x", x, version="1").tolist() == [[4.0, 5.0]]
    _stored(redis, key, good)  # SET replaces a value of any type
    redis.call(b"DEL", key)
    assert infer(server, "http", "add", "x", x, version="1").tolist() == [[4.0, 5.0]]
    _stored(redis, key, good)
    assert infer(server, "http", "add", "x", x, version="1").tolist() == [[4.0, 5.0]]  # a hit
    assert cache_counts(statistics(server, "http", "add", "1")) == (1, 6)
    log = server.log()
    assert log.count("is not a stored response") == 1  # logged once
    assert "refused a GET" in log and "Traceback" not in log


def test_redis_killed_mid_run_costs_no_request_and_the_cache_comes_back(server_factory, cache_repo, redis):
    server = _serve(server_factory, cache_repo, redis)
    x = np.array([[1.0, 1.0]], np.float32)
    failures: list[BaseException] = []
    latencies: list[float] = []
    stop = threading.Event()

    def load(transport: str) -> None:
        client = server.http() if transport == "http" else server.grpc()
        try:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    infer(server, transport, "add", "x", x, version="1", client=client)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                    failures.append(exc)
                latencies.append(time.perf_counter() - start)
        finally:
            client.close()

    threads = [threading.Thread(target=load, args=(t,)) for t in ("http", "grpc", "http", "grpc")]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        redis.kill()
        time.sleep(1.5)
        down = cache_metrics(server)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(latencies) > 100 and max(latencies) < 1.0  # no request waited on the dead Redis
    assert down["appliance_cache_available"] == 0
    hits_while_down = cache_counts(statistics(server, "http", "add", "1"))
    assert "Redis at 127.0.0.1" in server.log() and "is unavailable" in server.log()

    redis.start()  # the same port, empty
    deadline = time.monotonic() + 10
    while cache_metrics(server)["appliance_cache_available"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cache_metrics(server)["appliance_cache_available"] == 1
    assert infer(server, "grpc", "add", "x", x, version="1").tolist() == [[2.0, 2.0]]  # a miss: Redis is empty
    assert infer(server, "http", "add", "x", x, version="1").tolist() == [[2.0, 2.0]]  # a hit again
    hits, misses = cache_counts(statistics(server, "http", "add", "1"))
    assert (hits, misses) == (hits_while_down[0] + 1, hits_while_down[1] + 1)
    assert "is back" in server.log()


def test_a_hung_redis_costs_a_request_at_most_the_socket_timeout(server_factory, cache_repo, redis):
    server = _serve(server_factory, cache_repo, redis, timeout_ms=100)  # the default
    x = np.array([[5.0, 5.0]], np.float32)
    infer(server, "http", "add", "x", x, version="1")
    redis.pause()  # connected, and nothing answers
    try:
        elapsed = []
        for transport in ("http", "grpc", "http", "grpc"):
            start = time.perf_counter()
            assert infer(server, transport, "add", "x", x, version="1").tolist() == [[6.0, 6.0]]
            elapsed.append(time.perf_counter() - start)
        assert max(elapsed) < 1.0  # the first waits for the 100 ms socket timeout, the rest not at all
        assert cache_metrics(server)["appliance_cache_available"] == 0
    finally:
        redis.resume()
    assert "no reply within 100 ms" in server.log()


def test_a_server_started_without_redis_serves_and_picks_it_up(server_factory, cache_repo, tmp_path):
    redis = RedisProcess(tmp_path / "late-redis.log")  # not started yet: nothing listens on its port
    server = _serve(server_factory, cache_repo, redis)
    x = np.array([[2.0, 0.0]], np.float32)
    try:
        for transport in ("http", "grpc"):
            start = time.perf_counter()
            assert infer(server, transport, "add", "x", x, version="1").tolist() == [[3.0, 1.0]]
            assert time.perf_counter() - start < 1.0
        assert cache_metrics(server)["appliance_cache_available"] == 0
        redis.start()
        deadline = time.monotonic() + 10
        while cache_metrics(server)["appliance_cache_available"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        for transport in ("http", "grpc"):
            assert infer(server, transport, "add", "x", x, version="1").tolist() == [[3.0, 1.0]]
        assert cache_counts(statistics(server, "http", "add", "1")) == (1, 3)
    finally:
        redis.kill()


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis,host=127.0.0.1,port=6379", RedisCacheConfig("127.0.0.1", 6379)),
        ("redis,host=cache.lan", RedisCacheConfig("cache.lan", 6379)),
        (
            "redis,host=h,port=7000,user=u,password=p=w,db=3,connect_timeout=50,socket_timeout=250",
            RedisCacheConfig("h", 7000, "u", "p=w", 3, 50, 250),
        ),
    ],
)
def test_parse_redis_cache_config(text, expected):
    assert parse_cache_config(text) == expected
    assert expected.password == "" or expected.password not in repr(parse_cache_config(text))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("redis", "the redis cache needs its host"),
        ("redis,host=", "the redis cache needs its host"),
        ("redis,port=6379", "the redis cache needs its host"),
        ("redis,host=h,port=", "port must be a port number from 1 to 65535, got ''"),
        ("redis,host=h,port=x", "port must be a port number from 1 to 65535, got 'x'"),
        ("redis,host=h,port=0", "port must be a port number from 1 to 65535, got '0'"),
        ("redis,host=h,port=65536", "port must be a port number from 1 to 65535, got '65536'"),
        ("redis,host=h,db=-1", "db must be a database number (0 or more), got '-1'"),
        ("redis,host=h,socket_timeout=0", "socket_timeout must be milliseconds from 1 to 60000, got '0'"),
        ("redis,host=h,connect_timeout=1s", "connect_timeout must be milliseconds from 1 to 60000, got '1s'"),
        ("redis,host=h,size=100", "unknown setting 'size=100' of the redis cache (it has host, port,"),
        ("redis,host=h,tls", "unknown setting 'tls' of the redis cache"),
        ("redis,host=h,host=i", "'host' is given twice"),
        ("redis,host=h,user=u", "user needs a password"),
    ],
)
def test_bad_redis_cache_config_is_a_clear_cli_error(tmp_path, value, says):
    result = subprocess.run(
        serve_command(tmp_path, "--cache-config", value), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--cache-config '{value}'" in result.stderr and says in result.stderr


def test_errors_do_not_show_the_password(tmp_path):
    value = "redis,host=h,password=s3cret,port=99999"
    result = subprocess.run(
        serve_command(tmp_path, "--cache-config", value), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "s3cret" not in result.stderr
    assert "--cache-config 'redis,host=h,password=***,port=99999': port must be" in result.stderr


def test_repeated_flags_join_as_in_triton(server_factory, cache_repo, redis, tmp_path):
    server: ServerProcess = server_factory(
        cache_repo, "--cache-config", "redis,host=127.0.0.1", "--cache-config", f"redis,port={redis.port}"
    )
    x = image(3)
    assert infer(server, "grpc", "cnn", "image", x).tobytes() == infer(server, "grpc", "cnn", "image", x).tobytes()
    assert cache_counts(statistics(server, "grpc", "cnn")) == (1, 1)
    mixed = subprocess.run(
        serve_command(tmp_path, "--cache-config", "local,size=10", "--cache-config", "redis,host=h"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert mixed.returncode == 2 and "--cache-config names one cache, got 'local', 'redis'" in mixed.stderr


def test_redis_cache_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("APPLIANCE_CACHE_CONFIG", "redis,host=10.0.0.5,port=6380,db=2")
    assert load_settings().response_cache() == RedisCacheConfig("10.0.0.5", 6380, db=2)
    monkeypatch.setenv("APPLIANCE_CACHE_CONFIG", "redis,host=10.0.0.5,port=http")
    with pytest.raises(SettingsError, match="cache_config: --cache-config 'redis,host=10.0.0.5,port=http': port"):
        load_settings()


# -- the stored format -------------------------------------------------------------------------------


def _tensor(name: str, datatype: str, array: np.ndarray) -> OutputTensor:
    return OutputTensor(name, datatype, array.shape, array)


ROUND_TRIPS = {
    "fp32": [_tensor("y", "FP32", np.arange(12, dtype=np.float32).reshape(3, 4))],
    "fp16 transposed": [_tensor("h", "FP16", np.arange(6, dtype=np.float16).reshape(2, 3).T)],
    "bool": [_tensor("b", "BOOL", np.array([[True, False, True]]))],
    "bytes": [_tensor("s", "BYTES", np.array([[b"0.9:3:cat", b"", b"\x00\r\n\xff"]], dtype=object))],
    "bytes from str": [_tensor("s", "BYTES", np.array(["caf\u00e9", "x"], dtype=object))],
    "scalar": [_tensor("s", "INT64", np.array(-7, dtype=np.int64))],
    "empty": [_tensor("e", "FP32", np.zeros((0, 4), np.float32)), _tensor("e2", "BYTES", np.empty((2, 0), object))],
    "every integer": [
        _tensor(t.lower(), t, np.array([0, 1, 2], dtype=d))
        for t, d in (("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64))
        + (("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32), ("FP64", np.float64))
    ],
    "no outputs": [],
    "unicode name": [_tensor("\u00e9t\u00e9", "FP32", np.ones(2, np.float32))],
}


@pytest.mark.parametrize("outputs", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_the_stored_format_round_trips(outputs):
    decoded = decode_outputs(encode_outputs(outputs))
    assert [(t.name, t.datatype, t.shape) for t in decoded] == [(t.name, t.datatype, t.shape) for t in outputs]
    for got, sent in zip(decoded, outputs):
        assert got.data.shape == sent.shape and not got.data.flags.writeable
        if sent.datatype == "BYTES":
            expected = [v if isinstance(v, bytes) else v.encode() for v in sent.data.flat]
            assert list(got.data.flat) == expected
        else:
            assert got.data.dtype == sent.data.dtype and got.data.tobytes() == np.ascontiguousarray(sent.data).tobytes()


def test_every_damaged_value_is_malformed_and_nothing_else():
    value = encode_outputs(ROUND_TRIPS["fp32"] + ROUND_TRIPS["bytes"] + ROUND_TRIPS["bool"])
    for end in range(len(value)):  # every truncation
        with pytest.raises(MalformedEntry):
            decode_outputs(value[:end])
    with pytest.raises(MalformedEntry, match="bytes after the last tensor"):
        decode_outputs(value + b"\x00")
    rng = np.random.default_rng(0)
    for _ in range(2000):  # random damage: a clean decode or MalformedEntry, never another exception
        damaged = bytearray(value)
        for at in rng.integers(0, len(value), size=int(rng.integers(1, 4))):
            damaged[at] = int(rng.integers(0, 256))
        try:
            decode_outputs(bytes(damaged))
        except MalformedEntry:
            pass


def _value(datatype: bytes, shape: tuple[int, ...], data: bytes, name: bytes = b"y") -> bytes:
    return (
        MAGIC
        + struct.pack("<I", 1)
        + struct.pack("<H", len(name))
        + name
        + struct.pack("<B", len(datatype))
        + datatype
        + struct.pack(f"<B{len(shape)}Q", len(shape), *shape)
        + struct.pack("<Q", len(data))
        + data
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"\x80\x04\x95pickle", "no APC1 magic"),
        (_value(b"FP32", (1, 2), b"\x00" * 8), None),  # well formed: decodes
        (_value(b"FP33", (1,), b"\x00" * 4), "unknown datatype"),
        (_value(b"FP32", (1, 3), b"\x00" * 8), "8 bytes for shape [1, 3] of FP32"),
        (_value(b"BOOL", (2,), b"\x01\x02"), "BOOL bytes other than 0 and 1"),
        (_value(b"FP32", (0, 2**63), b""), "tensor 'y'"),
        (_value(b"BYTES", (2**40,), b"\x00" * 8), "cannot hold"),
        (_value(b"FP32", (1,), b"\x00" * 4, name=b"\xff\xfe"), "not UTF-8"),
        (MAGIC + struct.pack("<I", 10**6), "1000000 tensors"),
    ],
)
def test_malformed_values_say_what_is_wrong(value, says):
    if says is None:
        assert decode_outputs(value)[0].data.tolist() == [[0.0, 0.0]]
    else:
        with pytest.raises(MalformedEntry, match=says.replace("[", r"\[").replace("]", r"\]")):
            decode_outputs(value)


# -- the RESP client ---------------------------------------------------------------------------------


def _parse(raw: bytes) -> Any:
    async def go() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_reply(reader)

    return asyncio.run(go())


def test_replies_are_parsed():
    assert _parse(b"+OK\r\n") == b"OK"
    assert _parse(b":-12\r\n") == -12
    assert _parse(b"$5\r\na\r\nbc\r\n") == b"a\r\nbc"
    assert _parse(b"$0\r\n\r\n") == b"" and _parse(b"$-1\r\n") is None and _parse(b"*-1\r\n") is None
    assert _parse(b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n") == [b"a", None, [1]]
    error = _parse(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(error, RedisError) and str(error) == "WRONGTYPE Operation against a key"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"+OK",
        b"?x\r\n",
        b":12a\r\n",
        b":--5\r\n",
        b":-\r\n",
        b"$99999999999999999999\r\n",
        b"$5\r\nabc\r\n",
        b"$3\r\nabcde",
        b"$-2\r\n",
        b"*2\r\n:1\r\n",
        b"*1\r\n-E\r\n",
    ],
)
def test_what_is_not_resp_ends_the_connection(raw):
    with pytest.raises(RedisConnectionError):
        _parse(raw)


def test_the_client_against_redis(redis):
    async def go() -> None:
        connection = await RedisConnection.open("127.0.0.1", redis.port, 1.0, 1.0)
        try:
            assert await connection.call(b"PING") == b"PONG"
            binary = bytes(range(256)) * 4
            assert await connection.call(b"SET", b"test:k", binary, b"PX", b"60000") == b"OK"
            assert await connection.call(b"GET", b"test:k") == binary
            assert await connection.call(b"GET", b"test:missing") is None
            with pytest.raises(RedisError, match="unknown command"):
                await connection.call(b"NOSUCHCOMMAND")
            assert await connection.call(b"MGET", b"test:k", b"test:missing") == [binary, None]  # still in step
            # Pipelined: every command written at once, each reply to its own command.
            sets = [connection.send(b"SET", b"test:%d" % i, b"%d" % i) for i in range(200)]
            gets = [connection.send(b"GET", b"test:%d" % i) for i in range(200)]
            assert await asyncio.gather(*sets) == [b"OK"] * 200
            assert await asyncio.gather(*gets) == [b"%d" % i for i in range(200)]
            info = await connection.call(b"INFO")
            assert isinstance(info, bytes)
            evictions, keys, used, budget = parse_info(info, 0)
            assert (evictions, keys, budget) == (0, 201, redis.maxmemory) and used > 0
        finally:
            connection.close()
        with pytest.raises(RedisConnectionError, match="closed by the appliance"):
            await connection.send(b"PING")

    asyncio.run(go())


def test_a_killed_redis_fails_what_waits_on_it(redis):
    async def go() -> None:
        connection = await RedisConnection.open("127.0.0.1", redis.port, 1.0, 5.0)
        assert await connection.call(b"PING") == b"PONG"
        redis.kill()
        with pytest.raises(RedisConnectionError):
            await connection.call(b"PING")
        assert connection.closed
        with pytest.raises(OSError):
            await RedisConnection.open("127.0.0.1", redis.port, 0.1, 0.1)

    asyncio.run(go())


def test_a_command_on_a_connection_reset_under_it_fails_its_future_and_raises_nothing(redis):
    async def go() -> None:
        connection = await RedisConnection.open("127.0.0.1", redis.port, 1.0, 1.0)
        connection._writer.transport.abort()  # a reset: uvloop closes the handle at once,
        await asyncio.sleep(0)  # and the reader has not seen the end yet
        future = connection.send(b"GET", b"k")  # no exception here (uvloop's write raises one)
        with pytest.raises(RedisConnectionError):
            await future
        assert connection.closed

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the server's loop
        runner.run(go())


def test_the_cache_in_process(redis):
    async def go() -> None:
        cache = RedisResponseCache(RedisCacheConfig("127.0.0.1", redis.port), reconnect_interval_s=0.05)
        await cache.start()
        outputs = ROUND_TRIPS["bytes"] + ROUND_TRIPS["fp16 transposed"]
        assert await cache.get(b"k" * 32) is None
        await cache.put(b"k" * 32, outputs)
        hit = await cache.get(b"k" * 32)  # sent after the SET on the same connection: sees it
        assert hit is not None and [t.name for t in hit] == ["s", "h"]
        assert hit[1].data.tolist() == outputs[1].data.tolist()
        assert (cache.statistics().hits, cache.statistics().misses, cache.available) == (1, 1, True)
        redis.kill()
        start = time.perf_counter()
        for _ in range(100):
            assert await cache.get(b"k" * 32) is None
            await cache.put(b"k" * 32, outputs)
        assert time.perf_counter() - start < 1.0 and not cache.available
        await asyncio.to_thread(redis.start)  # it waits for PING with an event loop of its own
        for _ in range(100):
            if cache.available:
                break
            await asyncio.sleep(0.05)
        assert cache.available
        await cache.put(b"k" * 32, outputs)
        assert await cache.get(b"k" * 32) is not None
        await cache.close()

    asyncio.run(go())

"""Closed-loop load of batch-N requests (N = ``batch_size``, default 1) from ``tritonclient``; run in its
own process by ``serving.py``.

Usage (one point, a JSON spec as the only argument)::

    python benchmarks/loadgen.py '{"transport": "grpc", "url": "127.0.0.1:8001", "model": "mlp",
                                   "concurrency": 64, "duration_s": 10, "warmup_s": 2}'

It loads the model's metadata, makes one random request of ``batch_size`` samples (the first dimension of
each input whose metadata shape starts with -1; other -1 dimensions are 1), then keeps ``concurrency``
requests in flight (each worker sends its next request as soon as its last one answers). The load runs for
``warmup_s`` first, then it prints ``START`` and, ``duration_s`` later, ``STOP`` on stdout at the exact
edges of the measured window (so the parent can sample CPU of both processes there), and finally one line
``RESULT {json}`` with the requests completed inside the window. Latency is from just before the client
call to just after it returns, so it includes the client's own encode/decode.

Client modes (``mode``): gRPC ``aio`` (tritonclient.grpc.aio, one channel; default) or ``threads`` (one sync
client per thread); HTTP ``gevent`` (tritonclient.http, one greenlet per in-flight request over a shared
connection pool; default), ``threads`` (one sync client per thread) or ``aio`` (tritonclient.http.aio).
HTTP tensors go as binary data (Triton's binary tensor extension), inputs and outputs.

This file imports nothing from the benchmarks package, so it runs as a plain script.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
TensorSpec = tuple[str, str, list[int], Array]  # name, datatype, shape, data

DEFAULT_MODES = {"grpc": "aio", "http": "gevent"}


@dataclass
class Spec:
    transport: str  # "grpc" or "http"
    url: str  # host:port
    model: str
    concurrency: int = 1
    duration_s: float = 10.0
    warmup_s: float = 2.0
    mode: str = ""  # see DEFAULT_MODES
    seed: int = 0
    batch_size: int = 1  # samples a request: the first dimension of batched inputs (-1 in the metadata)


@dataclass
class Window:
    """The measured window and what completed in it (shared by all workers of one process)."""

    start: float = float("inf")
    stop: float = float("inf")
    stopping: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def record(self, began: float, ended: float) -> None:
        if self.start <= ended <= self.stop:
            self.latencies.append(ended - began)

    def error(self, ended: float, exc: BaseException) -> None:
        if self.start <= ended <= self.stop:
            self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:500]


def _signal(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def _inputs_from_metadata(metadata: dict[str, Any], seed: int, batch_size: int = 1) -> list[TensorSpec]:
    """(name, datatype, shape, data) of a ``batch_size`` request for each input in the model metadata.

    A leading -1 (the batch dimension of a model with ``max_batch_size`` > 0) becomes ``batch_size``; any
    other -1 becomes 1.
    """
    from tritonclient.utils import triton_to_np_dtype

    rng = np.random.default_rng(seed)
    result = []
    for item in metadata["inputs"]:
        dims = [int(d) for d in item["shape"]]
        shape = [(batch_size if i == 0 else 1) if d < 0 else d for i, d in enumerate(dims)]
        dtype = triton_to_np_dtype(item["datatype"])
        if dtype == np.object_:
            data = np.array([b"x"] * int(np.prod(shape)), dtype=np.object_).reshape(shape)
        elif np.issubdtype(dtype, np.floating):
            data = rng.random(shape).astype(dtype)
        else:
            data = np.ones(shape, dtype=dtype)
        result.append((item["name"], item["datatype"], shape, data))
    return result


def _grpc_metadata(url: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        metadata: dict[str, Any] = client.get_model_metadata(model, as_json=True)
        return metadata
    finally:
        client.close()


def _http_metadata(url: str, model: str) -> dict[str, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        metadata: dict[str, Any] = client.get_model_metadata(model)
        return metadata
    finally:
        client.close()


def _run_grpc_aio(spec: Spec, window: Window) -> None:
    import asyncio

    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    specs = _inputs_from_metadata(_grpc_metadata(spec.url, spec.model), spec.seed, spec.batch_size)

    async def main() -> None:
        client = aioclient.InferenceServerClient(spec.url)
        inputs = []
        for name, datatype, shape, data in specs:
            tensor = grpcclient.InferInput(name, shape, datatype)
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)

        async def worker() -> None:
            clock = time.perf_counter
            while not window.stopping:
                began = clock()
                try:
                    await client.infer(spec.model, inputs)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    window.error(clock(), exc)
                    await asyncio.sleep(0.001)
                    continue
                window.record(began, clock())

        tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
        await _timeline_async(spec, window)
        await asyncio.gather(*tasks)
        await client.close()

    asyncio.run(main())


async def _timeline_async(spec: Spec, window: Window) -> None:
    import asyncio

    await asyncio.sleep(spec.warmup_s)
    window.start = time.perf_counter()
    _signal("START")
    await asyncio.sleep(spec.duration_s)
    window.stop = time.perf_counter()
    _signal("STOP")
    window.stopping = True


def _timeline_blocking(spec: Spec, window: Window, sleep: Callable[[float], None]) -> None:
    sleep(spec.warmup_s)
    window.start = time.perf_counter()
    _signal("START")
    sleep(spec.duration_s)
    window.stop = time.perf_counter()
    _signal("STOP")
    window.stopping = True


def _blocking_loop(call: Callable[[], object], window: Window, pause: Callable[[float], None]) -> None:
    clock = time.perf_counter
    while not window.stopping:
        began = clock()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            window.error(clock(), exc)
            pause(0.001)
            continue
        window.record(began, clock())


def _http_request(specs: list[TensorSpec], outputs: list[str]) -> tuple[list[Any], list[Any]]:
    import tritonclient.http as httpclient

    inputs = []
    for name, datatype, shape, data in specs:
        tensor = httpclient.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data, binary_data=True)
        inputs.append(tensor)
    requested = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs]
    return inputs, requested


def _run_http_gevent(spec: Spec, window: Window) -> None:
    import gevent
    import tritonclient.http as httpclient

    metadata = _http_metadata(spec.url, spec.model)
    specs = _inputs_from_metadata(metadata, spec.seed, spec.batch_size)
    inputs, outputs = _http_request(specs, [o["name"] for o in metadata["outputs"]])
    client = httpclient.InferenceServerClient(
        spec.url, concurrency=spec.concurrency, connection_timeout=60.0, network_timeout=60.0
    )

    def call() -> object:
        return client.infer(spec.model, inputs, outputs=outputs)

    greenlets = [gevent.spawn(_blocking_loop, call, window, gevent.sleep) for _ in range(spec.concurrency)]
    _timeline_blocking(spec, window, gevent.sleep)
    gevent.joinall(greenlets)
    client.close()


def _run_threads(spec: Spec, window: Window) -> None:
    threads = []
    clients: list[Any] = []
    for index in range(spec.concurrency):
        if spec.transport == "grpc":
            import tritonclient.grpc as grpcclient

            g = grpcclient.InferenceServerClient(spec.url)
            metadata = _grpc_metadata(spec.url, spec.model)
            specs = _inputs_from_metadata(metadata, spec.seed + index, spec.batch_size)
            g_inputs = []
            for name, datatype, shape, data in specs:
                tensor = grpcclient.InferInput(name, shape, datatype)
                tensor.set_data_from_numpy(data)
                g_inputs.append(tensor)
            clients.append(g)
            call: Callable[[], object] = functools.partial(g.infer, spec.model, g_inputs)
        else:
            import tritonclient.http as httpclient

            metadata = _http_metadata(spec.url, spec.model)
            h_inputs, h_outputs = _http_request(
                _inputs_from_metadata(metadata, spec.seed + index, spec.batch_size),
                [o["name"] for o in metadata["outputs"]],
            )
            h = httpclient.InferenceServerClient(spec.url, connection_timeout=60.0, network_timeout=60.0)
            clients.append(h)
            call = functools.partial(h.infer, spec.model, h_inputs, outputs=h_outputs)
        threads.append(threading.Thread(target=_blocking_loop, args=(call, window, time.sleep), daemon=True))
    for thread in threads:
        thread.start()
    _timeline_blocking(spec, window, time.sleep)
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()


def _run_http_aio(spec: Spec, window: Window) -> None:
    import asyncio

    import tritonclient.http as httpclient
    import tritonclient.http.aio as aioclient

    metadata = _http_metadata(spec.url, spec.model)
    specs = _inputs_from_metadata(metadata, spec.seed, spec.batch_size)

    async def main() -> None:
        client = aioclient.InferenceServerClient(spec.url, conn_limit=spec.concurrency)
        inputs = []
        for name, datatype, shape, data in specs:
            tensor = httpclient.InferInput(name, shape, datatype)
            tensor.set_data_from_numpy(data, binary_data=True)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=True) for o in metadata["outputs"]]

        async def worker() -> None:
            clock = time.perf_counter
            while not window.stopping:
                began = clock()
                try:
                    await client.infer(spec.model, inputs, outputs=outputs)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    window.error(clock(), exc)
                    await asyncio.sleep(0.001)
                    continue
                window.record(began, clock())

        tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
        await _timeline_async(spec, window)
        await asyncio.gather(*tasks)
        await client.close()

    asyncio.run(main())


RUNNERS: dict[tuple[str, str], Callable[[Spec, Window], None]] = {
    ("grpc", "aio"): _run_grpc_aio,
    ("grpc", "threads"): _run_threads,
    ("http", "gevent"): _run_http_gevent,
    ("http", "threads"): _run_threads,
    ("http", "aio"): _run_http_aio,
}


def summarize(window: Window, duration_s: float) -> dict[str, Any]:
    """req/s and latency percentiles (ms) of the requests completed in the window."""
    lat = np.asarray(window.latencies, dtype=np.float64) * 1e3
    elapsed = window.stop - window.start if window.stop != float("inf") else duration_s
    result: dict[str, Any] = {
        "requests": int(lat.size),
        "errors": window.errors,
        "first_error": window.first_error,
        "elapsed_s": elapsed,
        "rps": lat.size / elapsed if elapsed > 0 else 0.0,
    }
    if lat.size:
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        result.update(
            p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), mean_ms=float(lat.mean()), max_ms=float(lat.max())
        )
    else:
        result.update(p50_ms=None, p95_ms=None, p99_ms=None, mean_ms=None, max_ms=None)
    return result


def run(spec: Spec) -> dict[str, Any]:
    """Run one point (prints START/STOP at the window edges) and return its summary."""
    mode = spec.mode or DEFAULT_MODES[spec.transport]
    runner = RUNNERS.get((spec.transport, mode))
    if runner is None:
        raise SystemExit(f"unknown client {spec.transport}/{mode}; known: {sorted(RUNNERS)}")
    spec.mode = mode
    window = Window()
    runner(spec, window)
    summary = summarize(window, spec.duration_s)
    summary["samples_per_s"] = summary["rps"] * spec.batch_size
    return {"spec": asdict(spec), **summary}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    result = run(Spec(**json.loads(args[0])))
    _signal("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

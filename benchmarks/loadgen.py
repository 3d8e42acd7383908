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

Transports (``transport``): ``grpc``; ``http`` (REST, tensors as binary data: Triton's binary tensor
extension, inputs and outputs); ``json`` (REST, tensors as JSON: for servers without the binary extension,
such as MLServer); ``shm`` (gRPC with system shared memory: each in-flight request slot has one input and
one output region, written and registered once before the load starts and unregistered at the end; the
requests carry only region names, as with Triton's perf_analyzer ``--shared-memory system``).

Client modes (``mode``): gRPC and shm ``aio`` (tritonclient.grpc.aio, one channel; default), gRPC also
``threads`` (one sync client per thread); HTTP and JSON ``gevent`` (tritonclient.http, one greenlet per
in-flight request over a shared connection pool; default), HTTP also ``threads`` (one sync client per thread)
or ``aio`` (tritonclient.http.aio).

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

DEFAULT_MODES = {"grpc": "aio", "http": "gevent", "json": "gevent", "shm": "aio"}
SHM_EXTENSION = "system_shared_memory"  # in the server metadata's extensions when it takes shm regions


@dataclass
class Spec:
    transport: str  # "grpc", "http", "json" or "shm"
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


def _grpc_inputs(specs: list[TensorSpec]) -> list[Any]:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, datatype, shape, data in specs:
        tensor = grpcclient.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def _grpc_aio_load(spec: Spec, window: Window, slots: list[tuple[list[Any], list[Any] | None]]) -> None:
    """One grpc.aio channel; worker ``i`` sends ``slots[i % len(slots)]`` (inputs, requested outputs)."""
    import asyncio

    import tritonclient.grpc.aio as aioclient

    async def main() -> None:
        client = aioclient.InferenceServerClient(spec.url)

        async def worker(inputs: list[Any], outputs: list[Any] | None) -> None:
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

        tasks = [asyncio.create_task(worker(*slots[i % len(slots)])) for i in range(spec.concurrency)]
        await _timeline_async(spec, window)
        await asyncio.gather(*tasks)
        await client.close()

    asyncio.run(main())


def _run_grpc_aio(spec: Spec, window: Window) -> None:
    specs = _inputs_from_metadata(_grpc_metadata(spec.url, spec.model), spec.seed, spec.batch_size)
    _grpc_aio_load(spec, window, [(_grpc_inputs(specs), None)])


def _tensor_bytes(datatype: str, shape: list[int]) -> int:
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype)
    if dtype is None or dtype == np.object_:
        raise SystemExit(f"shm: {datatype} tensors have no fixed size; use the grpc transport for this model")
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _run_grpc_shm(spec: Spec, window: Window) -> None:
    """gRPC with system shared memory: one input and one output region per in-flight request slot."""
    import os

    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    client = grpcclient.InferenceServerClient(spec.url)
    handles: list[Any] = []
    registered: list[str] = []
    try:
        extensions = client.get_server_metadata(as_json=True).get("extensions", [])
        if SHM_EXTENSION not in extensions:
            raise SystemExit(f"shm: the server does not announce {SHM_EXTENSION} (extensions: {extensions})")
        metadata: dict[str, Any] = client.get_model_metadata(spec.model, as_json=True)
        specs = _inputs_from_metadata(metadata, spec.seed, spec.batch_size)
        outputs = [
            (o["name"], o["datatype"], [spec.batch_size if int(d) < 0 else int(d) for d in o["shape"]])
            for o in metadata["outputs"]
        ]
        in_size = sum(data.nbytes for _, _, _, data in specs)
        out_size = sum(_tensor_bytes(datatype, shape) for _, datatype, shape in outputs)
        slots: list[tuple[list[Any], list[Any] | None]] = []
        for slot in range(spec.concurrency):
            in_name, out_name = f"bench-{os.getpid()}-{slot}-in", f"bench-{os.getpid()}-{slot}-out"
            in_region = shm.create_shared_memory_region(in_name, "/" + in_name, in_size, create_only=True)
            handles.append(in_region)
            out_region = shm.create_shared_memory_region(out_name, "/" + out_name, out_size, create_only=True)
            handles.append(out_region)
            inputs, offset = [], 0
            for name, datatype, shape, data in specs:
                shm.set_shared_memory_region(in_region, [data], offset)
                tensor = grpcclient.InferInput(name, shape, datatype)
                tensor.set_shared_memory(in_name, data.nbytes, offset)
                inputs.append(tensor)
                offset += data.nbytes
            requested, offset = [], 0
            for name, datatype, shape in outputs:
                size = _tensor_bytes(datatype, shape)
                output = grpcclient.InferRequestedOutput(name)
                output.set_shared_memory(out_name, size, offset)
                requested.append(output)
                offset += size
            for name, size in ((in_name, in_size), (out_name, out_size)):
                client.register_system_shared_memory(name, "/" + name, size)
                registered.append(name)
            slots.append((inputs, requested))
        _grpc_aio_load(spec, window, slots)
    finally:
        for name in registered:
            try:
                client.unregister_system_shared_memory(name)
            except Exception as exc:  # noqa: BLE001 - the regions are destroyed below anyway
                print(f"shm: unregistering {name}: {exc}", file=sys.stderr)
        for handle in handles:
            shm.destroy_shared_memory_region(handle)
        client.close()


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


def _http_request(specs: list[TensorSpec], outputs: list[str], binary_data: bool = True) -> tuple[list[Any], list[Any]]:
    import tritonclient.http as httpclient

    inputs = []
    for name, datatype, shape, data in specs:
        tensor = httpclient.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data, binary_data=binary_data)
        inputs.append(tensor)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary_data) for name in outputs]
    return inputs, requested


def _run_http_gevent(spec: Spec, window: Window) -> None:
    import gevent
    import tritonclient.http as httpclient

    metadata = _http_metadata(spec.url, spec.model)
    specs = _inputs_from_metadata(metadata, spec.seed, spec.batch_size)
    inputs, outputs = _http_request(specs, [o["name"] for o in metadata["outputs"]], spec.transport != "json")
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
            g_inputs = _grpc_inputs(_inputs_from_metadata(metadata, spec.seed + index, spec.batch_size))
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
    ("json", "gevent"): _run_http_gevent,
    ("shm", "aio"): _run_grpc_shm,
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

"""Latency of response cache hits against misses and against the same model without the cache.

Serves the demo models twice over (``mlp`` and ``cnn`` with ``response_cache { enable: true }``, ``mlp_plain``
and ``cnn_plain`` without) on one ``appliance serve --cache-config local,size=...``, and sends batch-1 requests
one at a time with the real tritonclient: ``miss`` gives every request new input (each is looked up, run and
kept), ``hit`` repeats one input (answered from the cache), ``plain`` repeats it on the model without a cache.
Prints p50 / p99 / mean in microseconds, client side, and the server's cache statistics.

With ``--cache redis`` the cache is a ``redis-server`` started for the run (loopback, a free port, nothing saved;
it must be installed) or the one ``--redis HOST:PORT`` names: a hit then costs a round trip to Redis and the
decoding of the stored value, a miss a lookup that finds nothing and a ``SET`` not waited for.

    python benchmarks/response_cache.py                        # gRPC and REST, 1,000 requests a point
    python benchmarks/response_cache.py --transports grpc --count 5000
    python benchmarks/response_cache.py --cache redis
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

if __package__ in (None, ""):  # run as `python benchmarks/response_cache.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.servers import running_appliance

SHAPES = {"mlp": ("input", (1, 64)), "cnn": ("image", (1, 3, 64, 64))}


def prepare(root: Path) -> Path:
    from appliance.demo import write_demo_repository

    repo = root / "repo"
    write_demo_repository(repo)
    for model in SHAPES:
        plain = repo / f"{model}_plain"
        shutil.copytree(repo / model, plain)
        config = plain / "config.pbtxt"
        config.write_text(config.read_text().replace(f'name: "{model}"', f'name: "{model}_plain"'))
        with (repo / model / "config.pbtxt").open("a") as f:
            f.write("\nresponse_cache { enable: true }\n")
    return repo


def sender(transport: str, url: str, model: str) -> Callable[[np.ndarray], Any]:
    name = SHAPES[model.removesuffix("_plain")][0]
    module: Any = grpcclient if transport == "grpc" else httpclient
    client = module.InferenceServerClient(url)

    def send(x: np.ndarray) -> Any:
        inp = module.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, **({} if transport == "grpc" else {"binary_data": True}))
        return client.infer(model, [inp])

    return send


def timed(send: Callable[[np.ndarray], Any], inputs: list[np.ndarray]) -> np.ndarray:
    for x in inputs[:20]:  # warm-up (connections, first-call costs); fresh inputs are new keys anyway
        send(x + 1000.0)
    times = []
    for x in inputs:
        start = time.perf_counter()
        send(x)
        times.append(time.perf_counter() - start)
    return np.array(times) * 1e6


@contextlib.contextmanager
def cache_flags(kind: str, redis: str, size: int, workdir: Path) -> Iterator[list[str]]:
    """The ``--cache-config`` of the run; for ``redis`` without an address, a redis-server of its own."""
    if kind == "local":
        yield ["--cache-config", f"local,size={size}"]
        return
    if redis:
        host, _, port = redis.rpartition(":")
        yield ["--cache-config", f"redis,host={host},port={port}"]
        return
    from appliance.reference_triton import free_ports

    (port_number,) = free_ports(1, "127.0.0.1")
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port_number), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--maxmemory", str(size), "--maxmemory-policy", "allkeys-lru"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(0.3)  # the appliance connects at start and keeps trying every second if this was too soon
        yield ["--cache-config", f"redis,host=127.0.0.1,port={port_number}"]
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--count", type=int, default=1000, help="requests a point")
    parser.add_argument("--cache-bytes", type=int, default=256 * 1024 * 1024, help="local size or Redis maxmemory")
    parser.add_argument("--cache", choices=["local", "redis"], default="local")
    parser.add_argument("--redis", default="", metavar="HOST:PORT", help="a running Redis (default: start one)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare(Path(tmp))
        with (
            cache_flags(args.cache, args.redis, args.cache_bytes, Path(tmp) / "redis") as flags,
            running_appliance(repo, Path(tmp) / "work", flags) as s,
        ):
            print(f"cache: {args.cache}")
            print(f"{'model':6} {'transport':9} {'point':6} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
            for model in args.models.split(","):
                shape = SHAPES[model][1]
                for transport in args.transports.split(","):
                    url = s.url(transport)
                    fresh = [rng.random(shape, dtype=np.float32) for _ in range(args.count)]
                    same = [fresh[0]] * args.count
                    points = {
                        "miss": timed(sender(transport, url, model), fresh),
                        "hit": timed(sender(transport, url, model), same),
                        "plain": timed(sender(transport, url, f"{model}_plain"), same),
                    }
                    for point, us in points.items():
                        p50, p99 = np.percentile(us, [50, 99])
                        print(f"{model:6} {transport:9} {point:6} {p50:8.0f} {p99:8.0f} {us.mean():8.0f}")
            stats = httpclient.InferenceServerClient(s.http_url).get_inference_statistics()
            for m in stats["model_stats"]:
                if not m["name"].endswith("_plain"):
                    inference = m["inference_stats"]
                    hit, miss = inference["cache_hit"], inference["cache_miss"]
                    print(
                        f"{m['name']}: cache_hit {hit['count']} ({hit['ns'] / max(1, hit['count']) / 1000:.1f} us "
                        f"lookup), cache_miss {miss['count']} ({miss['ns'] / max(1, miss['count']) / 1000:.1f} us "
                        f"lookup + insert), executions {m['execution_count']}"
                    )


if __name__ == "__main__":
    main()

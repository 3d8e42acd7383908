"""Latency of response cache hits against misses and against the same model without the cache.

Serves the demo models twice over (``mlp`` and ``cnn`` with ``response_cache { enable: true }``, ``mlp_plain``
and ``cnn_plain`` without) on one ``appliance serve --cache-config local,size=...``, and sends batch-1 requests
one at a time with the real tritonclient: ``miss`` gives every request new input (each is looked up, run and
kept), ``hit`` repeats one input (answered from the cache), ``plain`` repeats it on the model without a cache.
Prints p50 / p99 / mean in microseconds, client side, and the server's cache statistics.

    python benchmarks/response_cache.py                        # gRPC and REST, 1,000 requests a point
    python benchmarks/response_cache.py --transports grpc --count 5000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--count", type=int, default=1000, help="requests a point")
    parser.add_argument("--cache-bytes", type=int, default=256 * 1024 * 1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare(Path(tmp))
        with running_appliance(repo, Path(tmp) / "work", ["--cache-config", f"local,size={args.cache_bytes}"]) as s:
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

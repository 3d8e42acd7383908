"""Image inference end to end over REST: 1080p camera JPEGs into a 224 x 224 classifier, requests and images per
second.

Serves the benchmark's ``image`` model (benchmarks/image_model.py: conv + global pool + dense, seeded weights)
declared for images (``image_postprocess: classification``, ImageNet mean and std) on one ``appliance serve``,
then runs closed-loop client threads (``httpx``) posting ``POST /v2/models/image/infer/image`` for ``--seconds``:
one JPEG per request (``Content-Type: image/jpeg``), then ``--batch`` JPEGs per request (multipart ``image``
fields). Prints requests/s, images/s, latency percentiles and the server's CPU milliseconds per image. The client
runs on the same machine and takes CPU from the server: on a 2-core machine the figures are a floor.

    python benchmarks/image_inference.py                      # 4 clients, 10 s per point, batch 4
    python benchmarks/image_inference.py --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.image_decode import camera_frame
from benchmarks.image_model import write_image_model
from benchmarks.servers import running_appliance, tree_cpu_seconds

PARAMETERS = {
    "image_postprocess": "classification",
    "image_mean": "0.485,0.456,0.406",
    "image_std": "0.229,0.224,0.225",
    "image_top_k": "3",
}


def prepare(root: Path) -> Path:
    folder = write_image_model(root / "repo")
    config = folder / "config.pbtxt"
    config.write_text(
        config.read_text()
        + "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in PARAMETERS.items())
    )
    return root / "repo"


def point(base: str, clients: int, seconds: float, frames: list[bytes], batch: int) -> dict[str, float]:
    url = f"{base}/v2/models/image/infer/image"
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=60) as http:
            n = index
            while time.perf_counter() < stop:
                chosen = [frames[(n + i) % len(frames)] for i in range(batch)]
                n += batch
                start = time.perf_counter()
                if batch == 1:
                    answer = http.post(url, content=chosen[0], headers={"Content-Type": "image/jpeg"})
                else:
                    files = [("image", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(chosen)]
                    answer = http.post(url, files=files)
                elapsed = time.perf_counter() - start
                with lock:
                    if answer.status_code == 200 and len(answer.json()["results"]) == batch:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(ordered) / took,
        "images_per_s": len(ordered) * batch / took,
        "p50_ms": 1000 * statistics.median(ordered) if ordered else 0.0,
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered else 0.0,
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=4, help="JPEGs per multipart request in the second point")
    args = parser.parse_args()
    frames = [camera_frame(seed) for seed in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare(Path(tmp))
        with running_appliance(repo, Path(tmp) / "work") as server:
            base = f"http://{server.http_url}"
            assert server.process is not None
            pid = server.process.pid
            point(base, 1, 1.0, frames, 1)  # warm-up
            print(f"1920x1080 JPEG ({len(frames[0]) / 1024:.0f} KiB) -> image [3,224,224] FP32, {args.clients} clients")
            print(f"{'request':22s} {'req/s':>7s} {'images/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'cpu ms/img':>10s}")
            for batch in (1, args.batch):
                cpu = tree_cpu_seconds(pid)
                figures = point(base, args.clients, args.seconds, frames, batch)
                cpu = tree_cpu_seconds(pid) - cpu
                images = figures["images_per_s"] * args.seconds
                kind = "image/jpeg body" if batch == 1 else f"multipart, {batch} images"
                print(
                    f"{kind:22s} {figures['requests_per_s']:7.1f} {figures['images_per_s']:9.1f} "
                    f"{figures['p50_ms']:7.1f} {figures['p99_ms']:7.1f} {1000 * cpu / max(images, 1):10.1f}"
                    + (f"  ({figures['errors']:.0f} errors)" if figures["errors"] else "")
                )


if __name__ == "__main__":
    main()

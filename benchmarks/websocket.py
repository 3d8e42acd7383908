"""Streaming inference over one WebSocket against REST JSON with the same window of requests in flight.

Serves the demo models on one ``appliance serve`` and, for ``--rounds`` interleaved rounds, runs two points in
this process: ``rest``, the real tritonclient keeping ``--window`` requests in flight (``async_infer``,
JSON both ways), and ``ws``, one WebSocket on which ``--window`` requests are kept in flight
(each answer lets the next request go). Both send the same JSON body; prints req/s and latency percentiles of
each point and the medians.

    python benchmarks/websocket.py                          # mlp, window 16, 3 rounds of 5 s
    python benchmarks/websocket.py --model cnn --window 4 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

if __package__ in (None, ""):  # run as `python benchmarks/websocket.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.servers import running_appliance

INPUTS = {"mlp": ("input", [1, 64]), "cnn": ("image", [1, 3, 64, 64])}


def body(model: str) -> dict[str, object]:
    name, shape = INPUTS[model]
    data = np.random.default_rng(0).standard_normal(int(np.prod(shape))).astype(np.float32).tolist()
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}


def summary(latencies: list[float], seconds: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    return len(ordered) / seconds, ordered[len(ordered) // 2] * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


def rest_point(http_url: str, model: str, window: int, seconds: float) -> list[float]:
    """The real tritonclient (geventhttpclient) with ``window`` requests in flight (``async_infer``), JSON both
    ways (a Python client of httpx's makes the client the bottleneck: 100-200 req/s here)."""
    import tritonclient.http as httpclient

    name, shape = INPUTS[model]
    data = np.asarray(body(model)["inputs"][0]["data"], np.float32).reshape(shape)  # type: ignore[index]
    client = httpclient.InferenceServerClient(http_url, concurrency=window)
    inputs = [httpclient.InferInput(name, shape, "FP32")]
    inputs[0].set_data_from_numpy(data, binary_data=False)
    output = "logits" if model == "mlp" else "probabilities"
    outputs = [httpclient.InferRequestedOutput(output, binary_data=False)]
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    pending = []
    try:
        for _ in range(window):
            pending.append((time.perf_counter(), client.async_infer(model, inputs, outputs=outputs)))
        while pending:
            start, request = pending.pop(0)
            request.get_result()
            latencies.append(time.perf_counter() - start)
            if time.perf_counter() < end:
                pending.append((time.perf_counter(), client.async_infer(model, inputs, outputs=outputs)))
    finally:
        client.close()
    return latencies


async def ws_point(url: str, model: str, window: int, seconds: float) -> list[float]:
    doc = body(model)
    latencies: list[float] = []
    async with connect(url, compression=None, max_size=None) as ws:
        sent: dict[str, float] = {}
        end = time.perf_counter() + seconds
        count = 0

        async def send_one() -> None:
            nonlocal count
            count += 1
            sent[str(count)] = time.perf_counter()
            await ws.send(json.dumps({"id": str(count), **doc}))

        for _ in range(window):
            await send_one()
        while sent:
            answer = json.loads(await ws.recv())
            if "error" in answer:
                raise SystemExit(f"ws: {answer}")
            latencies.append(time.perf_counter() - sent.pop(answer["id"]))
            if time.perf_counter() < end:
                await send_one()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp", choices=sorted(INPUTS))
    parser.add_argument("--window", type=int, default=16, help="requests in flight (REST: concurrent clients)")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from appliance.demo import write_demo_repository

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_demo_repository(repo)
        with running_appliance(repo, Path(tmp) / "work") as server:
            url = f"ws://{server.http_url}/v2/models/{args.model}/infer/ws"
            rest_point(server.http_url, args.model, args.window, 1.0)  # warm-up
            asyncio.run(ws_point(url, args.model, args.window, 1.0))
            rps: dict[str, list[float]] = {"rest": [], "ws": []}
            print(f"{'point':5} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
            for round_ in range(args.rounds):
                for name in rps:
                    start = time.perf_counter()
                    if name == "rest":
                        latencies = rest_point(server.http_url, args.model, args.window, args.duration_s)
                    else:
                        latencies = asyncio.run(ws_point(url, args.model, args.window, args.duration_s))
                    rate, p50, p99 = summary(latencies, time.perf_counter() - start)
                    rps[name].append(rate)
                    print(f"{name:5} {round_ + 1:5} {rate:8.0f} {p50:7.2f} {p99:7.2f}")
            rest, ws = statistics.median(rps["rest"]), statistics.median(rps["ws"])
            print(
                f"\n{args.model}, window {args.window}: WebSocket {ws:.0f} req/s against REST JSON {rest:.0f} "
                f"(medians of {args.rounds}): {ws / rest:.2f}x"
            )


if __name__ == "__main__":
    main()

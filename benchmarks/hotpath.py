"""The appliance's own cost of one gRPC ``ModelInfer``, in process: no network, no grpc.aio, no client.

It runs the exact handler that grpc.aio calls (request bytes -> ``ModelInferRequest`` -> data plane ->
``ModelInferResponse`` bytes) on a demo repository, one request at a time on a uvloop event loop, and
prints microseconds per request, wall clock and CPU time of the process: the part of the serving path that
is ours, next to what grpc.aio itself costs (see ``grpc_floor.py``). Caches stay hot here, so a loaded
server spends more on the same code.

    python benchmarks/hotpath.py                      # mlp and cnn, 20,000 requests each
    python benchmarks/hotpath.py --models mlp --profile  # and the top functions under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb


def request_bytes(model: str, inputs: list[tuple[str, str, list[int]]]) -> bytes:
    """A batch-1 request as ``tritonclient.grpc`` builds it: raw contents, no requested outputs."""
    rng = np.random.default_rng(0)
    message = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape in inputs:
        tensor = message.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(shape)
        message.raw_input_contents.append(rng.random(shape).astype(np.float32).tobytes())
    return message.SerializeToString()


async def measure(repo: Path, models: list[str], count: int, profile: bool) -> None:
    from appliance.backends import factory_for
    from appliance.core.dataplane import DataPlane
    from appliance.grpc.service import handler_table
    from appliance.settings import Settings

    dataplane = DataPlane(Settings(model_repository=repo), factory_for)
    await dataplane.start()
    infer = handler_table(dataplane)["ModelInfer"]
    try:
        for model in models:
            meta = dataplane.model_metadata(model)
            shapes = [(i.name, i.datatype, [1, *i.shape[1:]]) for i in meta.inputs]
            data = request_bytes(model, shapes)

            async def one(data: bytes = data) -> bytes:
                request: Any = infer.request_deserializer(data)
                response = await infer.unary_unary(request, None)
                return infer.response_serializer(response)  # type: ignore[no-any-return]

            for _ in range(min(count, 2000)):
                await one()
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                await one()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if profiler:
                profiler.disable()
            print(
                f"{model}: {elapsed / count * 1e6:7.1f} us per request, {cpu / count * 1e6:7.1f} us of CPU "
                f"({count} requests, batch 1)"
            )
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    finally:
        await dataplane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="demo models to measure")
    parser.add_argument("--count", type=int, default=20000, help="requests per model")
    parser.add_argument("--profile", action="store_true", help="print the top functions under cProfile")
    args = parser.parse_args()
    import uvloop

    from appliance.demo import write_demo_repository

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_demo_repository(repo)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measure(repo, args.models.split(","), args.count, args.profile))


if __name__ == "__main__":
    main()

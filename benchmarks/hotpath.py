"""The appliance's own cost of one gRPC ``ModelInfer``, in process: no network, no grpc.aio, no client.

It runs the exact handler that grpc.aio calls (request bytes -> ``ModelInferRequest`` -> data plane ->
``ModelInferResponse`` bytes) on a demo repository, one request at a time on a uvloop event loop, and
prints microseconds per request, wall clock and CPU time of the process: the part of the serving path that
is ours, next to what grpc.aio itself costs (see ``grpc_floor.py``). Caches stay hot here, so a loaded
server spends more on the same code.

    python benchmarks/hotpath.py                      # mlp and cnn, 20,000 requests each
    python benchmarks/hotpath.py --models mlp --profile  # and the top functions under cProfile
    python benchmarks/hotpath.py --routes             # and through a route of one arm and one of two
    python benchmarks/hotpath.py --auth               # with --auth true and an infer key in the metadata
    python benchmarks/hotpath.py --tracing            # tracing on (spans made and exported to a sink that
                                                      # drops them), a traceparent in the metadata
    python benchmarks/hotpath.py --models image --shm  # the image model, inputs and outputs in system
                                                      # shared-memory regions (as `serving.py`'s shm transport)

With ``--routes``, each model is also called through ``<model>_route`` (one arm: the model) and ``<model>_ab``
(two arms, 50/50: the model and ``<model>_b``, a copy, with a sticky key no request sends), in interleaved
rounds, and the route's cost is printed as microseconds a request over calling the model itself.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

if __package__ in (None, ""):  # run as `python benchmarks/hotpath.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def request_bytes(model: str, inputs: list[tuple[str, str, list[int]]]) -> bytes:
    """A batch-1 request as ``tritonclient.grpc`` builds it: raw contents, no requested outputs."""
    rng = np.random.default_rng(0)
    message = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape in inputs:
        tensor = message.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(shape)
        message.raw_input_contents.append(rng.random(shape).astype(np.float32).tobytes())
    return message.SerializeToString()


def shared_memory_request(dataplane: Any, model: str, regions: list[Any]) -> bytes:
    """A batch-1 request with every input and output in a system shared-memory region of its own, registered
    with the data plane; ``regions`` collects the regions (``tritonclient.utils.shared_memory`` handles)."""
    import tritonclient.utils.shared_memory as shm

    from appliance.core import datatypes

    rng = np.random.default_rng(0)
    meta = dataplane.model_metadata(model)
    message = pb.ModelInferRequest(model_name=model)
    for spec, is_input in [(i, True) for i in meta.inputs] + [(o, False) for o in meta.outputs]:
        shape = [1, *spec.shape[1:]]
        size = int(np.prod(shape)) * datatypes.by_name(spec.datatype, spec.name).dtype.itemsize
        name = f"hotpath-{model}-{spec.name}"
        region = shm.create_shared_memory_region(name, f"/{name}", size)
        regions.append(region)
        dataplane.register_system_shared_memory(name, f"/{name}", 0, size, True)
        tensor = message.inputs.add(name=spec.name, datatype=spec.datatype) if is_input else message.outputs.add()
        if is_input:
            tensor.shape.extend(shape)
            shm.set_shared_memory_region(region, [rng.random(shape).astype(np.float32)])
        else:
            tensor.name = spec.name
        tensor.parameters["shared_memory_region"].string_param = name
        tensor.parameters["shared_memory_byte_size"].int64_param = size
    return message.SerializeToString()


class _Context:
    """What the handler reads of grpc's context: the metadata (an API key with ``--auth``) and a loopback peer."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


async def measure(
    repo: Path,
    models: list[str],
    count: int,
    profile: bool,
    routes: bool = False,
    auth: bool = False,
    tracing: bool = False,
    shared_memory: bool = False,
) -> dict[str, float]:
    """Print, and return by model, the CPU microseconds of one request through the handler."""
    from appliance.backends import factory_for
    from appliance.core.auth.keys import create_key
    from appliance.core.auth.roles import Role
    from appliance.core.dataplane import DataPlane
    from appliance.grpc.service import handler_table
    from appliance.settings import Settings

    settings = Settings(model_repository=repo)
    context = _Context()
    if auth:
        keys_file = repo.parent / "keys.json"
        key, _ = create_key(keys_file, Role.INFER, "bench")
        settings = Settings(model_repository=repo, auth=True, keys_file=keys_file)
        context = _Context((("authorization", f"Bearer {key}"),))
    dataplane = DataPlane(settings, factory_for)
    tracer = None
    if tracing:
        from appliance.tracing import setup

        tracer = dataplane.tracer = setup(exporter=_dropping_exporter())
        traceparent = ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        context = _Context((*context.invocation_metadata(), traceparent))
    await dataplane.start()
    infer = handler_table(dataplane)["ModelInfer"]
    cpu_us: dict[str, float] = {}
    regions: list[Any] = []
    try:
        for model in models:
            meta = dataplane.model_metadata(model)
            shapes = [(i.name, i.datatype, [1, *i.shape[1:]]) for i in meta.inputs]
            data = shared_memory_request(dataplane, model, regions) if shared_memory else request_bytes(model, shapes)

            async def one(data: bytes = data) -> bytes:
                request: Any = infer.request_deserializer(data)
                response = await infer.unary_unary(request, context)
                return infer.response_serializer(response)  # type: ignore[no-any-return]

            if routes:
                await _compare_routes(dataplane, model, shapes, infer, context, count)
                continue

            for _ in range(min(count, 2000)):
                await one()
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                await one()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            cpu_us[model] = cpu / count * 1e6
            if profiler:
                profiler.disable()
            print(
                f"{model}: {elapsed / count * 1e6:7.1f} us per request, {cpu / count * 1e6:7.1f} us of CPU "
                f"({count} requests, batch 1{', shared memory' if shared_memory else ''})"
            )
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    finally:
        await dataplane.stop()
        if tracer is not None:
            tracer.shutdown()
        if regions:
            import tritonclient.utils.shared_memory as shm

            for region in regions:
                shm.destroy_shared_memory_region(region)
    return cpu_us


def _dropping_exporter() -> Any:
    """A span exporter that drops what it gets: the cost of making and batching spans, not of sending them."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return Drop()


async def _compare_routes(
    dataplane: Any, model: str, shapes: Any, infer: Any, context: _Context, count: int, rounds: int = 5
) -> None:
    await dataplane.routes.declare(f"{model}_route", {"arms": [{"model": model, "weight": 1}]})
    arms = [{"model": model, "weight": 50}, {"model": f"{model}_b", "weight": 50}]
    await dataplane.routes.declare(f"{model}_ab", {"arms": arms, "sticky": "x-user"})
    cpu_us: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name in (model, f"{model}_route", f"{model}_ab"):
            data = request_bytes(name, shapes)
            per_round = max(count // rounds, 1)
            for _ in range(min(per_round, 500)):  # warm
                await infer.unary_unary(infer.request_deserializer(data), context)
            cpu = time.process_time()
            for _ in range(per_round):
                response = await infer.unary_unary(infer.request_deserializer(data), context)
                infer.response_serializer(response)
            cpu_us.setdefault(name, []).append((time.process_time() - cpu) / per_round * 1e6)
    plain = sorted(cpu_us[model])[rounds // 2]
    for name, values in cpu_us.items():
        median = sorted(values)[rounds // 2]
        extra = (
            "" if name == model else f", {median - plain:+5.1f} us over the model ({(median / plain - 1) * 100:+.1f}%)"
        )
        print(f"{name:10}: {median:6.1f} us of CPU a request (median of {rounds} rounds){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="models to measure: mlp, cnn (the demo's), image")
    parser.add_argument("--count", type=int, default=20000, help="requests per model")
    parser.add_argument("--profile", action="store_true", help="print the top functions under cProfile")
    parser.add_argument("--routes", action="store_true", help="also through a route of one arm and one of two")
    parser.add_argument("--auth", action="store_true", help="auth on, an infer key in each request's metadata")
    parser.add_argument("--tracing", action="store_true", help="tracing on, spans dropped by the exporter")
    parser.add_argument(
        "--shm", action="store_true", help="inputs and outputs in system shared-memory regions (not with --routes)"
    )
    args = parser.parse_args()
    if args.shm and args.routes:
        parser.error("--shm and --routes measure different things; give one")
    import uvloop

    from appliance.demo import write_demo_repository
    from benchmarks.image_model import write_image_model

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_demo_repository(repo)
        if "image" in args.models.split(","):
            write_image_model(repo)
        for model in args.models.split(",") if args.routes else []:  # the second arm of the A/B route
            shutil.copytree(repo / model, repo / f"{model}_b")
            config = repo / f"{model}_b" / "config.pbtxt"
            config.write_text(config.read_text().replace(f'name: "{model}"', f'name: "{model}_b"'))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(
                measure(
                    repo,
                    args.models.split(","),
                    args.count,
                    args.profile,
                    args.routes,
                    args.auth,
                    args.tracing,
                    args.shm,
                )
            )


if __name__ == "__main__":
    main()

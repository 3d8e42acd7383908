"""The floor of the Python gRPC stack: a grpc.aio server (on uvloop, as the appliance) that answers
``ModelMetadata`` and ``ModelInfer`` of the demo models with canned responses, doing no work at all.

Run under the same load as the appliance (``serving.py --targets grpc-floor``), it shows how many requests a
second grpc.aio itself can carry on this machine, before any decoding, scheduling or inference. With
``--work-us N`` each ModelInfer first spends N microseconds of CPU on the loop thread, as a server's own work
would (``benchmarks/limits.py`` sets N to the appliance's in-process cost of a request).

    python -m benchmarks.grpc_floor --model-repository DIR --port PORT [--work-us N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb


def canned_responses(repo: Path) -> tuple[dict[str, pb.ModelMetadataResponse], dict[str, pb.ModelInferResponse]]:
    """Metadata and a batch-1 response of the right shape for each model of a Triton-layout repository."""
    from appliance.core.model_config import input_specs, output_specs, read_config

    metadata, infer = {}, {}
    for folder in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
        config = read_config(folder / "config.pbtxt")
        where = str(folder / "config.pbtxt")
        meta = pb.ModelMetadataResponse(name=folder.name, versions=["1"], platform="onnxruntime_onnx")
        response = pb.ModelInferResponse(model_name=folder.name, model_version="1")
        for spec in input_specs(config, where):
            meta.inputs.add(name=spec.name, datatype=spec.datatype.name, shape=[-1, *spec.dims])
        for spec in output_specs(config, where):
            meta.outputs.add(name=spec.name, datatype=spec.datatype.name, shape=[-1, *spec.dims])
            response.outputs.add(name=spec.name, datatype=spec.datatype.name, shape=[1, *spec.dims])
            response.raw_output_contents.append(np.zeros((1, *spec.dims), spec.datatype.dtype).tobytes())
        metadata[folder.name], infer[folder.name] = meta, response
    return metadata, infer


def spend_cpu(seconds: float) -> None:
    """Keep this thread busy for ``seconds`` of its own CPU time (not wall time: a preempted thread spends none)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def serve(repo: Path, address: str, work_us: int = 0) -> None:
    metadata, infer = canned_responses(repo)
    work_s = work_us / 1e6

    async def model_metadata(request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        return metadata[request.name]

    async def model_infer(request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        if work_s:
            spend_cpu(work_s)
        return infer[request.model_name]

    async def ready(request: object, context: object) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    handlers = {
        "ModelMetadata": grpc.unary_unary_rpc_method_handler(
            model_metadata, pb.ModelMetadataRequest.FromString, pb.ModelMetadataResponse.SerializeToString
        ),
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            model_infer, pb.ModelInferRequest.FromString, pb.ModelInferResponse.SerializeToString
        ),
        "ServerReady": grpc.unary_unary_rpc_method_handler(
            ready, pb.ServerReadyRequest.FromString, pb.ServerReadyResponse.SerializeToString
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True, help="Triton-layout repository")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    parser.add_argument("--work-us", type=int, default=0, help="CPU microseconds to spend in each ModelInfer")
    args = parser.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.model_repository, f"{args.address}:{args.port}", args.work_us))


if __name__ == "__main__":
    main()

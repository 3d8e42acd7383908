"""The floor of the Python gRPC stack: a grpc.aio server (on uvloop, as the appliance) that answers
``ModelMetadata`` and ``ModelInfer`` of the demo models with canned responses, doing no work at all.

Run under the same load as the appliance (``serving.py --targets grpc-floor``), it shows how many requests a
second grpc.aio itself can carry on this machine, before any decoding, scheduling or inference. Its process is
set up as the appliance's (``appliance.process.set_up`` with the default settings: threads under SCHED_BATCH,
fixed allocator thresholds), so that the work is the only difference. With
``--work-us N`` each ModelInfer first spends N microseconds of CPU on the loop thread, as a server's own work
would: what N microseconds of in-process work become on the wire.

With ``--minimal`` it is the grpc-minimal server instead: each ModelInfer does the least that any server running
the model must do, and nothing else. It reads each input (raw contents, or a view of a registered system
shared-memory region), runs ONNX Runtime on it at once on the loop thread (the request alone: no queue, no
batching, no thread hand-off; one intra-op thread, no spinning, as the appliance), and writes each output (raw
contents, or into a region). It checks nothing, keeps no statistics and answers no errors of its own: what a
Python server on grpc.aio and ONNX Runtime cannot go below (``benchmarks/limits.py``).

    python -m benchmarks.grpc_floor --model-repository DIR --port PORT [--work-us N | --minimal]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from appliance.core import datatypes
from appliance.core.shared_memory import PARAM_BYTE_SIZE, PARAM_OFFSET, PARAM_REGION
from benchmarks.loadgen import SHM_EXTENSION


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


class MinimalServer:
    """ModelInfer with the least work (see the module's text), and the system shared-memory calls it needs."""

    def __init__(self, repo: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}
        for folder in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
            version = max((v for v in folder.iterdir() if v.name.isdigit()), key=lambda v: int(v.name))
            session = ort.InferenceSession(str(version / "model.onnx"), options, providers=["CPUExecutionProvider"])
            self._sessions[folder.name] = session
            self._outputs[folder.name] = [o.name for o in session.get_outputs()]
        self._regions: dict[str, tuple[mmap.mmap, memoryview]] = {}

    async def register(self, request: pb.SystemSharedMemoryRegisterRequest, context: object) -> Any:
        fd = os.open("/dev/shm/" + request.key.lstrip("/"), os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, request.offset + request.byte_size)
        finally:
            os.close(fd)
        self._regions[request.name] = (mapped, memoryview(mapped)[request.offset :])
        return pb.SystemSharedMemoryRegisterResponse()

    async def unregister(self, request: pb.SystemSharedMemoryUnregisterRequest, context: object) -> Any:
        mapped, view = self._regions.pop(request.name)
        view.release()
        mapped.close()
        return pb.SystemSharedMemoryUnregisterResponse()

    def _region(self, params: Any) -> tuple[memoryview, int, int] | None:
        if PARAM_REGION not in params:
            return None
        _, view = self._regions[params[PARAM_REGION].string_param]
        offset = params[PARAM_OFFSET].int64_param if PARAM_OFFSET in params else 0
        return view, offset, params[PARAM_BYTE_SIZE].int64_param

    def infer(self, request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        raw = iter(request.raw_input_contents)
        feed = {}
        for tensor in request.inputs:
            dtype = datatypes.BY_NAME[tensor.datatype].dtype
            where = self._region(tensor.parameters) if tensor.parameters else None
            if where is None:
                data = np.frombuffer(next(raw), dtype)
            else:
                view, offset, size = where
                data = np.frombuffer(view, dtype, size // dtype.itemsize, offset)
            feed[tensor.name] = data.reshape(tuple(tensor.shape))
        names = self._outputs[request.model_name]
        results = self._sessions[request.model_name].run(names, feed)
        into = {o.name: o.parameters for o in request.outputs if o.parameters}
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for name, array in zip(names, results):
            response.outputs.add(name=name, datatype=datatypes.of_array(array).name, shape=array.shape)
            where = self._region(into[name]) if name in into else None
            if where is None:
                response.raw_output_contents.append(array.tobytes())
            else:
                view, offset, _ = where
                view[offset : offset + array.nbytes] = array.tobytes()
                response.raw_output_contents.append(b"")
        return response


async def serve(repo: Path, address: str, work_us: int = 0, minimal: bool = False) -> None:
    from appliance.process import set_up
    from appliance.settings import Settings

    set_up(Settings())
    metadata, infer = canned_responses(repo)
    work_s = work_us / 1e6
    minimal_server = MinimalServer(repo) if minimal else None

    async def model_metadata(request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        return metadata[request.name]

    async def model_infer(request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        if work_s:
            spend_cpu(work_s)
        if minimal_server is not None:
            return minimal_server.infer(request, context)
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
    if minimal_server is not None:

        async def server_metadata(request: object, context: object) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name="grpc-minimal", extensions=[SHM_EXTENSION])

        for name, method, message, reply in (
            ("ServerMetadata", server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            (
                "SystemSharedMemoryRegister",
                minimal_server.register,
                pb.SystemSharedMemoryRegisterRequest,
                pb.SystemSharedMemoryRegisterResponse,
            ),
            (
                "SystemSharedMemoryUnregister",
                minimal_server.unregister,
                pb.SystemSharedMemoryUnregisterRequest,
                pb.SystemSharedMemoryUnregisterResponse,
            ),
        ):
            handlers[name] = grpc.unary_unary_rpc_method_handler(method, message.FromString, reply.SerializeToString)
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
    parser.add_argument(
        "--minimal", action="store_true", help="run the model for real with the least work (the grpc-minimal server)"
    )
    args = parser.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.model_repository, f"{args.address}:{args.port}", args.work_us, args.minimal))


if __name__ == "__main__":
    main()

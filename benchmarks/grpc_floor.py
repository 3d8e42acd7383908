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
Python server on grpc.aio and ONNX Runtime cannot go below (``benchmarks/limits.py``). With ``--batch thread`` or
``--batch inline`` as well (``grpc-minimal-batch``, ``grpc-minimal-batch-inline``) it batches with the least work:
the requests of a model that wait while its one run is busy form its next batch, run on one thread beside the loop
or on the loop.

    python -m benchmarks.grpc_floor --model-repository DIR --port PORT [--work-us N | --minimal [--batch thread|inline]]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import queue
import threading
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

    def read(self, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        """The request's inputs, by name: views of its raw contents or of its regions."""
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
        return feed

    def run(self, model: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """ONNX Runtime on ``feed``; the outputs in the model's order."""
        return self._sessions[model].run(self._outputs[model], feed)  # type: ignore[no-any-return]

    def write(self, request: pb.ModelInferRequest, results: list[np.ndarray]) -> pb.ModelInferResponse:
        """The response to ``request``: each output into its region, or as raw contents."""
        into = {o.name: o.parameters for o in request.outputs if o.parameters}
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for name, array in zip(self._outputs[request.model_name], results):
            response.outputs.add(name=name, datatype=datatypes.of_array(array).name, shape=array.shape)
            where = self._region(into[name]) if name in into else None
            if where is None:
                response.raw_output_contents.append(array.tobytes())
            else:
                view, offset, _ = where
                view[offset : offset + array.nbytes] = array.tobytes()
                response.raw_output_contents.append(b"")
        return response

    def infer(self, request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        return self.write(request, self.run(request.model_name, self.read(request)))


class MinimalBatcher:
    """grpc-minimal's batching (``--batch``), with the least work: the requests of a model that wait while its one
    ONNX Runtime run is busy form its next batch (no delay, no size limit beyond what waits, no priorities or
    checks). ``thread``: runs go to one thread per model, so the loop keeps reading requests while one runs;
    ``inline``: on the loop, batching what arrived in one pass of it."""

    def __init__(self, server: MinimalServer, on_thread: bool) -> None:
        self._server = server
        self._on_thread = on_thread
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[str, list[tuple[dict[str, np.ndarray], asyncio.Future[list[np.ndarray]]]]] = {}
        self._busy: set[str] = set()
        self._work: dict[str, queue.SimpleQueue[Any]] = {}

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        model = request.model_name
        future: asyncio.Future[list[np.ndarray]] = self._loop.create_future()
        self._waiting.setdefault(model, []).append((self._server.read(request), future))
        if model not in self._busy:
            self._busy.add(model)
            self._loop.call_soon(self._next, model)
        return self._server.write(request, await future)

    def _next(self, model: str) -> None:
        batch = self._waiting.pop(model, [])
        if not batch:
            self._busy.discard(model)
            return
        feeds = [feed for feed, _ in batch]
        feed = feeds[0] if len(feeds) == 1 else {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}
        if not self._on_thread:
            self._done(model, batch, self._server.run(model, feed))
            return
        if model not in self._work:
            self._work[model] = queue.SimpleQueue()
            threading.Thread(target=self._worker, args=(model,), daemon=True).start()
        self._work[model].put((feed, batch))

    def _worker(self, model: str) -> None:
        while True:
            feed, batch = self._work[model].get()
            results = self._server.run(model, feed)
            self._loop.call_soon_threadsafe(self._done, model, batch, results)
            del feed, batch  # views of regions: held here, a region could not be unregistered

    def _done(self, model: str, batch: list[Any], results: list[np.ndarray]) -> None:
        start = 0
        for feed, future in batch:
            size = next(iter(feed.values())).shape[0]
            future.set_result([r[start : start + size] for r in results])
            start += size
        self._next(model)


async def serve(repo: Path, address: str, work_us: int = 0, minimal: bool = False, batch: str = "") -> None:
    from appliance.process import set_up
    from appliance.settings import Settings

    set_up(Settings())
    metadata, infer = canned_responses(repo)
    work_s = work_us / 1e6
    minimal_server = MinimalServer(repo) if minimal else None
    batcher = MinimalBatcher(minimal_server, batch == "thread") if minimal_server is not None and batch else None

    async def model_metadata(request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        return metadata[request.name]

    async def model_infer(request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        if work_s:
            spend_cpu(work_s)
        if batcher is not None:
            return await batcher.infer(request)
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
    parser.add_argument(
        "--batch",
        choices=["inline", "thread"],
        help="with --minimal: batch the requests that wait while a run is busy, running on the loop or on a thread",
    )
    args = parser.parse_args()
    if args.batch and not args.minimal:
        parser.error("--batch goes with --minimal")
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        address = f"{args.address}:{args.port}"
        runner.run(serve(args.model_repository, address, args.work_us, args.minimal, args.batch or ""))


if __name__ == "__main__":
    main()

"""``appliance serve`` with one part of the request path cut or replaced, for measurement only.

Started by ``benchmarks/limits.py`` to see what each stage of a request costs on the wire, where it can differ
from what the same code costs in process (``hotpath.py``), and what execution costs around it:

    python benchmarks/stages.py STAGE serve --model-repository DIR [appliance serve options]

STAGE is one of
- ``canned``: ModelInfer answers a canned response at once (the grpc-floor's, inside the appliance's process);
- ``decode``: it decodes the request first, then answers the canned response;
- ``dataplane``: the whole data plane runs (checks, batcher, ONNX Runtime, statistics), then the canned response
  is answered instead of encoding the real one;
- ``no-onnxruntime``: the whole path, with each ONNX Runtime run replaced by the first answer of its instance for
  the same input shapes;
- ``full``: nothing is cut.

Two probes of where batch execution runs (``limits.py`` runs them on the image model over shared memory):
- ``no-execution``: each batch is answered with the first answer of its instance for a request of the same
  shapes, copied for each request: no batch is formed (no copy) and nothing runs. Measured as taking no time,
  such batches run inline on the event loop (``Placement``), so what is left is the front alone: grpc.aio,
  decoding, the shared-memory lease, the data plane and encoding.
- ``executor-process``: a batch whose inputs all lie in registered shared-memory regions runs in a separate
  process, one per model version (the design of ``docs/architecture.md``, "More cores", step 2, reduced to what
  this path needs): the event loop sends each input's object path, offset, shape and type over a Unix socket,
  the process maps the objects once, forms the batch, runs ONNX Runtime (same session options: one intra-op
  thread, no spinning) and sends the outputs back; the loop reads them when the socket is readable. No instance
  thread and no GIL are shared with the execution. Other batches run as usual.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/stages.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("canned", "decode", "dataplane", "no-onnxruntime", "full")
PROBES = ("no-execution", "executor-process")


def stage_program(stage: str) -> tuple[str, ...]:
    """The command that replaces ``appliance`` to serve with ``stage`` (``servers.running_appliance(program=)``)."""
    return (sys.executable, str(Path(__file__).resolve()), stage)


def cut(stage: str, repo: Path) -> None:
    """Patch the appliance's classes so that a request stops after ``stage``."""
    from appliance.backends.onnxruntime import OnnxRuntimeBackend
    from appliance.grpc import service
    from benchmarks.grpc_floor import canned_responses

    _, canned = canned_responses(repo)
    if stage in ("canned", "decode", "dataplane"):

        async def model_infer(self: Any, request: Any, context: Any) -> Any:
            if stage != "canned":
                decoded = service._decode(request, context)
                if stage == "dataplane":
                    await self._dp.infer(decoded)
            return canned[request.model_name]

        service.InferenceService.ModelInfer = model_infer  # type: ignore[method-assign]
    elif stage == "no-onnxruntime":
        execute = OnnxRuntimeBackend.execute
        answers: dict[tuple[int, tuple[tuple[str, tuple[int, ...]], ...]], Any] = {}

        def first_answer(self: Any, instance: int, inputs: Any, outputs: Any) -> Any:
            key = (instance, tuple((name, array.shape) for name, array in inputs.items()))
            if key not in answers:
                answers[key] = execute(self, instance, inputs, outputs)
            return answers[key]

        OnnxRuntimeBackend.execute = first_answer  # type: ignore[method-assign]
    elif stage == "no-execution":
        _no_execution()
    elif stage == "executor-process":
        _executor_process(repo)
    elif stage != "full":
        raise SystemExit(f"stage {stage!r}: expected one of {', '.join(STAGES + PROBES)}")


def _no_execution() -> None:
    from appliance.core.batching import DynamicBatcher, Execution

    run = DynamicBatcher._run
    answers: dict[tuple[int, int, tuple[tuple[str, tuple[int, ...]], ...]], Any] = {}

    def first_answer(self: Any, instance: int, batch: Any) -> Any:
        key = (id(self), instance, tuple((n, a.shape) for n, a in batch[0].inputs.items()))
        if key not in answers:
            result = run(self, instance, batch[:1])
            if isinstance(result, Exception):
                return result
            answers[key] = result[0][0]
        size = sum(p.batch_size for p in batch)
        return [dict(answers[key]) for _ in batch], Execution(size, len(batch), 0.0, 0.0, 0.0)

    DynamicBatcher._run = first_answer  # type: ignore[method-assign]


def _executor_process(repo: Path) -> None:
    """See the module's docstring. Messages both ways: a 4-byte length, then a pickle."""
    import ctypes
    import pickle
    import socket
    import struct
    import subprocess

    from appliance.core import shared_memory
    from appliance.core.batching import DynamicBatcher, Execution

    mapped: dict[int, tuple[int, str]] = {}  # each registered region's mapping: address -> (size, object path)
    region_init = shared_memory._Region.__init__

    def record(self: Any, status: Any) -> None:
        region_init(self, status)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        mapped[address] = (len(self._map), str(shared_memory._object_path(status.key)))

    shared_memory._Region.__init__ = record  # type: ignore[method-assign]

    def locate(array: Any) -> tuple[str, int, tuple[int, ...], str] | None:
        address = array.ctypes.data
        for start, (size, path) in mapped.items():
            if start <= address < start + size:
                return path, address - start, array.shape, array.dtype.str
        return None

    class Executor:
        def __init__(self, batcher: Any) -> None:
            name, version = batcher._name.rsplit("/", 1)
            ours, theirs = socket.socketpair()
            program = (sys.executable, str(Path(__file__).resolve()), "--executor", str(theirs.fileno()))
            model = repo / name / version / "model.onnx"
            self.process = subprocess.Popen((*program, str(model)), pass_fds=(theirs.fileno(),))
            theirs.close()
            ours.setblocking(False)
            self.socket, self.batcher, self.received = ours, batcher, bytearray()
            self.waiting: dict[int, tuple[int, Any]] = {}
            self.sequence = 0
            batcher._loop.add_reader(ours.fileno(), self.on_readable)

        def send(self, instance: int, batch: Any, places: dict[str, list[Any]]) -> None:
            self.sequence += 1
            self.waiting[self.sequence] = (instance, batch)
            data = pickle.dumps((self.sequence, places, self.batcher._output_names))
            self.socket.setblocking(True)
            self.socket.sendall(struct.pack("<I", len(data)) + data)
            self.socket.setblocking(False)

        def on_readable(self) -> None:
            try:
                self.received += self.socket.recv(1 << 20)
            except BlockingIOError:
                return
            while len(self.received) >= 4:
                (size,) = struct.unpack_from("<I", self.received)
                if len(self.received) < 4 + size:
                    return
                sequence, outputs, input_s, infer_s = pickle.loads(bytes(self.received[4 : 4 + size]))
                del self.received[: 4 + size]
                instance, batch = self.waiting.pop(sequence)
                per_request, offset = [], 0
                for p in batch:
                    per_request.append({n: a[offset : offset + p.batch_size] for n, a in outputs.items()})
                    offset += p.batch_size
                execution = Execution(offset, len(batch), input_s, infer_s, 0.0)
                self.batcher._complete(instance, batch, (per_request, execution))

    dispatch = DynamicBatcher._dispatch
    executors: dict[int, Executor] = {}

    def dispatch_to_executor(self: Any, instance: int, batch: Any, alone: bool = False) -> None:
        places = {n: [locate(p.inputs[n]) for p in batch] for n in self._input_names}
        if not places or any(None in found for found in places.values()):
            dispatch(self, instance, batch, alone)
            return
        if id(self) not in executors:
            executors[id(self)] = Executor(self)
        now = time.monotonic()
        for p in batch:
            p.dispatched = now
        if len(batch) > 1:
            self._batched_at = now
        self._inflight += 1
        executors[id(self)].send(instance, batch, places)

    DynamicBatcher._dispatch = dispatch_to_executor  # type: ignore[method-assign]


def executor_main(fd: int, model: str) -> int:
    """The executor process of the ``executor-process`` probe."""
    import mmap
    import os
    import pickle
    import socket
    import struct

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    channel = socket.socket(fileno=fd)
    maps: dict[str, mmap.mmap] = {}
    received = bytearray()

    def read(size: int) -> bytes | None:
        while len(received) < size:
            chunk = channel.recv(1 << 20)
            if not chunk:
                return None
            received.extend(chunk)
        data = bytes(received[:size])
        del received[:size]
        return data

    def view(path: str, offset: int, shape: tuple[int, ...], dtype: str) -> Any:
        if path not in maps:
            descriptor = os.open(path, os.O_RDONLY)
            maps[path] = mmap.mmap(descriptor, 0, prot=mmap.PROT_READ)
            os.close(descriptor)
        return np.frombuffer(maps[path], dtype, int(np.prod(shape)), offset).reshape(shape)

    while (header := read(4)) is not None:
        body = read(struct.unpack("<I", header)[0])
        if body is None:
            break
        sequence, places, output_names = pickle.loads(body)
        t0 = time.perf_counter()
        feed = {}
        for name, parts in places.items():
            arrays = [view(*part) for part in parts]
            feed[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        t1 = time.perf_counter()
        outputs = dict(zip(output_names, session.run(list(output_names), feed)))
        answer = pickle.dumps((sequence, outputs, t1 - t0, time.perf_counter() - t1), protocol=5)
        channel.sendall(struct.pack("<I", len(answer)) + answer)
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--executor":
        return executor_main(int(sys.argv[2]), sys.argv[3])
    if len(sys.argv) < 3 or "--model-repository" not in sys.argv:
        raise SystemExit(__doc__)
    stage = sys.argv.pop(1)
    cut(stage, Path(sys.argv[sys.argv.index("--model-repository") + 1]))
    sys.argv[0] = "appliance"
    from appliance.cli import main as appliance_main

    return appliance_main()


if __name__ == "__main__":
    sys.exit(main())

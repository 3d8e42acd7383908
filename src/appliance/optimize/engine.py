"""Running a serialized TensorRT engine (``tensorrt`` 10 + ``pycuda``): for ``trt-optimize build --validate
--profile``, and for the in-process TensorRT backend (:mod:`appliance.backends.tensorrt`), which serves an
:class:`Engine` through the core's batcher. Nothing here runs without a GPU.

Each instance has its own execution context and CUDA stream, pinned host buffers and device buffers that grow
to the largest batch seen; copies are asynchronous on the instance's stream. An engine with several
optimization profiles (``trt-optimize`` makes one per preferred batch size) switches each instance to the
first profile whose range holds the batch. ``tensorrt`` and ``pycuda`` modules are passed in by the caller, so
importing this module needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import OptimizeError
from .shapes import choose_profile


class _Instance:
    """One execution context and its stream and buffers; entered by one thread at a time."""

    def __init__(self, engine: Any, cuda: Any) -> None:
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.profile = 0
        self.host: dict[str, NDArray[Any]] = {}  # pinned
        self.device: dict[str, Any] = {}  # pycuda DeviceAllocation


class Engine:
    """A deserialized engine with ``instances`` execution instances; ``execute`` runs one batch on one instance."""

    def __init__(self, trt: Any, cuda: Any, path: Path, instances: int) -> None:
        self._trt, self._cuda = trt, cuda
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise OptimizeError(
                    f"{path}: TensorRT cannot deserialize this engine (built for another TensorRT "
                    "version or GPU? run trt-optimize verify)"
                )
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
            self._ranges = [
                {n: tuple(list(s) for s in self._engine.get_tensor_profile_shape(n, p))[::2] for n in self._inputs}
                for p in range(self._engine.num_optimization_profiles)
            ]
            self._instances = [_Instance(self._engine, cuda) for _ in range(max(1, instances))]
        finally:
            self._ctx.pop()

    @property
    def instance_count(self) -> int:
        return len(self._instances)

    def resize(self, count: int) -> None:
        """``count`` execution instances from now on: new ones get their own context, stream and buffers; the last
        ones go, their device buffers freed with the CUDA context current. The caller (the core's batcher) never
        resizes while a retiring instance runs a batch, and ``execute`` only indexes instances below ``count``."""
        self._ctx.push()
        try:
            while len(self._instances) < count:
                self._instances.append(_Instance(self._engine, self._cuda))
            while len(self._instances) > max(count, 1):
                retired = self._instances.pop()
                for allocation in retired.device.values():
                    allocation.free()
                retired.device.clear()
                retired.host.clear()
                del retired.context  # the execution context's memory goes with its last reference
        finally:
            self._ctx.pop()

    def _buffer(self, inst: _Instance, name: str, shape: tuple[int, ...]) -> NDArray[Any]:
        """A pinned host view of ``shape``, with a device buffer at least as large (grown when needed)."""
        count = int(np.prod(shape))
        host = inst.host.get(name)
        if host is None or host.size < count:
            inst.host[name] = host = self._cuda.pagelocked_empty(max(count, 1), self._dtypes[name])
            inst.device[name] = self._cuda.mem_alloc(max(host.nbytes, 1))
        return host[:count].reshape(shape)

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        inst = self._instances[instance]
        cuda, context, stream = self._cuda, inst.context, inst.stream
        self._ctx.push()
        try:
            if len(self._ranges) > 1:
                profile = choose_profile(self._ranges, {n: a.shape for n, a in inputs.items()})  # type: ignore[arg-type]
                if profile < 0:
                    raise RuntimeError(
                        f"no optimization profile of this engine takes shapes "
                        f"{ {n: list(a.shape) for n, a in inputs.items()} }"
                    )
                if profile != inst.profile:
                    context.set_optimization_profile_async(profile, stream.handle)
                    inst.profile = profile
            for name, array in inputs.items():
                host = self._buffer(inst, name, array.shape)
                np.copyto(host, array, casting="same_kind")
                if not context.set_input_shape(name, array.shape):
                    raise RuntimeError(f"input '{name}': shape {list(array.shape)} is outside the engine's profiles")
                cuda.memcpy_htod_async(inst.device[name], host, stream)
                context.set_tensor_address(name, int(inst.device[name]))
            views = {}
            for name in outputs:
                shape = tuple(context.get_tensor_shape(name))
                views[name] = self._buffer(inst, name, shape)
                context.set_tensor_address(name, int(inst.device[name]))
            if not context.execute_async_v3(stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the log)")
            for name, view in views.items():
                cuda.memcpy_dtoh_async(view, inst.device[name], stream)
            stream.synchronize()
            return {name: view.copy() for name, view in views.items()}
        finally:
            self._ctx.pop()

    def close(self) -> None:
        self._ctx.push()
        try:
            self._instances.clear()
            self._engine = None
        finally:
            self._ctx.pop()

"""TensorRT in process (``tensorrt`` 10 + ``pycuda``): serialized engines (``model.plan``) from the repository.

Each instance has its own execution context and CUDA stream, pinned host buffers and device buffers that grow
to the largest batch seen; copies are asynchronous on the instance's stream. An engine with several
optimization profiles (``trt-optimize`` makes one per preferred batch size) switches each instance to the
first profile whose range holds the batch.

The config is completed from the manifest ``trt-optimize`` writes beside the plan (``model.plan.json``), so a
model loads without reading the engine twice; without a manifest, ``config.pbtxt`` must list inputs and outputs.
``tensorrt`` and ``pycuda`` are imported only when a model loads: the package works without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from ..core.model_config import instance_count
from ..optimize.errors import OptimizeError
from ..optimize.manifest import PLAN_FILENAME, manifest_path, read_manifest
from ..optimize.shapes import choose_profile
from .base import BackendOptions, LoadError


def plan_path(config: mc.ModelConfig, model_dir: Path, version: int) -> Path:
    path = model_dir / str(version) / (config.default_model_filename or PLAN_FILENAME)
    if not path.is_file():
        raise LoadError(f"engine file {path} not found")
    return path


class TensorRTFactory:
    name = "tensorrt"

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        """Inputs, outputs and max_batch_size from the manifest (as Triton's TensorRT backend does from the plan)."""
        plan = plan_path(config, model_dir, version)
        if config.input and config.output:
            return
        mpath = manifest_path(plan)
        if not mpath.is_file():
            raise LoadError(
                f"{model_dir / 'config.pbtxt'}: list the inputs and outputs, or keep the manifest "
                f"{mpath.name} that trt-optimize writes beside {plan.name}"
            )
        try:
            manifest = read_manifest(mpath)
        except OptimizeError as exc:
            raise LoadError(exc.message) from None
        batched = config.max_batch_size > 0
        if not batched and manifest.profiles and all(t.dims and t.dims[0] == -1 for t in manifest.inputs):
            config.max_batch_size = min(p[t.name]["max"][0] for p in manifest.profiles[-1:] for t in manifest.inputs)
            batched = True
        for present, tensors in ((config.input, manifest.inputs), (config.output, manifest.outputs)):
            known = {t.name for t in present}
            for t in tensors:
                if t.name in known:
                    continue
                entry = present.add()
                entry.name = t.name
                entry.data_type = mc.DataType.Value(t.datatype)
                entry.dims.extend(t.dims[1:] if batched else t.dims)

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> TensorRTBackend:
        path = plan_path(config, model_dir, version)
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise LoadError(
                f"{path}: the tensorrt backend needs the Python packages 'tensorrt' (10) and "
                f"'pycuda', and '{exc.name}' is not installed on this machine"
            ) from None
        return TensorRTBackend(trt, cuda, path, instance_count(config))


class _Instance:
    """One execution context and its stream and buffers; entered by one thread at a time."""

    def __init__(self, engine: Any, cuda: Any) -> None:
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.profile = 0
        self.host: dict[str, NDArray[Any]] = {}  # pinned
        self.device: dict[str, Any] = {}  # pycuda DeviceAllocation


class TensorRTBackend:
    def __init__(self, trt: Any, cuda: Any, path: Path, instances: int) -> None:
        self._trt, self._cuda = trt, cuda
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise LoadError(
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

"""TensorRT in process (``tensorrt`` 10 + ``pycuda``): serialized engines (``model.plan``) from the repository.

Running an engine (execution contexts, streams, buffers, optimization profiles) is :mod:`appliance.optimize.engine`,
which ``trt-optimize build --validate --profile`` uses too; this module chooses the plan, completes the config
and adapts the engine to the core's :class:`~appliance.core.backend.BatchBackend`.

The config is completed from the manifest ``trt-optimize`` writes beside the plan (``model.plan.json``), so a
model loads without reading the engine twice; without a manifest, ``config.pbtxt`` must list inputs and outputs.
``tensorrt`` and ``pycuda`` are imported only when a model loads: the package works without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from ..core.backend import BackendOptions, BatchBackend, LoadError
from ..core.model_config import instance_count
from ..optimize.engine import Engine
from ..optimize.errors import OptimizeError
from ..optimize.manifest import PLAN_FILENAME, manifest_path, read_manifest


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
        try:
            return TensorRTBackend(Engine(trt, cuda, path, instance_count(config)))
        except OptimizeError as exc:
            raise LoadError(exc.message) from None


class TensorRTBackend(BatchBackend):
    """An engine (:class:`appliance.optimize.engine.Engine`, shared with ``trt-optimize --validate``) as a backend:
    the core's batcher runs its batches, one thread per instance."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def instance_count(self) -> int:
        return self._engine.instance_count

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        return self._engine.execute(instance, inputs, outputs)

    resizable = True  # execution contexts come and go in place (Engine.resize)

    def resize(self, count: int) -> None:
        self._engine.resize(count)

    def close(self) -> None:
        self._engine.close()

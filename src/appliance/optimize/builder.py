"""The thin TensorRT 10 layer of ``trt-optimize``: ONNX -> serialized engine. Nothing here runs without a GPU.

Everything it decides is decided in :mod:`.buildspec` (flags, precision checks, messages); this module only
makes the calls, in the order the TensorRT 10 Python API documents:

``Builder`` -> ``create_network`` (``STRONGLY_TYPED`` for Q/DQ ONNX) -> ``OnnxParser.parse_from_file`` ->
``create_builder_config`` (memory pool limit, flags, DLA, optimization profiles, timing cache, progress monitor,
calibrator) -> ``build_serialized_network``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .buildspec import BuildResult, BuildSpec, builder_flags, parser_error_message
from .engine import Engine
from .errors import OptimizeError, TensorRTMissing
from .manifest import write_atomic
from .progress import Progress


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise TensorRTMissing(
            "TensorRT is not installed here (Python package 'tensorrt', version 10): engines are built on a "
            "device with TensorRT, e.g. a reference Jetson Orin"
        ) from None
    return tensorrt


def _progress_monitor(trt: Any, progress: Progress) -> Any:
    class ProgressMonitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return ProgressMonitor()


def _entropy_calibrator(trt: Any, spec: BuildSpec) -> Any:
    """IInt8EntropyCalibrator2 over the calibration folder (deprecated since TensorRT 10.1; Q/DQ is the future)."""
    import pycuda.autoinit  # noqa: F401 - a CUDA context for the device buffer
    import pycuda.driver as cuda

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = spec.calibration.batches(spec.calibration_batch_size) if spec.calibration else iter(())
            self.device_buffer: Any = None

        def get_batch_size(self) -> int:
            return spec.calibration_batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            if self.device_buffer is None:
                self.device_buffer = cuda.mem_alloc(batch.nbytes)
            cuda.memcpy_htod(self.device_buffer, np.ascontiguousarray(batch))
            return [int(self.device_buffer)]

        def read_calibration_cache(self) -> bytes | None:
            if spec.calibration_cache is not None and spec.calibration_cache.is_file():
                return spec.calibration_cache.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if spec.calibration_cache is not None:
                write_atomic(spec.calibration_cache, bytes(cache))

    return EntropyCalibrator()


def build_engine(spec: BuildSpec, progress: Progress) -> BuildResult:
    """Build ``spec.onnx_path`` into a serialized engine; OptimizeError with a clear message on failure."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = builder_flags(spec, bool(builder.platform_has_fast_fp16), bool(builder.platform_has_fast_int8))
    if spec.dla_core is not None and spec.dla_core >= builder.num_DLA_cores:
        raise OptimizeError(f"--dla-core {spec.dla_core}: this device has {builder.num_DLA_cores} DLA cores")

    creation = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if spec.strongly_typed else 0
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        raise OptimizeError(
            parser_error_message(spec.onnx_path, [parser.get_error(i) for i in range(parser.num_errors)])
        )

    config = builder.create_builder_config()
    if spec.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if spec.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
    for shapes in spec.profiles:
        profile = builder.create_optimization_profile()
        for name, s in shapes.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
    if "INT8" in flags:
        config.int8_calibrator = _entropy_calibrator(trt, spec)
        if spec.profiles:
            calibration = builder.create_optimization_profile()
            for name, s in spec.profiles[0].items():
                shape = [spec.calibration_batch_size, *s["opt"][1:]]
                calibration.set_shape(name, shape, shape, shape)
            config.set_calibration_profile(calibration)
    cache_bytes = spec.timing_cache.read_bytes() if spec.timing_cache and spec.timing_cache.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt, progress)  # kept alive until the build returns, as TensorRT requires
    config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OptimizeError(f"{spec.onnx_path}: TensorRT could not build an engine (see the messages above)")
    if spec.timing_cache is not None:
        write_atomic(spec.timing_cache, bytes(config.get_timing_cache().serialize()))
    del monitor
    return BuildResult(plan=bytes(serialized), builder_flags=flags, tensorrt_version=str(trt.__version__))


def engine_runner(plan: Path, outputs: list[str]) -> Any:
    """A callable running a plan on one instance, as the TensorRT backend runs it (for --validate/--profile)."""
    trt = import_tensorrt()
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise TensorRTMissing("pycuda is not installed here: running engines needs it") from None
    engine = Engine(trt, cuda, plan, 1)
    return lambda inputs: engine.execute(0, inputs, outputs)

"""Engines in a model repository: writing plan + manifest, switching a model's config to TensorRT, and falling
back to ONNX Runtime.

Layout, per model version: ``<repo>/<model>/<version>/model.onnx``, ``model.plan``, ``model.plan.json``.
Falling back rewrites ``<repo>/<model>/config.pbtxt`` for the onnxruntime backend and keeps the TensorRT one as
``config.pbtxt.tensorrt``, so a later ``trt-optimize boot --retry-fallbacks`` (or a person) can go back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from ..core.model_config import ConfigError, read_config, to_text
from .buildspec import BuildResult, BuildSpec
from .device import DeviceInfo
from .errors import OptimizeError
from .manifest import PLAN_FILENAME, Manifest, TensorInfo, manifest_path, sha256_file, write_atomic

CONFIG = "config.pbtxt"
TENSORRT_BACKUP = "config.pbtxt.tensorrt"
BACKEND_PARAMETER = "appliance_backend"


@dataclass(frozen=True, slots=True)
class EngineSource:
    """What :func:`write_engine` records about how the engine was made."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    calibration_cache: str = ""


def write_engine(
    folder: Path,
    spec: BuildSpec,
    result: BuildResult,
    device: DeviceInfo,
    source: EngineSource,
    plan_name: str = PLAN_FILENAME,
) -> Manifest:
    """Write ``model.plan`` and its manifest into a version folder (the ONNX file must already be there)."""
    plan = folder / plan_name
    write_atomic(plan, result.plan)
    manifest = Manifest(
        tensorrt_version=result.tensorrt_version,
        gpu_name=device.gpu_name,
        compute_capability=device.compute_capability,
        precision=spec.precision,
        profiles=spec.profiles,
        builder_flags=result.builder_flags,
        onnx_file=spec.onnx_path.name,
        onnx_sha256=sha256_file(spec.onnx_path),
        plan_file=plan.name,
        plan_sha256=sha256_file(plan),
        inputs=source.inputs,
        outputs=source.outputs,
        strongly_typed=spec.strongly_typed,
        workspace_bytes=spec.workspace_bytes,
        dla_core=spec.dla_core,
        calibration_cache=source.calibration_cache,
        module=device.module,
        l4t_release=device.l4t_release,
        created=Manifest.now(),
    )
    manifest.write(manifest_path(plan))
    return manifest


def _read(config_path: Path) -> mc.ModelConfig:
    try:
        return read_config(config_path)
    except ConfigError as exc:
        raise OptimizeError(str(exc)) from None


def use_tensorrt(model_dir: Path, manifest: Manifest) -> Path:
    """Point a model's ``config.pbtxt`` at its engine (created when missing); returns the config path."""
    path = model_dir / CONFIG
    config = _read(path)
    config.name = model_dir.name
    config.backend = "tensorrt"
    config.platform = ""
    config.default_model_filename = "" if manifest.plan_file == PLAN_FILENAME else manifest.plan_file
    if BACKEND_PARAMETER in config.parameters and config.parameters[BACKEND_PARAMETER].string_value != "triton":
        del config.parameters[BACKEND_PARAMETER]
    batched = manifest.inputs and all(t.dims and t.dims[0] == -1 for t in manifest.inputs)
    if not path.exists() and batched and manifest.profiles:
        config.max_batch_size = min(p[t.name]["max"][0] for p in manifest.profiles[-1:] for t in manifest.inputs)
        config.dynamic_batching.SetInParent()
    write_atomic(path, to_text(config).encode())
    return path


def fall_back_to_onnxruntime(model_dir: Path, onnx_file: str) -> Path:
    """Rewrite a model's config for the onnxruntime backend, keeping the TensorRT config as a backup."""
    path = model_dir / CONFIG
    config = _read(path)
    backup = model_dir / TENSORRT_BACKUP
    if path.exists() and not backup.exists():
        shutil.copy2(path, backup)
    config.backend = "onnxruntime"
    config.platform = ""
    config.default_model_filename = "" if onnx_file == "model.onnx" else onnx_file
    if BACKEND_PARAMETER in config.parameters:
        del config.parameters[BACKEND_PARAMETER]
    for group in config.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        del group.gpus[:]
    write_atomic(path, to_text(config).encode())
    return path


def restore_tensorrt(model_dir: Path) -> bool:
    """Put back the TensorRT config an earlier fallback kept; False when there is none."""
    backup = model_dir / TENSORRT_BACKUP
    if not backup.exists():
        return False
    write_atomic(model_dir / CONFIG, backup.read_bytes())
    backup.unlink()
    return True

"""The manifest written beside each engine, and the check of an engine against its manifest and a device.

A version folder of a TensorRT model holds ``model.plan``, its ONNX source ``model.onnx`` (what a rebuild or
the ONNX Runtime fallback starts from) and ``model.plan.json``, this manifest. An engine runs only on the
TensorRT version and GPU it was built for, so :func:`verify_engine` lists every way the files or the device
differ from what the manifest recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__ as APPLIANCE_VERSION
from .device import DeviceInfo
from .errors import OptimizeError

SCHEMA = 1
PLAN_FILENAME = "model.plan"
ONNX_FILENAME = "model.onnx"
PRECISIONS = ("fp32", "fp16", "int8", "best")

#: One optimization profile: input name -> {"min": [...], "opt": [...], "max": [...]} (full shapes, batch included).
Profile = dict[str, dict[str, list[int]]]


def manifest_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class TensorInfo:
    name: str
    datatype: str  # Triton config name, "TYPE_FP32"
    dims: list[int]  # the ONNX shape, -1 where dynamic (batch included)


@dataclass(slots=True)
class Manifest:
    """What an engine was built from, with what, and for which device."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str  # fp32 | fp16 | int8 | best
    profiles: list[Profile]
    builder_flags: list[str]
    onnx_file: str
    onnx_sha256: str
    plan_file: str
    plan_sha256: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    strongly_typed: bool = False  # a Q/DQ ONNX built as a strongly typed network (explicit quantization)
    workspace_bytes: int = 0  # 0: TensorRT's default (the device's memory)
    dla_core: int | None = None
    calibration_cache: str = ""  # file name beside the plan, when INT8 came from entropy calibration
    module: str = ""  # the device-tree model of the device it was built on (informational)
    l4t_release: str = ""  # informational: the TensorRT version is what an engine depends on
    created: str = ""
    tool_version: str = APPLIANCE_VERSION
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json().encode())

    @staticmethod
    def now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so a power cut leaves either the old or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _tensors(items: Any, path: Path, key: str) -> list[TensorInfo]:
    if not isinstance(items, list):
        raise OptimizeError(f"{path}: '{key}' must be a list")
    try:
        return [
            TensorInfo(name=str(t["name"]), datatype=str(t["datatype"]), dims=[int(d) for d in t["dims"]])
            for t in items
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise OptimizeError(f"{path}: '{key}' entries need name, datatype and dims ({exc!r})") from None


def read_manifest(path: Path) -> Manifest:
    """Parse a manifest; errors name the file (and the line for JSON syntax errors)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise OptimizeError(f"{path}: cannot read manifest: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise OptimizeError(f"{path}:{exc.lineno}: manifest is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise OptimizeError(f"{path}: a manifest is a JSON object")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise OptimizeError(f"{path}: manifest schema {data.get('schema')} is not {SCHEMA}")
    names = {f.name for f in fields(Manifest)}
    missing = [
        n
        for n in (
            "tensorrt_version",
            "gpu_name",
            "compute_capability",
            "precision",
            "profiles",
            "builder_flags",
            "onnx_file",
            "onnx_sha256",
            "plan_file",
            "plan_sha256",
        )
        if n not in data
    ]
    if missing:
        raise OptimizeError(f"{path}: manifest lacks {', '.join(missing)}")
    unknown = sorted(set(data) - names)
    if unknown:
        raise OptimizeError(f"{path}: unknown manifest keys {unknown}")
    if data["precision"] not in PRECISIONS:
        raise OptimizeError(f"{path}: precision '{data['precision']}' is not one of {', '.join(PRECISIONS)}")
    data["inputs"] = _tensors(data.get("inputs", []), path, "inputs")
    data["outputs"] = _tensors(data.get("outputs", []), path, "outputs")
    return Manifest(**data)


# --- verification ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """One way an engine does not match: ``what`` differs, the manifest says ``expected``, here is ``actual``."""

    what: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.what}: manifest has {self.expected}, found {self.actual}"


def verify_engine(manifest: Manifest, folder: Path, device: DeviceInfo) -> list[Difference]:
    """Every difference between an engine's manifest and its files and this device; empty when it matches.

    The TensorRT version must match exactly, and so must the GPU (name and compute capability): TensorRT
    engines are not portable across either. A DLA core must exist on this device. An unknown device value
    (empty) is reported too, since nothing then says the engine can run.
    """
    diffs: list[Difference] = []
    plan = folder / manifest.plan_file
    if not plan.is_file():
        diffs.append(Difference("plan file", manifest.plan_file, "no such file"))
    else:
        digest = sha256_file(plan)
        if digest != manifest.plan_sha256:
            diffs.append(Difference(f"sha256 of {manifest.plan_file}", manifest.plan_sha256, digest))
    onnx = folder / manifest.onnx_file
    if onnx.is_file():
        digest = sha256_file(onnx)
        if digest != manifest.onnx_sha256:
            diffs.append(Difference(f"sha256 of {manifest.onnx_file}", manifest.onnx_sha256, digest))
    for what, expected, actual in (
        ("TensorRT version", manifest.tensorrt_version, device.tensorrt_version),
        ("GPU name", manifest.gpu_name, device.gpu_name),
        ("compute capability", manifest.compute_capability, device.compute_capability),
    ):
        if expected != actual:
            diffs.append(Difference(what, expected or "(none)", actual or "(unknown on this device)"))
    if manifest.dla_core is not None and manifest.dla_core >= device.dla_cores:
        diffs.append(Difference("DLA core", str(manifest.dla_core), f"{device.dla_cores} DLA cores on this device"))
    return diffs

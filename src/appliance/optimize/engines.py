"""The TensorRT engines of a repository as the running service sees them: each manifest, checked against its
files and this device (:func:`.manifest.verify_engine`), and what the model is served with now (its engine, or
ONNX Runtime after a fallback or while a rebuild is deferred). ``GET /v2/engines`` and the panel's Models page.

Hashing an engine reads the whole file, so a check is kept until the manifest, the plan or the ONNX file
changes (size or modification time): a panel that refreshes every few seconds hashes nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.model_config import ConfigError, read_config
from .boot import DEFERRED
from .device import DeviceInfo, describe_device
from .errors import OptimizeError
from .manifest import read_manifest, verify_engine
from .repository import TENSORRT_BACKUP


def serving_of(model_dir: Path) -> str:
    """What a model with engines runs on now: ``tensorrt``; ``onnxruntime-deferred`` (its engines did not match
    at boot and are rebuilt after it), ``onnxruntime-fallback`` (a rebuild failed); else its config's backend
    (a config written for another backend by hand), or ``unknown`` when the config cannot be read."""
    try:
        config = read_config(model_dir / "config.pbtxt")
    except (ConfigError, OSError):  # the model's load error says why
        return "unknown"
    if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
        return "tensorrt"
    if (model_dir / DEFERRED).exists():
        return "onnxruntime-deferred"
    if (model_dir / TENSORRT_BACKUP).exists():
        return "onnxruntime-fallback"
    return config.backend or config.platform or "unknown"


@dataclass(frozen=True, slots=True)
class EngineState:
    model: str
    version: str
    manifest: str  # the manifest's path in the repository (``mlp/1/model.plan.json``)
    serving: str  # what the model runs on now (:func:`serving_of`)
    tensorrt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""
    precision: str = ""
    created: str = ""
    plan_sha256: str = ""
    differences: tuple[str, ...] = ()  # empty: the engine matches its files and this device
    error: str = ""  # the manifest cannot be read

    @property
    def matches(self) -> bool:
        return not self.differences and not self.error

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "differences": list(self.differences), "matches": self.matches}


def service_device(root: Path) -> tuple[DeviceInfo, str]:
    """This device as the service can tell without side effects: the TensorRT binding only if a backend has
    imported it already, the rest from files (no CUDA context is made). The second value says why the device
    could not be described ("" when it could)."""
    try:
        return describe_device(root, sys.modules.get("tensorrt"), None), ""
    except OptimizeError as exc:
        return DeviceInfo(), str(exc)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class EngineChecks:
    """Checks every engine of ``repository`` against ``device``, remembering each result until its files change."""

    def __init__(self, repository: Path, device: DeviceInfo) -> None:
        self.repository = repository
        self.device = device
        self._known: dict[Path, tuple[Any, EngineState]] = {}

    def states(self) -> list[EngineState]:
        found: list[EngineState] = []
        seen: set[Path] = set()
        try:
            models = sorted(p for p in self.repository.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []
        for model_dir in models:
            manifests = sorted(model_dir.glob("[0-9]*/*.plan.json"))
            serving = serving_of(model_dir) if manifests else ""
            for path in manifests:
                seen.add(path)
                found.append(self._state(model_dir.name, path, serving))
        for gone in set(self._known) - seen:
            del self._known[gone]
        return found

    def _state(self, model: str, path: Path, serving: str) -> EngineState:
        folder = path.parent
        where = os.fspath(path.relative_to(self.repository))
        try:
            manifest = read_manifest(path)
        except OptimizeError as exc:
            self._known.pop(path, None)
            return EngineState(model, folder.name, where, serving, error=str(exc))
        key = (
            _stamp(path),
            _stamp(folder / manifest.plan_file),
            _stamp(folder / manifest.onnx_file),
            serving,
        )
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        state = EngineState(
            model,
            folder.name,
            where,
            serving,
            tensorrt_version=manifest.tensorrt_version,
            gpu_name=manifest.gpu_name,
            compute_capability=manifest.compute_capability,
            precision=manifest.precision,
            created=manifest.created,
            plan_sha256=manifest.plan_sha256,
            differences=tuple(str(d) for d in verify_engine(manifest, folder, self.device)),
        )
        self._known[path] = (key, state)
        return state

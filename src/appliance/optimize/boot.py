"""The first-boot flow: keep engines that match this device, rebuild the others, fall back when a build fails.

For each model of the repository with engine manifests (``<model>/<version>/*.plan.json``):

1. verify each engine against its manifest and this device (:func:`.manifest.verify_engine`);
2. keep the ones that match;
3. rebuild the others from the ONNX file beside them, with the manifest's settings, printing progress lines
   (stdout is the journal under systemd);
4. if a rebuild fails, or its ONNX file is missing, rewrite that model's ``config.pbtxt`` for ONNX Runtime
   (:func:`.repository.fall_back_to_onnxruntime`), so the service comes up and serves it on the CPU.

A model that fell back at an earlier boot stays on ONNX Runtime (its ``config.pbtxt.tensorrt`` is kept) until
``--retry-fallbacks``. Every step is idempotent, so the unit can run at every boot: when all engines match it
only hashes files.

On the device a rebuild never holds boot: ``appliance-engines.service`` runs ``boot --defer-rebuilds`` before the
service, which only hashes; a model whose engines do not match falls back to ONNX Runtime at once and is marked
(``.rebuild-deferred``). After the service is up, ``appliance-engines-rebuild.service`` runs ``rebuild-deferred``
(:func:`rebuild_deferred`): it builds those engines, puts the TensorRT config back and asks the service to load
the model again, which swaps it over with no request lost; a model whose build fails stays on ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .buildspec import BuildResult, BuildSpec
from .device import DeviceInfo
from .errors import OptimizeError
from .manifest import Difference, Manifest, read_manifest, verify_engine
from .progress import Progress
from .repository import TENSORRT_BACKUP, EngineSource, fall_back_to_onnxruntime, restore_tensorrt, write_engine
from .shapes import onnx_io

DEFERRED = ".rebuild-deferred"  # in a model's folder: its engines are rebuilt after boot (rebuild-deferred)

Builder = Callable[[BuildSpec, Progress], BuildResult]


@dataclass(slots=True)
class EngineOutcome:
    model: str
    version: str
    action: str  # kept | rebuilt | deferred | failed
    differences: list[Difference] = field(default_factory=list)
    error: str = ""


@dataclass(slots=True)
class ModelOutcome:
    model: str
    action: str  # tensorrt | onnxruntime (fell back now) | onnxruntime-deferred | onnxruntime-earlier | unavailable
    engines: list[EngineOutcome] = field(default_factory=list)


def rebuild_spec(manifest: Manifest, folder: Path, device: DeviceInfo, timing_cache: Path | None) -> BuildSpec:
    """The build that reproduces an engine on this device, from its manifest's settings."""
    dla = manifest.dla_core if manifest.dla_core is not None and manifest.dla_core < device.dla_cores else None
    cache = folder / manifest.calibration_cache if manifest.calibration_cache else None
    return BuildSpec(
        onnx_path=folder / manifest.onnx_file,
        precision=manifest.precision,
        profiles=manifest.profiles,
        workspace_bytes=manifest.workspace_bytes,
        timing_cache=timing_cache,
        dla_core=dla,
        calibration_cache=cache,
        strongly_typed=manifest.strongly_typed,
    )


class Boot:
    def __init__(
        self,
        repository: Path,
        device: DeviceInfo,
        builder: Builder,
        out: TextIO,
        timing_cache: Path | None = None,
        retry_fallbacks: bool = False,
        defer_rebuilds: bool = False,
    ) -> None:
        self.repository = repository
        self.device = device
        self.builder = builder
        self.out = out
        self.timing_cache = timing_cache
        self.retry_fallbacks = retry_fallbacks
        self.defer_rebuilds = defer_rebuilds

    def say(self, text: str) -> None:
        self.out.write(f"trt-optimize boot: {text}\n")
        self.out.flush()

    def run(self) -> list[ModelOutcome]:
        if not self.repository.is_dir():
            raise OptimizeError(f"{self.repository}: model repository does not exist")
        d = self.device
        self.say(
            f"device: TensorRT {d.tensorrt_version or '(none)'}, GPU {d.gpu_name or '(unknown)'} "
            f"(compute {d.compute_capability or '?'}), {d.dla_cores} DLA cores, L4T {d.l4t_release or '?'}"
        )
        outcomes = []
        for model_dir in sorted(p for p in self.repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
            manifests = sorted(model_dir.glob("[0-9]*/*.plan.json"))
            if manifests:
                outcomes.append(self.model(model_dir, manifests))
        counts = {
            a: sum(1 for o in outcomes if o.action == a)
            for a in ("tensorrt", "onnxruntime", "onnxruntime-deferred", "unavailable")
        }
        deferred = f", {counts['onnxruntime-deferred']} on ONNX Runtime until rebuilt" if self.defer_rebuilds else ""
        self.say(
            f"done: {counts['tensorrt']} models on TensorRT, {counts['onnxruntime']} fell back to ONNX "
            f"Runtime{deferred}, {counts['unavailable']} unavailable"
        )
        return outcomes

    def model(self, model_dir: Path, manifests: list[Path]) -> ModelOutcome:
        name = model_dir.name
        if (model_dir / TENSORRT_BACKUP).exists() and not self.retry_fallbacks:
            self.say(
                f"{name}: stays on ONNX Runtime, as since an earlier boot ({TENSORRT_BACKUP} kept; "
                "--retry-fallbacks tries TensorRT again)"
            )
            return ModelOutcome(name, "onnxruntime-earlier")
        engines = [self.engine(name, path) for path in manifests]
        if all(e.action in ("kept", "rebuilt") for e in engines):
            if restore_tensorrt(model_dir):
                self.say(f"{name}: back on TensorRT ({TENSORRT_BACKUP} restored)")
            return ModelOutcome(name, "tensorrt", engines)
        onnx_files = {}
        for path in manifests:
            try:
                onnx_files[path] = read_manifest(path).onnx_file
            except OptimizeError:
                onnx_files[path] = "model.onnx"
        missing = [str(p.parent / f) for p, f in onnx_files.items() if not (p.parent / f).is_file()]
        if missing or len(set(onnx_files.values())) != 1:
            self.say(
                f"{name}: UNAVAILABLE: cannot fall back to ONNX Runtime, "
                + (f"missing {', '.join(missing)}" if missing else "versions use different ONNX file names")
            )
            return ModelOutcome(name, "unavailable", engines)
        config = fall_back_to_onnxruntime(model_dir, next(iter(onnx_files.values())))
        if any(e.action == "deferred" for e in engines) and not any(e.action == "failed" for e in engines):
            (model_dir / DEFERRED).touch()
            self.say(
                f"{name}: on ONNX Runtime until its engines are rebuilt after boot ({config} rewritten, TensorRT "
                f"config kept as {TENSORRT_BACKUP}, {DEFERRED} marks it)"
            )
            return ModelOutcome(name, "onnxruntime-deferred", engines)
        self.say(
            f"{name}: falls back to ONNX Runtime on the CPU ({config} rewritten, TensorRT config kept as "
            f"{TENSORRT_BACKUP})"
        )
        return ModelOutcome(name, "onnxruntime", engines)

    def engine(self, model: str, path: Path) -> EngineOutcome:
        folder = path.parent
        label = f"{model}/{folder.name}"
        try:
            manifest = read_manifest(path)
        except OptimizeError as exc:
            self.say(f"{label}: FAILED: {exc.message}")
            return EngineOutcome(model, folder.name, "failed", error=exc.message)
        diffs = verify_engine(manifest, folder, self.device)
        if not diffs:
            self.say(
                f"{label}: engine matches this device, kept ({manifest.precision}, TensorRT "
                f"{manifest.tensorrt_version})"
            )
            return EngineOutcome(model, folder.name, "kept")
        self.say(f"{label}: engine does not match: " + "; ".join(str(d) for d in diffs))
        spec = rebuild_spec(manifest, folder, self.device, self.timing_cache)
        if not spec.onnx_path.is_file():
            error = f"{spec.onnx_path}: ONNX file missing, cannot rebuild"
            self.say(f"{label}: FAILED: {error}")
            return EngineOutcome(model, folder.name, "failed", diffs, error)
        if self.defer_rebuilds:
            self.say(f"{label}: rebuild deferred until after boot")
            return EngineOutcome(model, folder.name, "deferred", diffs)
        self.say(f"{label}: rebuilding from {spec.onnx_path.name} ({spec.precision}); this takes minutes")
        try:
            inputs, outputs = onnx_io(spec.onnx_path)
            result = self.builder(spec, Progress(self.out, prefix=f"trt-optimize boot: {label}: ", tty=False))
            write_engine(
                folder,
                spec,
                result,
                self.device,
                EngineSource(inputs, outputs, manifest.calibration_cache),
                manifest.plan_file,
            )
        except Exception as exc:  # noqa: BLE001 - whatever fails, the service must come up
            error = exc.message if isinstance(exc, OptimizeError) else f"{type(exc).__name__}: {exc}"
            self.say(f"{label}: FAILED: rebuild failed: {error}")
            return EngineOutcome(model, folder.name, "failed", diffs, error)
        self.say(f"{label}: rebuilt for this device")
        return EngineOutcome(model, folder.name, "rebuilt", diffs)


def rebuild_deferred(
    repository: Path,
    device: DeviceInfo,
    builder: Builder,
    out: TextIO,
    timing_cache: Path | None = None,
    switched: Callable[[str], None] = lambda model: None,
) -> list[ModelOutcome]:
    """Build the engines ``boot --defer-rebuilds`` left for after boot, one model at a time; a model whose engines
    all build goes back to TensorRT and ``switched(model)`` tells the service to load it again. The mark goes
    whatever the result: a model whose build failed stays on ONNX Runtime, as after a failed rebuild at boot."""
    runner = Boot(repository, device, builder, out, timing_cache, retry_fallbacks=True)
    outcomes = []
    for marker in sorted(repository.glob(f"*/{DEFERRED}")):
        model_dir = marker.parent
        manifests = sorted(model_dir.glob("[0-9]*/*.plan.json"))
        outcome = runner.model(model_dir, manifests)
        marker.unlink(missing_ok=True)
        outcomes.append(outcome)
        if outcome.action == "tensorrt":
            try:
                switched(model_dir.name)
                runner.say(f"{model_dir.name}: the service serves it on TensorRT now")
            except Exception as exc:  # noqa: BLE001 - the engines are built; the next start serves them
                runner.say(f"{model_dir.name}: on TensorRT from the next start (the service did not reload it: {exc})")
    if not outcomes:
        runner.say("no deferred rebuilds")
    return outcomes

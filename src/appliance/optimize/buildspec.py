"""What a build asks for, and the decisions about it that need no TensorRT: flags, precision checks, messages.

:mod:`.builder` turns a :class:`BuildSpec` into TensorRT calls; everything here is plain Python and tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .calibration import CalibrationData
from .errors import OptimizeError
from .manifest import Profile


@dataclass(slots=True)
class BuildSpec:
    onnx_path: Path
    precision: str = "fp16"  # fp32 | fp16 | int8 | best
    profiles: list[Profile] = field(default_factory=list)
    workspace_bytes: int = 0  # 0: TensorRT's default
    timing_cache: Path | None = None  # read when present, written back after the build
    dla_core: int | None = None  # with GPU fallback for layers the DLA cannot run
    calibration: CalibrationData | None = None  # INT8 entropy calibration (implicit quantization)
    calibration_input: str = ""
    calibration_batch_size: int = 8
    calibration_cache: Path | None = None  # read when present (no data needed then), written after
    strongly_typed: bool = False  # a Q/DQ ONNX: the network's types decide, no precision flags


@dataclass(frozen=True, slots=True)
class BuildResult:
    plan: bytes
    builder_flags: list[str]
    tensorrt_version: str


class EngineBuilder(Protocol):
    """Builds a serialized engine; :func:`appliance.optimize.builder.build_engine` with TensorRT."""

    def __call__(self, spec: BuildSpec, progress: object) -> BuildResult: ...


def builder_flags(spec: BuildSpec, fast_fp16: bool, fast_int8: bool) -> list[str]:
    """The ``tensorrt.BuilderFlag`` names a build sets; OptimizeError when the platform lacks the precision.

    A strongly typed network (Q/DQ ONNX) takes its precisions from the graph: TensorRT rejects FP16/INT8
    flags on it. The DLA runs only FP16 and INT8 layers, so fp32 cannot go there.
    """
    flags: list[str] = []
    if spec.strongly_typed:
        if spec.precision not in ("int8", "best"):
            raise OptimizeError(
                f"{spec.onnx_path}: has QuantizeLinear/DequantizeLinear nodes, so it builds as "
                f"a strongly typed INT8 network; use --precision int8 (not {spec.precision})"
            )
    else:
        if spec.precision in ("fp16", "best"):
            if not fast_fp16:
                raise OptimizeError(
                    f"precision {spec.precision}: this platform has no fast FP16 "
                    "(builder.platform_has_fast_fp16 is false); use --precision fp32"
                )
            flags.append("FP16")
        if spec.precision in ("int8", "best"):
            if not fast_int8:
                raise OptimizeError(
                    f"precision {spec.precision}: this platform has no fast INT8 "
                    "(builder.platform_has_fast_int8 is false); use fp16 or fp32"
                )
            if spec.calibration is None and spec.calibration_cache is None:
                raise OptimizeError(
                    f"precision {spec.precision} needs --calibration-data DIR (entropy "
                    "calibration), a --calibration-cache, or a Q/DQ ONNX (explicit quantization)"
                )
            if spec.calibration is None and spec.calibration_cache is not None and not spec.calibration_cache.is_file():
                raise OptimizeError(
                    f"{spec.calibration_cache}: calibration cache does not exist; give "
                    "--calibration-data DIR to make it"
                )
            flags.append("INT8")
    if spec.dla_core is not None:
        if spec.precision == "fp32" and not spec.strongly_typed:
            raise OptimizeError("--dla-core: the DLA runs FP16 and INT8 only; use --precision fp16, int8 or best")
        flags.append("GPU_FALLBACK")
    return flags


class ParserErrorLike(Protocol):
    """``tensorrt.IParserError`` as far as messages need it (TensorRT 10: node(), node_name(), ...)."""

    def desc(self) -> str: ...
    def node(self) -> int: ...
    def node_name(self) -> str: ...
    def node_operator(self) -> str: ...


def parser_error_message(onnx_path: Path, errors: Sequence[ParserErrorLike]) -> str:
    """``model.onnx: TensorRT cannot parse node 3 'fc1' (op Gemm): <desc>``, one line per error."""
    lines = []
    for error in errors:
        where = "the model"
        if error.node() >= 0:
            where = f"node {error.node()} '{error.node_name()}' (op {error.node_operator()})"
        lines.append(f"{onnx_path}: TensorRT cannot parse {where}: {error.desc()}")
    return "\n".join(lines) or f"{onnx_path}: TensorRT cannot parse it (no parser error given)"

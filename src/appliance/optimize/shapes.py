"""Optimization profiles (min/opt/max input shapes): from ``--min/--opt/--max`` flags or from ``config.pbtxt``.

Flags use trtexec's spelling: ``input:1x3x224x224,mask:1x224`` (full shapes, batch included).

From ``config.pbtxt`` (with ``max_batch_size`` > 0 and static ``dims``) there is one profile per batch-size
range that the dynamic batcher aims for: with ``preferred_batch_size: [4, 8]`` and ``max_batch_size: 16`` the
profiles are 1..4 (opt 4), 5..8 (opt 8) and 9..16 (opt 16). At run time the backend picks the profile whose
range holds the batch, so each preferred size runs on kernels tuned for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from ..core import datatypes
from .errors import OptimizeError
from .manifest import Profile, TensorInfo


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX file, with -1 for dynamic dims."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise OptimizeError(f"{path}: no such ONNX file") from None
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, ValueError, ...
        raise OptimizeError(f"{path}: not a readable ONNX model ({exc})") from None
    initializers = {i.name for i in model.graph.initializer}

    def info(vi: Any) -> TensorInfo:
        elem = vi.type.tensor_type.elem_type
        dtype = datatypes.BY_ONNX[elem].config_name if elem in datatypes.BY_ONNX else f"ONNX_{elem}"
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        return TensorInfo(vi.name, dtype, dims)

    inputs = [info(i) for i in model.graph.input if i.name not in initializers]
    return inputs, [info(o) for o in model.graph.output]


def has_qdq(path: Path) -> bool:
    """Whether an ONNX graph carries QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def parse_shapes(text: str, flag: str) -> dict[str, list[int]]:
    """``name:1x3x224x224,other:1x8`` -> {name: [1, 3, 224, 224], other: [1, 8]}."""
    shapes: dict[str, list[int]] = {}
    for part in text.split(","):
        name, sep, dims = part.strip().rpartition(":")
        try:
            shape = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or any(d < 0 for d in shape):
            raise OptimizeError(f"{flag} '{part.strip()}': expected NAME:DxDxD, e.g. input:1x3x224x224")
        shapes[name] = shape
    return shapes


def profile_from_flags(minimum: str, optimum: str | None, maximum: str) -> Profile:
    mins = parse_shapes(minimum, "--min")
    maxs = parse_shapes(maximum, "--max")
    opts = parse_shapes(optimum, "--opt") if optimum else maxs
    if set(mins) != set(maxs) or set(opts) != set(mins):
        raise OptimizeError(
            f"--min, --opt and --max must name the same inputs (got {sorted(mins)}, {sorted(opts)}, {sorted(maxs)})"
        )
    profile: Profile = {}
    for name in mins:
        lo, mid, hi = mins[name], opts[name], maxs[name]
        if not len(lo) == len(mid) == len(hi) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise OptimizeError(
                f"input '{name}': shapes must satisfy min <= opt <= max in every dimension "
                f"(min {lo}, opt {mid}, max {hi})"
            )
        profile[name] = {"min": lo, "opt": mid, "max": hi}
    return profile


def profiles_from_config(config: mc.ModelConfig, where: str, inputs: list[TensorInfo]) -> list[Profile]:
    """Profiles from ``max_batch_size``, ``preferred_batch_size`` and the inputs' ``dims``."""
    mbs = config.max_batch_size
    if mbs <= 0:
        return []
    dims = {t.name: list(t.dims) for t in config.input}
    for t in inputs:  # inputs the config leaves out take the ONNX shape less the batch dimension
        dims.setdefault(t.name, t.dims[1:])
    for name, shape in dims.items():
        if any(d < 0 for d in shape):
            raise OptimizeError(f"{where}: input '{name}' has dynamic dims {shape}; give --min/--opt/--max")
    preferred = sorted({s for s in config.dynamic_batching.preferred_batch_size if 0 < s < mbs})
    profiles: list[Profile] = []
    low = 1
    for high in [*preferred, mbs]:
        profiles.append({n: {"min": [low, *s], "opt": [high, *s], "max": [high, *s]} for n, s in dims.items()})
        low = high + 1
    return profiles


def check_profiles(profiles: list[Profile], inputs: list[TensorInfo], onnx_path: Path) -> None:
    """Each profile covers every dynamic input, with the input's rank and its static dims."""
    dynamic = [t for t in inputs if any(d < 0 for d in t.dims)]
    if dynamic and not profiles:
        names = ", ".join(f"'{t.name}' {t.dims}" for t in dynamic)
        raise OptimizeError(
            f"{onnx_path}: inputs {names} have dynamic dims; give --min/--opt/--max or --config with max_batch_size"
        )
    by_name = {t.name: t for t in inputs}
    for i, profile in enumerate(profiles):
        for name, shapes in profile.items():
            if name not in by_name:
                raise OptimizeError(
                    f"profile {i}: '{name}' is not an input of {onnx_path} (inputs: {', '.join(by_name)})"
                )
            want = by_name[name].dims
            for key, shape in shapes.items():
                if len(shape) != len(want) or any(w >= 0 and w != s for w, s in zip(want, shape)):
                    raise OptimizeError(
                        f"profile {i}: {key} shape {shape} of '{name}' does not fit its ONNX "
                        f"shape {want} in {onnx_path}"
                    )
        for t in dynamic:
            if t.name not in profile:
                raise OptimizeError(f"profile {i} gives no shapes for dynamic input '{t.name}' of {onnx_path}")


def choose_profile(ranges: list[dict[str, tuple[list[int], list[int]]]], shapes: dict[str, tuple[int, ...]]) -> int:
    """The first profile whose min..max range holds every input shape; -1 when none does.

    ``ranges[i][name]`` is (min, max) of profile i. Profiles built from ``config.pbtxt`` are ordered by batch
    size, so the first that fits is the tightest.
    """
    for index, profile in enumerate(ranges):
        fits = True
        for name, shape in shapes.items():
            if name not in profile:
                continue
            lo, hi = profile[name]
            if len(lo) != len(shape) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                fits = False
                break
        if fits:
            return index
    return -1

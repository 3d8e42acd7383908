"""``trt-optimize`` (also ``appliance optimize``): ONNX in, TensorRT engine out, verified against the device.

Subcommands: ``build`` (ONNX -> engine + manifest in a model repository), ``verify`` (a repository's engines
against this device), ``boot`` (the first-boot flow: keep, rebuild or fall back), ``device`` (print this
device's description as JSON, for ``--device`` on other machines). Errors print one line naming the file,
never a stack trace; exit status 1 for errors and mismatches, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core import datatypes
from ..core.model_config import ConfigError, read_config
from .boot import Boot, Builder, rebuild_deferred
from .buildspec import BuildSpec, builder_flags
from .calibration import CalibrationData
from .device import DeviceInfo, read_device_json, this_device
from .errors import OptimizeError
from .manifest import ONNX_FILENAME, PRECISIONS, read_manifest, verify_engine
from .profile import parse_batch_sizes, profile_runner
from .progress import Progress
from .repository import CONFIG, EngineSource, use_tensorrt, write_engine
from .shapes import check_profiles, has_qdq, onnx_io, profile_from_flags, profiles_from_config
from .validate import random_inputs, validate

RunnerFactory = Callable[[Path, list[str]], Callable[[dict[str, NDArray[Any]]], Any]]


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text[-1:].upper() in units:
            return int(float(text[:-1]) * units[text[-1].upper()])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 2G, 512M or bytes, got '{text}'") from None


def build_parser(prog: str = "trt-optimize") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build TensorRT engines from ONNX models into a "
        "model repository, and verify them against the device.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build an engine from an ONNX file into a model repository version folder")
    b.add_argument(
        "onnx", type=Path, metavar="ONNX", help="the ONNX model (a Q/DQ model builds as strongly typed INT8)"
    )
    b.add_argument("--repository", type=Path, required=True, metavar="DIR", help="model repository to write into")
    b.add_argument("--model", required=True, metavar="NAME", help="model name (folder in the repository)")
    b.add_argument("--version", type=int, default=1, metavar="N", help="version folder (default 1)")
    b.add_argument("--precision", choices=PRECISIONS, default="fp16", help="default fp16")
    b.add_argument("--calibration-data", type=Path, metavar="DIR", help="INT8 entropy calibration: .npy or images")
    b.add_argument(
        "--calibration-cache",
        type=Path,
        metavar="FILE",
        help="calibration cache, read when present, written after calibration "
        "(default: calibration.cache in the version folder)",
    )
    b.add_argument("--calibration-batch-size", type=int, default=8, metavar="N")
    b.add_argument("--min", metavar="SHAPES", help="minimum shapes, NAME:1x3x224x224[,NAME:...]")
    b.add_argument("--opt", metavar="SHAPES", help="optimum shapes (default: --max)")
    b.add_argument("--max", metavar="SHAPES", help="maximum shapes")
    b.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="config.pbtxt to take profiles from (default: the model's own in the repository)",
    )
    b.add_argument("--timing-cache", type=Path, metavar="FILE", help="timing cache, reused and updated")
    b.add_argument("--workspace", type=_size, default=0, metavar="SIZE", help="workspace memory limit, e.g. 2G")
    b.add_argument("--dla-core", type=int, metavar="N", help="run on this DLA core, with GPU fallback")
    b.add_argument(
        "--device",
        type=Path,
        metavar="FILE",
        help="device description (JSON from 'trt-optimize device') recorded in the manifest; "
        "must agree with this machine where it can be detected",
    )
    b.add_argument("--validate", action="store_true", help="compare outputs with ONNX Runtime")
    b.add_argument("--profile", metavar="SIZES", help="measure latency and throughput at these batch sizes")
    b.add_argument("--iterations", type=int, default=100, metavar="N", help="timed runs per batch size")

    v = sub.add_parser("verify", help="check a repository's engines against this device; exit 1 on a mismatch")
    v.add_argument("repository", type=Path, metavar="DIR")
    v.add_argument("--model", metavar="NAME", help="only this model")
    v.add_argument("--device", type=Path, metavar="FILE", help="device description instead of this device")

    t = sub.add_parser("boot", help="first boot: keep matching engines, rebuild others, fall back to ONNX Runtime")
    t.add_argument("repository", type=Path, metavar="DIR")
    t.add_argument("--device", type=Path, metavar="FILE", help="device description instead of this device")
    t.add_argument("--timing-cache", type=Path, metavar="FILE", help="timing cache for rebuilds")
    t.add_argument(
        "--retry-fallbacks",
        action="store_true",
        help="try TensorRT again for models that fell back to ONNX Runtime at an earlier boot",
    )
    t.add_argument(
        "--shipped",
        type=Path,
        metavar="DIR",
        help="engines shipped with the image: install new ones into the repository first (see optimize/shipped.py)",
    )
    t.add_argument(
        "--defer-rebuilds",
        action="store_true",
        help="do not build now: a model whose engines do not match falls back to ONNX Runtime at once and is "
        "marked for rebuild-deferred (so boot never waits for a build)",
    )

    r = sub.add_parser(
        "rebuild-deferred",
        help="after boot: build the engines 'boot --defer-rebuilds' left, and have the service switch to them",
    )
    r.add_argument("repository", type=Path, metavar="DIR")
    r.add_argument("--device", type=Path, metavar="FILE", help="device description instead of this device")
    r.add_argument("--timing-cache", type=Path, metavar="FILE", help="timing cache for rebuilds")
    r.add_argument(
        "--service-url",
        metavar="URL",
        help="the appliance's REST address: each model whose engines are built is loaded again there (it swaps "
        "over with no request lost); none: the next start serves them",
    )
    r.add_argument("--admin-key-file", type=Path, metavar="FILE", help="an admin API key for --service-url")

    d = sub.add_parser("device", help="print this device's description as JSON")
    d.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help="read /proc, /sys, /etc from here")
    return parser


def _device(path: Path | None) -> DeviceInfo:
    return read_device_json(path) if path is not None else this_device()


def _check_description(described: DeviceInfo, here: DeviceInfo, path: Path) -> None:
    for what in ("tensorrt_version", "compute_capability"):
        mine, theirs = getattr(here, what), getattr(described, what)
        if mine and theirs and mine != theirs:
            raise OptimizeError(
                f"{path}: describes {what} {theirs}, but this machine has {mine}; build on the "
                "device the description is of"
            )


def _numpy_dtype(datatype: str, onnx: Path) -> np.dtype[Any]:
    if datatype not in datatypes.BY_CONFIG_NAME:
        raise OptimizeError(f"{onnx}: input type {datatype} is not supported")
    return datatypes.BY_CONFIG_NAME[datatype].dtype


def cmd_build(args: argparse.Namespace, builder: Builder | None, runner_factory: RunnerFactory | None) -> int:
    onnx_src: Path = args.onnx
    if not onnx_src.is_file():
        raise OptimizeError(f"{onnx_src}: no such ONNX file")
    inputs, outputs = onnx_io(onnx_src)
    device = this_device()
    if args.device is not None:
        described = read_device_json(args.device)
        _check_description(described, device, args.device)
        device = described
    model_dir = args.repository / args.model
    folder = model_dir / str(args.version)
    if args.min or args.max:
        if not (args.min and args.max):
            raise OptimizeError("--min and --max go together (and --opt, optionally)")
        profiles = [profile_from_flags(args.min, args.opt, args.max)]
    else:
        config_path = args.config or model_dir / CONFIG
        try:
            config = read_config(config_path)
        except ConfigError as exc:
            raise OptimizeError(str(exc)) from None
        profiles = profiles_from_config(config, str(config_path), inputs)
    check_profiles(profiles, inputs, onnx_src)
    strongly_typed = has_qdq(onnx_src)
    spec = BuildSpec(
        onnx_path=folder / ONNX_FILENAME,
        precision=args.precision,
        profiles=profiles,
        workspace_bytes=args.workspace,
        timing_cache=args.timing_cache,
        dla_core=args.dla_core,
        calibration_batch_size=args.calibration_batch_size,
        strongly_typed=strongly_typed,
    )
    if args.precision in ("int8", "best") and not strongly_typed:
        default_cache = folder / "calibration.cache"
        if args.calibration_cache is not None or args.calibration_data is not None or default_cache.is_file():
            spec.calibration_cache = args.calibration_cache or default_cache
        if args.calibration_data is not None:
            if len(inputs) != 1:
                raise OptimizeError(
                    f"{onnx_src}: calibration data feeds models with one input; this one has "
                    f"{len(inputs)}: use a calibration cache or a Q/DQ ONNX"
                )
            sample = profiles[0][inputs[0].name]["opt"][1:] if profiles else inputs[0].dims[1:]
            spec.calibration = CalibrationData(
                args.calibration_data, tuple(sample), _numpy_dtype(inputs[0].datatype, onnx_src)
            )
            spec.calibration_input = inputs[0].name
    builder_flags(spec, fast_fp16=True, fast_int8=True)  # the choices themselves, before any slow step
    folder.mkdir(parents=True, exist_ok=True)
    if onnx_src.resolve() != spec.onnx_path.resolve():
        shutil.copyfile(onnx_src, spec.onnx_path)
    if builder is None:
        from .builder import build_engine

        builder = build_engine
    print(
        f"building {spec.onnx_path} ({spec.precision}{', strongly typed' if strongly_typed else ''}, "
        f"{len(profiles)} profiles) for {device.gpu_name or 'this GPU'}",
        file=sys.stderr,
    )
    result = builder(spec, Progress(sys.stderr))
    cache_name = (
        spec.calibration_cache.name if spec.calibration_cache and spec.calibration_cache.parent == folder else ""
    )
    manifest = write_engine(folder, spec, result, device, EngineSource(inputs, outputs, cache_name))
    config_path = use_tensorrt(model_dir, manifest)
    print(
        f"wrote {folder / manifest.plan_file} ({len(result.plan)} bytes) and {manifest.plan_file}.json; "
        f"{config_path} uses it"
    )

    status = 0
    if args.validate or args.profile:
        if runner_factory is None:
            from .builder import engine_runner as runner_factory
        assert runner_factory is not None
        runner = runner_factory(folder / manifest.plan_file, [o.name for o in outputs])

        def shapes_at(batch: int | None) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
            out = {}
            for t in inputs:
                shape = profiles[-1][t.name]["opt"] if profiles and t.name in profiles[-1] else t.dims
                if batch is not None and shape and t.dims[0] == -1:
                    shape = [batch, *shape[1:]]
                out[t.name] = (tuple(shape), _numpy_dtype(t.datatype, onnx_src))
            return out

        if args.validate:
            report = validate(spec.onnx_path, runner, random_inputs(shapes_at(None)), args.precision)
            print("\n".join(report.lines()))
            status = 0 if report.passed else 1
        if args.profile:
            try:
                sizes = parse_batch_sizes(args.profile)
            except ValueError as exc:
                raise OptimizeError(str(exc)) from None
            for row in profile_runner(runner, lambda b: random_inputs(shapes_at(b)), sizes, args.iterations):
                print(row.line())
    return status


def cmd_verify(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if not args.repository.is_dir():
        raise OptimizeError(f"{args.repository}: model repository does not exist")
    pattern = f"{args.model}/[0-9]*/*.plan.json" if args.model else "*/[0-9]*/*.plan.json"
    manifests = sorted(args.repository.glob(pattern))
    if not manifests:
        print(f"{args.repository}: no engines (no */<version>/*.plan.json manifests)")
        return 0
    mismatches = 0
    for path in manifests:
        label = f"{path.parent.parent.name}/{path.parent.name}/{path.name.removesuffix('.json')}"
        try:
            diffs = [str(d) for d in verify_engine(read_manifest(path), path.parent, device)]
        except OptimizeError as exc:
            diffs = [exc.message]
        if diffs:
            mismatches += 1
            print(f"{label}: MISMATCH")
            for diff in diffs:
                print(f"  - {diff}")
        else:
            print(f"{label}: ok")
    print(f"{len(manifests) - mismatches} of {len(manifests)} engines match this device")
    return 1 if mismatches else 0


def main(
    argv: Sequence[str] | None = None,
    prog: str = "trt-optimize",
    builder: Builder | None = None,
    runner_factory: RunnerFactory | None = None,
) -> int:
    """Entry point; ``builder`` and ``runner_factory`` replace the TensorRT ones (tests, other builders)."""
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "build":
            return cmd_build(args, builder, runner_factory)
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "boot":
            if builder is None:
                from .builder import build_engine

                builder = build_engine
            if args.shipped is not None:
                from .shipped import install_shipped

                install_shipped(args.shipped, args.repository, sys.stdout)
            Boot(
                args.repository,
                _device(args.device),
                builder,
                sys.stdout,
                args.timing_cache,
                args.retry_fallbacks,
                args.defer_rebuilds,
            ).run()
            return 0
        if args.command == "rebuild-deferred":
            if builder is None:
                from .builder import build_engine

                builder = build_engine
            key = args.admin_key_file.read_text().strip() if args.admin_key_file else None
            switched = partial(_load_again, args.service_url, key) if args.service_url else (lambda model: None)
            rebuild_deferred(args.repository, _device(args.device), builder, sys.stdout, args.timing_cache, switched)
            return 0
        if args.command == "device":
            from .device import describe_device, import_tensorrt

            trt, cuda = import_tensorrt() if args.root == Path("/") else (None, None)
            sys.stdout.write(describe_device(args.root, trt, cuda).to_json())
            return 0
    except OptimizeError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())


def _load_again(url: str, key: str | None, model: str) -> None:
    """Ask the service to load ``model`` again (its config now names TensorRT): a hot swap."""
    import urllib.parse
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    path = f"{url.rstrip('/')}/v2/repository/models/{urllib.parse.quote(model, safe='')}/load"
    with urllib.request.urlopen(urllib.request.Request(path, b"{}", headers, method="POST"), timeout=600):
        pass

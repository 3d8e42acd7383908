"""Serving benchmark: closed-loop load (batch-1 requests by default) on the appliance, NVIDIA Triton, Seldon
MLServer and the grpc.aio floor, side by side.

    python benchmarks/serving.py                       # everything, 8 s a point (~14 min)
    python benchmarks/serving.py --rounds 3            # the same, each point's median of 3 interleaved rounds
    python benchmarks/serving.py --model-repository R --models resnet50 --targets appliance \
        --transports grpc --batch-size 16 --concurrency 2,4 --max-queue-delay-us 2000
    python benchmarks/serving.py --url orin.local:8000:8001 --models resnet50 --batch-size 16 ...
    python benchmarks/serving.py --targets triton --models mlp --duration 2 --concurrency 1,64
    python benchmarks/serving.py --soak 600            # RSS of our server under gRPC c=64 for 10 min

All targets' servers run at once; each point is measured on every target in turn, ``--rounds`` times.
Each point runs in a fresh client process (tritonclient; gRPC through grpc.aio, REST through gevent
greenlets with binary tensors, shm as gRPC with system shared memory regions). CPU is read with psutil at
the edges of the measured window, for the client process, for the server process and all its children, and
for everything else on the machine ("other": noise from other work; the figures mean little when it is
high).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/serving.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loadgen import SHM_EXTENSION
from benchmarks.measure import Point, SoakResult, as_dict, onnxruntime_reference, run_point, run_soak
from benchmarks.mlserver_target import DEFAULT_WORKERS as MLSERVER_WORKERS
from benchmarks.report import evaluate_targets, format_points, format_references, format_soak, format_targets
from benchmarks.servers import (
    GRPC_FLOOR_TARGETS,
    RunningServer,
    ServerStartError,
    prepare_onnx_repository,
    remote_server,
    running_server,
    server_extensions,
    wait_models_ready,
)

TARGETS = ("appliance", "triton", *GRPC_FLOOR_TARGETS, "mlserver")
DEFAULT_TARGETS = ("appliance", "triton", "grpc-floor", "mlserver")
TRANSPORTS = ("grpc", "http", "json", "shm")


def _csv(kind: type, choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/serving.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Targets from issue 8 (ratios of one run on the 2-core machine, batch-1 points, delay 0): "
            "image c=16 >= Triton's req/s over gRPC and over REST binary; image over shm c=16 >= 2x our "
            "own gRPC req/s and >= Triton's shm req/s; every point >= 2x MLServer's req/s; MLP gRPC c=64 "
            "server CPU per request <= 1.25x the grpc.aio floor's; CNN gRPC c=64 >= Triton's req/s; c=1 "
            "p50 <= Triton's over gRPC and REST. --soak judges issue 3's RSS target (steady for 10 min)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--targets",
        type=_csv(str, TARGETS),
        default=",".join(DEFAULT_TARGETS),
        help="servers to measure: appliance (`appliance serve`), triton (the real "
        "tritonserver 2.51 from nvidia-pytriton, python backend running the same ONNX), "
        "grpc-floor (grpc.aio answering canned responses: the Python gRPC stack's ceiling), "
        "grpc-minimal (grpc.aio running the model with the least work: no checks, queue, batching or "
        "statistics; gRPC and shm; not measured unless named), grpc-minimal-batch and grpc-minimal-batch-inline "
        "(grpc-minimal batching the requests that wait while a run is busy, running on a thread or on the loop), "
        "mlserver (Seldon MLServer from benchmarks/.venv-mlserver, a custom runtime running the same "
        "ONNX, adaptive batching on; REST with JSON tensors, no shm)",
    )
    parser.add_argument(
        "--models",
        type=_csv(str),
        default="mlp,cnn,image",
        help="models of the repository to load (default repository: mlp is overhead-bound, cnn "
        "compute-bound, image [B,3,224,224] data-bound)",
    )
    parser.add_argument(
        "--transports",
        type=_csv(str, TRANSPORTS),
        default="grpc,http,shm",
        help="grpc (tritonclient.grpc.aio), http (tritonclient.http, binary tensors; MLServer gets "
        "json instead), json (tritonclient.http, JSON tensors), shm (gRPC with system shared memory; "
        "only for --shm-models, skipped on a server whose metadata does not announce "
        "system_shared_memory)",
    )
    parser.add_argument(
        "--shm-models",
        type=_csv(str),
        default="image",
        help="models measured over the shm transport (it pays off for large tensors only)",
    )
    parser.add_argument(
        "--concurrency",
        type=_csv(int),
        default="1,16,64",
        help="requests kept in flight (closed loop), one point per value",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="samples a request: the first dimension of each batched input (-1 in the model "
        "metadata); the table shows req/s and samples/s (req/s x N)",
    )
    parser.add_argument(
        "--url",
        default=None,
        metavar="HOST[:HTTP[:GRPC]]",
        help="measure a server already running there (e.g. `appliance serve` on a Jetson; "
        "ports default 8000:8001) instead of starting --targets; its CPU is not read "
        "(server %% shows 0) and its config is its own (--max-queue-delay-us only labels)",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=_csv(int),
        default="0",
        metavar="US[,US]",
        help="dynamic_batching max_queue_delay_microseconds written into each config; one "
        "server start per value (e.g. 0,10000)",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per point")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="measure every point N times, each round over all targets in turn (all servers run at once); the "
        "results and the verdicts use each point's median round by req/s",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of the same load before each measured window"
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="Triton-layout ONNX repository to use instead of the default one (demo mlp and cnn, and "
        "benchmarks/image_model.py's image; copied first)",
    )
    parser.add_argument(
        "--grpc-client",
        choices=("aio", "threads"),
        default="aio",
        help="gRPC client: one grpc.aio channel, or one sync client per thread",
    )
    parser.add_argument(
        "--http-client",
        choices=("gevent", "threads", "aio"),
        default="gevent",
        help="REST client: gevent greenlets on one pool, one sync client per thread, or http.aio",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the in-process ONNX Runtime batch-32 reference"
    )
    parser.add_argument("--reference-batch", type=int, default=32, help="batch of the in-process reference")
    parser.add_argument(
        "--appliance-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `appliance serve` (repeat for several)",
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=MLSERVER_WORKERS,
        metavar="N",
        help="MLServer's parallel_workers (0: inference in the server process, its best on 2 cores)",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="instead of the matrix: gRPC c=64 on --soak-model against the appliance for "
        "SECONDS, sampling the server's RSS every --soak-interval",
    )
    parser.add_argument("--soak-model", default="mlp", help="model of the soak")
    parser.add_argument("--soak-interval", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--soak-target", choices=TARGETS, default="appliance", help="server of the soak")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where repositories and server logs go; None: a temporary folder, removed at the end",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write all results here")
    return parser


def _echo(text: str) -> None:
    print(text, flush=True)


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_references(args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    references: dict[str, Any] = {}
    for model in args.models:
        path = repo / model / "1" / "model.onnx"
        if not path.exists():
            continue
        ref = onnxruntime_reference(path, args.reference_batch, args.duration)
        references[model] = ref
        _echo(
            f"  in-process ONNX Runtime {model}: {ref['samples_per_s']:,.0f} samples/s at batch "
            f"{ref['batch']} ({ref['threads']} threads, {ref['ms_per_batch']:.2f} ms a batch)"
        )
    return references


def run_matrix(args: argparse.Namespace, workdir: Path) -> tuple[list[Point], list[Point], list[str], list[str]]:
    """Every point on every target, ``--rounds`` times; returns each point's median round, every round's points,
    the failures and the points skipped (and why)."""
    rounds: dict[tuple[str, str, str, int, int], list[Point]] = {}
    failures: list[str] = []
    skipped: list[str] = []
    for delay in args.max_queue_delay_us:
        with contextlib.ExitStack() as stack:
            servers = _start_servers(args, workdir, delay, stack, failures)
            if servers:
                names = ", ".join(server.target for server in servers)
                _echo(f"== {names}, max_queue_delay_us={delay}, {args.rounds} round(s), each point on each in turn")
                _measure_rounds(args, servers, delay, rounds, failures, skipped)
    everything = [point for points in rounds.values() for point in points]
    return [median_point(points) for points in rounds.values()], everything, failures, skipped


def median_point(points: list[Point]) -> Point:
    """The round of median req/s (its latency and CPU figures belong to the same window)."""
    return sorted(points, key=lambda p: p.rps)[len(points) // 2]


def _start_servers(
    args: argparse.Namespace, workdir: Path, delay: int, stack: contextlib.ExitStack, failures: list[str]
) -> list[RunningServer]:
    """The servers of the run, all started before the first point (a server that fails to start is left out)."""
    if args.url:
        _echo(f"== {args.url} (already running; delay {delay} us is a label only)")
        try:
            server = remote_server(args.url)
            wait_models_ready(server, args.models)
            return [server]
        except (ServerStartError, RuntimeError, TimeoutError) as exc:
            failures.append(f"{args.url}: {exc}")
            _echo(f"!! {args.url}: {exc}")
            return []
    repo = prepare_onnx_repository(workdir / f"onnx-{delay}", args.model_repository, delay)
    servers = []
    for target in args.targets:
        try:
            server = stack.enter_context(
                running_server(target, repo, workdir / f"{target}-{delay}", args.appliance_arg, args.mlserver_workers)
            )
            if target not in GRPC_FLOOR_TARGETS:  # no REST, so no HTTP readiness to wait for
                wait_models_ready(server, args.models)
            servers.append(server)
        except (ServerStartError, RuntimeError, TimeoutError) as exc:
            message = f"{target} (delay {delay} us): {exc}"
            failures.append(message)
            _echo(f"!! {message}")
    return servers


def _transport_for(
    args: argparse.Namespace, server: RunningServer, model: str, transport: str, skipped: list[str]
) -> str:
    """What ``transport`` becomes on ``server`` for ``model``: itself, ``json`` for MLServer's REST, or "" to skip
    (a skip is printed once per server)."""
    if server.target == "grpc-floor" and transport != "grpc":
        return ""  # the floor is gRPC only (canned answers: shm would carry no data)
    if server.target in GRPC_FLOOR_TARGETS and transport not in ("grpc", "shm"):
        return ""
    if server.target == "mlserver" and transport == "http":
        return "json"  # MLServer has no binary tensor extension: its REST is measured with JSON
    if transport == "shm":
        if model not in args.shm_models:
            return ""
        if SHM_EXTENSION not in server_extensions(server):
            note = f"{server.target} shm: skipped: server does not announce {SHM_EXTENSION}"
            if note not in skipped:
                skipped.append(note)
                _echo(f"  {note}")
            return ""
    return transport


def _measure_rounds(
    args: argparse.Namespace,
    servers: list[RunningServer],
    delay: int,
    rounds: dict[tuple[str, str, str, int, int], list[Point]],
    failures: list[str],
    skipped: list[str],
) -> None:
    """Each model x transport x concurrency point on each server in turn, ``--rounds`` times: the targets' figures
    for one point are taken minutes apart at most, whatever the length of the run."""
    dead: set[str] = set()
    for round_ in range(1, args.rounds + 1):
        if args.rounds > 1:
            _echo(f"-- round {round_} of {args.rounds}")
        measured: set[tuple[str, str, str, int, int]] = set()  # MLServer's http and json are both its json
        for model in args.models:
            for wanted in args.transports:
                for concurrency in args.concurrency:
                    for server in servers:
                        transport = _transport_for(args, server, model, wanted, skipped)
                        if not transport or server.target in dead:
                            continue
                        key = (server.target, model, transport, concurrency, delay)
                        if key in measured:
                            continue
                        measured.add(key)
                        point = _run(args, server, model, transport, concurrency, delay, failures)
                        if point is not None:
                            rounds.setdefault(key, []).append(point)
                        elif server.process is not None and server.process.poll() is not None:
                            dead.add(server.target)
                            failures.append(f"{server.target} exited (log {server.log_path})")


def _run(
    args: argparse.Namespace,
    server: RunningServer,
    model: str,
    transport: str,
    concurrency: int,
    delay: int,
    failures: list[str],
) -> Point | None:
    mode = {"grpc": args.grpc_client, "http": args.http_client}.get(transport, "")
    try:
        point = run_point(
            server, model, transport, concurrency, args.duration, args.warmup, delay, mode, args.batch_size
        )
    except (RuntimeError, TimeoutError) as exc:
        message = f"{server.target} {model} {transport} c={concurrency} batch {args.batch_size} delay {delay}: {exc}"
        failures.append(message)
        _echo(f"!! {message}")
        return None
    _echo(format_points([point], header=False))
    return point


def soak(args: argparse.Namespace, workdir: Path) -> SoakResult:
    delay = args.max_queue_delay_us[0]
    repo = prepare_onnx_repository(workdir / f"onnx-{delay}", args.model_repository, delay)
    with running_server(
        args.soak_target, repo, workdir / f"soak-{args.soak_target}", args.appliance_arg, args.mlserver_workers
    ) as server:
        wait_models_ready(server, [args.soak_model])
        _echo(
            f"== soak: {args.soak_target}, {args.soak_model}, gRPC c=64, {args.soak:.0f} s, "
            f"RSS every {args.soak_interval:.0f} s"
        )
        return run_soak(server, args.soak_model, args.soak, args.warmup, args.soak_interval, echo=_echo)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, which stop the servers


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.url and args.soak > 0:
        parser.error("--soak reads the server's RSS: it starts the server here; leave out --url")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    _echo(
        f"machine: {report['machine']['cpus']} CPUs, load average {report['machine']['loadavg'][0]:.2f} "
        f"(client and server share it; 'other' CPU below is everything else running)"
    )
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.soak > 0:
            result = soak(args, workdir)
            report["soak"] = as_dict(result)
            _echo(format_soak(result))
            _echo(format_targets(evaluate_targets([], {}, result), title="target (issue 3)"))
        else:
            references: dict[str, Any] = {}
            if not args.no_reference:
                _echo("== in-process ONNX Runtime reference")
                references = run_references(
                    args, prepare_onnx_repository(workdir / "onnx-ref", args.model_repository, None)
                )
            _echo(format_points([], header=True))
            points, every_round, failures, skipped = run_matrix(args, workdir)
            report.update(
                references=references,
                points=[as_dict(p) for p in points],
                rounds=[as_dict(p) for p in every_round],
                failures=failures,
                skipped=skipped,
            )
            _echo(
                "\n== results"
                + (f" (each point's median of {args.rounds} rounds, by req/s)" if args.rounds > 1 else "")
            )
            _echo(format_points(points, header=True))
            if references:
                _echo(format_references(references))
            targets = evaluate_targets(points, references, None)
            report["targets"] = targets
            _echo(format_targets(targets))
            for note in skipped:
                _echo(f"-- {note}")
            for failure in failures:
                _echo(f"!! {failure.splitlines()[0]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        _echo(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

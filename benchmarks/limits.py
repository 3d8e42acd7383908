"""What bounds issue 8's unmet targets on this machine, measured side by side in one run.

The reference throughout is the grpc-minimal server (``grpc_floor.py --minimal``): grpc.aio running the model
with the least work any server running it must do (read the inputs, run ONNX Runtime on the request alone,
write the outputs; no checks, queue, batching or statistics), in a process set up as the appliance's. Where it
misses a target, no Python server on grpc.aio and ONNX Runtime meets it on this machine, whatever its design.

1. MLP, gRPC, c=64, server CPU per request at most 1.25x the grpc.aio floor's (canned answers): grpc-minimal's
   ratio to the floor beside the appliance's.
2. CNN, gRPC, c=64, at least Triton's req/s: grpc-minimal in its three forms, without batching and batching
   (``grpc-minimal-batch``: the requests that wait while a run is busy form the next batch, run on a thread beside
   the loop; ``grpc-minimal-batch-inline``: the same on the loop). A CPU budget as well: a request costs at least
   the floor's server CPU for the CNN, plus ONNX Runtime's CPU for one CNN sample at its cheapest batch size (in
   process, one intra-op thread), plus the client's CPU per request (the cheapest of the run's CNN points). The
   machine's cores divided by that sum is the most the cores allow, if nothing else bound it.
3. The image model over shared memory, c=16, at least 2x our gRPC and at least Triton's shm req/s: grpc-minimal
   over shm in its three forms, and the same budget (the floor's CPU for a tiny request, MLP at c=16: a shm
   request carries region names only).
4. MLP, gRPC, c=1: p50 at most Triton's, and req/s at least 2x MLServer's (the lowest of the every-point target):
   grpc-minimal's p50 and req/s beside both (at c=1 a request is always alone, so batching cannot help).

Then where the cost lies:

5. Where the image model's execution runs, over shared memory at c=16: on the instance thread (the appliance as
   it is), nowhere (``stages.py``'s ``no-execution``: the front alone), and in a separate process (its
   ``executor-process`` probe), beside Triton's shm.
6. Where the appliance's own cost goes on the wire: the MLP at gRPC c=64 on ``benchmarks/stages.py``'s
   appliance cut after each stage of a request (a canned answer at once, after decoding, after the data plane,
   ONNX Runtime's run replaced by a recorded answer, the whole path), beside the in-process cost of the same
   handler (``hotpath.py``).

Points are interleaved over ``--rounds`` rounds (these machines are noisy) and the medians are used. MLServer
comes from ``benchmarks/.venv-mlserver`` (see ``serving.py``); without it, its point is left out.

    python benchmarks/limits.py                      # 3 rounds of 6 s points, about 20 minutes
    python benchmarks/limits.py --rounds 5 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/limits.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import Point, onnxruntime_reference, run_point
from benchmarks.report import (
    CPU_OVER_FLOOR,
    IMAGE_CONCURRENCY,
    OVER_MLSERVER,
    SHM_OVER_GRPC,
    format_points,
    server_us_per_request,
)
from benchmarks.servers import (
    GRPC_FLOOR_TARGETS,
    MINIMAL_BATCH,
    RunningServer,
    ServerStartError,
    prepare_onnx_repository,
    running_appliance,
    running_server,
    wait_models_ready,
)
from benchmarks.stages import PROBES, STAGES, stage_program

# (server, model, transport, concurrency) of each point of a round
MINIMAL = "grpc-minimal"
MINIMAL_FORMS = (MINIMAL, *MINIMAL_BATCH)  # without batching, batching on a thread, batching on the loop
POINTS: tuple[tuple[str, str, str, int], ...] = (
    ("grpc-floor", "mlp", "grpc", 64),
    (MINIMAL, "mlp", "grpc", 64),
    ("appliance", "mlp", "grpc", 64),
    ("grpc-floor", "cnn", "grpc", 64),
    *((form, "cnn", "grpc", 64) for form in MINIMAL_FORMS),
    ("triton", "cnn", "grpc", 64),
    ("appliance", "cnn", "grpc", 64),
    ("grpc-floor", "mlp", "grpc", IMAGE_CONCURRENCY),
    ("appliance", "image", "grpc", IMAGE_CONCURRENCY),
    *((form, "image", "shm", IMAGE_CONCURRENCY) for form in MINIMAL_FORMS),
    ("appliance", "image", "shm", IMAGE_CONCURRENCY),
    ("triton", "image", "shm", IMAGE_CONCURRENCY),
    (MINIMAL, "mlp", "grpc", 1),
    ("appliance", "mlp", "grpc", 1),
    ("triton", "mlp", "grpc", 1),
    ("mlserver", "mlp", "grpc", 1),
)
POINTS += tuple((f"stage:{stage}", "mlp", "grpc", 64) for stage in STAGES)
POINTS += tuple((f"stage:{probe}", "image", "shm", IMAGE_CONCURRENCY) for probe in PROBES)
BATCHES = (1, 2, 4, 8, 16)


def cores() -> int:
    return len(os.sched_getaffinity(0))


def handler_cpu_us(count: int) -> float:
    """The appliance's CPU for one MLP request through its gRPC handler, in process (``hotpath.py``)."""
    import uvloop

    from appliance.demo import write_demo_repository
    from benchmarks.hotpath import measure

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_demo_repository(repo)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(measure(repo, ["mlp"], count, profile=False))["mlp"]


def compute_cpu_us(model_path: Path, seconds: float) -> dict[int, float]:
    """ONNX Runtime's CPU microseconds per sample by batch size, one intra-op thread, in process."""
    costs = {}
    for batch in BATCHES:
        ref = onnxruntime_reference(model_path, batch=batch, duration_s=seconds, threads=1)
        costs[batch] = ref["cpu_pct"] / 100 / ref["samples_per_s"] * 1e6
    return costs


def client_us(p: Point) -> float:
    return p.client_cpu_pct / 100 / p.rps * 1e6 if p.rps > 0 else float("inf")


@contextlib.contextmanager
def servers(repo: Path, workdir: Path) -> Iterator[dict[str, RunningServer]]:
    with contextlib.ExitStack() as stack:
        started = {
            target: stack.enter_context(running_server(target, repo, workdir))
            for target in ("appliance", "triton", *GRPC_FLOOR_TARGETS)
        }
        try:
            started["mlserver"] = stack.enter_context(running_server("mlserver", repo, workdir))
        except ServerStartError as exc:
            print(f"mlserver left out: {exc}", file=sys.stderr)
        for stage in STAGES + PROBES:
            started[f"stage:{stage}"] = stack.enter_context(
                running_appliance(repo, workdir / f"stage-{stage}", program=stage_program(stage))
            )
        for name in started:
            if name not in GRPC_FLOOR_TARGETS:
                wait_models_ready(started[name], ["mlp", "cnn", "image"])
        yield started


def median_point(points: list[Point]) -> Point:
    """The point of median req/s (its CPU figures belong to the same window)."""
    return sorted(points, key=lambda p: p.rps)[len(points) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every point")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds a point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window")
    parser.add_argument("--count", type=int, default=20000, help="in-process requests for the handler's cost")
    args = parser.parse_args()

    work_us = handler_cpu_us(args.count)
    print(f"appliance handler in process (hotpath.py, mlp): {work_us:.1f} us of CPU a request")
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare_onnx_repository(Path(tmp) / "repo")
        compute = {m: compute_cpu_us(repo / m / "1" / "model.onnx", 1.0) for m in ("cnn", "image")}
        for model, costs in compute.items():
            row = ", ".join(f"batch {b}: {us:.0f}" for b, us in costs.items())
            print(f"ONNX Runtime CPU us a sample, 1 intra-op thread, {model}: {row}")
        runs: dict[tuple[str, str, str, int], list[Point]] = {key: [] for key in POINTS}
        with servers(repo, Path(tmp) / "work") as started:
            for round_ in range(args.rounds):
                for key in POINTS:
                    target, model, transport, concurrency = key
                    if target not in started:
                        continue
                    point = run_point(started[target], model, transport, concurrency, args.duration, args.warmup, 0)
                    point.target = target
                    runs[key].append(point)
                    print(format_points([point], header=round_ == 0 and key == POINTS[0]), flush=True)
    best = {key: median_point(points) for key, points in runs.items() if points}
    print(f"\nmedians of {args.rounds} rounds:")
    print(format_points(list(best.values())))
    print()
    for line in verdicts(best, work_us, compute):
        print(line)
    return 0


def verdicts(
    best: dict[tuple[str, str, str, int], Point], work_us: float, compute: dict[str, dict[int, float]]
) -> list[str]:
    def us(target: str, model: str, transport: str, concurrency: int) -> float:
        return server_us_per_request(best[(target, model, transport, concurrency)]) or float("nan")

    lines = []
    floor, minimal, ours = (us(t, "mlp", "grpc", 64) for t in ("grpc-floor", MINIMAL, "appliance"))
    reach = (
        "out of reach for any grpc.aio server running the model" if minimal > CPU_OVER_FLOOR * floor else "reachable"
    )
    lines.append(
        f"mlp gRPC c=64 CPU <= {CPU_OVER_FLOOR}x floor: floor {floor:.0f} us/req; grpc-minimal {minimal:.0f} "
        f"({minimal / floor:.2f}x): {reach}; appliance {ours:.0f} ({ours / floor:.2f}x, {ours - minimal:+.0f} us "
        "over grpc-minimal)"
    )

    def budget(floor_us: float, compute_us: float, clients: list[Point]) -> tuple[float, str]:
        """The most req/s the cores allow, and how it was reckoned."""
        client = min(map(client_us, clients))
        bound = cores() * 1e6 / (floor_us + compute_us + client)
        return bound, (
            f"budget {cores()} cores / (floor {floor_us:.0f} + compute {compute_us:.0f} + client {client:.0f} us) = "
            f"{bound:,.0f} req/s at most"
        )

    cnn = [best[(t, "cnn", "grpc", 64)] for t in ("grpc-floor", "triton", "appliance")]
    cnn_bound, reckoned = budget(us("grpc-floor", "cnn", "grpc", 64), min(compute["cnn"].values()), cnn)
    triton_cnn = best[("triton", "cnn", "grpc", 64)].rps
    forms = {form: best[(form, "cnn", "grpc", 64)].rps for form in MINIMAL_FORMS}
    lines.append(
        f"cnn gRPC c=64 >= Triton's {triton_cnn:,.0f} req/s: "
        + ", ".join(f"{form} {rps:,.0f} ({rps / triton_cnn:.2f}x)" for form, rps in forms.items())
        + (
            ": out of reach for any grpc.aio server running the model, batching or not"
            if max(forms.values()) < triton_cnn
            else ": reachable"
        )
        + f"; appliance {best[('appliance', 'cnn', 'grpc', 64)].rps:,.0f}; {reckoned}"
    )

    c = IMAGE_CONCURRENCY
    shm = [best[(t, "image", "shm", c)] for t in ("appliance", "triton")]
    shm_bound, reckoned = budget(us("grpc-floor", "mlp", "grpc", c), min(compute["image"].values()), shm)
    need = max(SHM_OVER_GRPC * best[("appliance", "image", "grpc", c)].rps, best[("triton", "image", "shm", c)].rps)
    forms = {form: best[(form, "image", "shm", c)].rps for form in MINIMAL_FORMS}
    lines.append(
        f"image shm c={c} >= {SHM_OVER_GRPC}x our gRPC and >= Triton's shm ({need:,.0f} req/s): {reckoned}: "
        + ("out of reach in one grpc.aio process" if shm_bound < need else "within the budget")
        + "; "
        + ", ".join(f"{form} {rps:,.0f} at {us(form, 'image', 'shm', c):.0f} us/req" for form, rps in forms.items())
        + ("" if max(forms.values()) >= need else " (short: out of reach for any grpc.aio server running the model)")
        + f"; appliance {shm[0].rps:,.0f} at {us('appliance', 'image', 'shm', c):.0f} us/req"
    )

    lone = {t: best[(t, "mlp", "grpc", 1)] for t in (MINIMAL, "appliance", "triton")}
    p50 = {t: p.p50_ms or float("nan") for t, p in lone.items()}
    lines.append(
        f"mlp gRPC c=1 p50 <= Triton's {p50['triton']:.2f} ms: grpc-minimal {p50[MINIMAL]:.2f} ms: "
        + ("out of reach for any grpc.aio server" if p50[MINIMAL] > p50["triton"] else "reachable")
        + f"; appliance {p50['appliance']:.2f} ms"
    )
    mlserver = best.get(("mlserver", "mlp", "grpc", 1))
    if mlserver is not None:
        need = OVER_MLSERVER * mlserver.rps
        lines.append(
            f"mlp gRPC c=1 >= {OVER_MLSERVER:g}x MLServer ({need:,.0f} req/s): grpc-minimal {lone[MINIMAL].rps:,.0f}: "
            + ("out of reach for any grpc.aio server" if lone[MINIMAL].rps < need else "reachable")
            + f"; appliance {lone['appliance'].rps:,.0f}"
        )

    where = [("instance thread", "appliance"), *((probe, f"stage:{probe}") for probe in PROBES), ("triton", "triton")]
    lines.append(
        f"image shm c={c}, where execution runs: "
        + ", ".join(
            f"{label} {best[(target, 'image', 'shm', c)].rps:,.0f} req/s at {us(target, 'image', 'shm', c):.0f} us/req"
            for label, target in where
        )
    )

    stage_us = [us(f"stage:{stage}", "mlp", "grpc", 64) for stage in STAGES]
    steps = ", ".join(
        f"{stage} {cost:.0f}" + (f" ({cost - stage_us[i - 1]:+.0f})" if i else "")
        for i, (stage, cost) in enumerate(zip(STAGES, stage_us))
    )
    lines.append(
        f"mlp gRPC c=64 server CPU us/req by stage: {steps}; on the wire the path after the canned answer costs "
        f"{stage_us[-1] - stage_us[0]:.0f} us, in process {work_us:.0f} us"
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())

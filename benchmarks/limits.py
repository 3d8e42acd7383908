"""What bounds issue 8's unmet targets on this machine, measured side by side in one run.

Five checks; the first three each bound a target (``report.py`` holds the targets), the last two say where
the cost lies:

1. MLP, gRPC, c=64, server CPU per request at most 1.25x the grpc.aio floor's. The floor (canned answers) is
   run twice: as is, and spending W us of CPU in each ModelInfer, where W is the appliance's own in-process cost
   of a request (``hotpath.py``: decode, checks, batcher, ONNX Runtime, statistics, encode), measured first in
   this run. If the floor plus W already costs more than 1.25x the plain floor, no grpc.aio server doing that
   work meets the target; the appliance's ratio beside it shows how much of its cost is its own beyond W.
2. CNN, gRPC, c=64, at least Triton's req/s. A CPU budget: a request costs at least the floor's server CPU for
   the CNN (grpc.aio alone), plus ONNX Runtime's CPU for one CNN sample at its cheapest batch size (in process,
   one intra-op thread), plus the client's CPU per request (the cheapest of the run's CNN points). The machine's
   cores divided by that sum is the most any grpc.aio server running the model in its own process can answer
   here, however it schedules, batches or threads.
3. The image model over shared memory, c=16, at least 2x our gRPC and at least Triton's shm req/s. The same
   budget: the floor's CPU for a tiny request (MLP, c=16: a shm request carries region names only), plus ONNX
   Runtime's CPU for one image sample at its cheapest batch size, plus the client's CPU per shm request.

4. Where the image model's execution runs, over shared memory at c=16: on the instance thread (the appliance as
   it is), nowhere (``stages.py``'s ``no-execution``: the front alone), and in a separate process (its
   ``executor-process`` probe), beside Triton's shm.

5. Where the appliance's own cost goes on the wire: the MLP at gRPC c=64 on ``benchmarks/stages.py``'s
   appliance cut after each stage of a request (a canned answer at once, after decoding, after the data plane,
   ONNX Runtime's run replaced by a recorded answer, the whole path), beside the in-process cost of the same
   handler.

Points are interleaved over ``--rounds`` rounds (these machines are noisy) and the medians are used.

    python benchmarks/limits.py                      # 3 rounds of 6 s points, about 8 minutes
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
from benchmarks.report import CPU_OVER_FLOOR, IMAGE_CONCURRENCY, SHM_OVER_GRPC, format_points, server_us_per_request
from benchmarks.servers import (
    RunningServer,
    prepare_onnx_repository,
    running_appliance,
    running_grpc_floor,
    running_server,
    wait_models_ready,
)
from benchmarks.stages import PROBES, STAGES

# (server, model, transport, concurrency) of each point of a round
FLOOR_WORK = "floor+work"
POINTS: tuple[tuple[str, str, str, int], ...] = (
    ("grpc-floor", "mlp", "grpc", 64),
    (FLOOR_WORK, "mlp", "grpc", 64),
    ("appliance", "mlp", "grpc", 64),
    ("grpc-floor", "cnn", "grpc", 64),
    ("triton", "cnn", "grpc", 64),
    ("appliance", "cnn", "grpc", 64),
    ("grpc-floor", "mlp", "grpc", IMAGE_CONCURRENCY),
    ("appliance", "image", "grpc", IMAGE_CONCURRENCY),
    ("appliance", "image", "shm", IMAGE_CONCURRENCY),
    ("triton", "image", "shm", IMAGE_CONCURRENCY),
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
def servers(repo: Path, workdir: Path, work_us: int) -> Iterator[dict[str, RunningServer]]:
    with contextlib.ExitStack() as stack:
        started = {
            "appliance": stack.enter_context(running_server("appliance", repo, workdir)),
            "triton": stack.enter_context(running_server("triton", repo, workdir)),
            "grpc-floor": stack.enter_context(running_grpc_floor(repo, workdir / "floor")),
            FLOOR_WORK: stack.enter_context(running_grpc_floor(repo, workdir / "floor-work", work_us=work_us)),
        }
        for stage in STAGES + PROBES:
            program = (sys.executable, str(Path(__file__).resolve().with_name("stages.py")), stage)
            started[f"stage:{stage}"] = stack.enter_context(
                running_appliance(repo, workdir / f"stage-{stage}", program=program)
            )
        for name in started:
            if name not in ("grpc-floor", FLOOR_WORK):
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
        with servers(repo, Path(tmp) / "work", round(work_us)) as started:
            for round_ in range(args.rounds):
                for key in POINTS:
                    target, model, transport, concurrency = key
                    point = run_point(started[target], model, transport, concurrency, args.duration, args.warmup, 0)
                    point.target = target
                    runs[key].append(point)
                    print(format_points([point], header=round_ == 0 and key == POINTS[0]), flush=True)
    best = {key: median_point(points) for key, points in runs.items()}
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
    floor, with_work, ours = (us(t, "mlp", "grpc", 64) for t in ("grpc-floor", FLOOR_WORK, "appliance"))
    reach = "out of reach for a grpc.aio server doing that work" if with_work > CPU_OVER_FLOOR * floor else "reachable"
    lines.append(
        f"mlp gRPC c=64 CPU <= {CPU_OVER_FLOOR}x floor: floor {floor:.0f} us/req; floor + {work_us:.0f} us of work "
        f"{with_work:.0f} ({with_work / floor:.2f}x): {reach}; appliance {ours:.0f} ({ours / floor:.2f}x)"
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
    lines.append(
        f"cnn gRPC c=64 >= Triton: {reckoned}, against Triton's {triton_cnn:,.0f}: "
        + ("out of reach in one grpc.aio process" if cnn_bound < triton_cnn else "within the budget")
        + f"; appliance {best[('appliance', 'cnn', 'grpc', 64)].rps:,.0f}"
    )

    c = IMAGE_CONCURRENCY
    shm = [best[(t, "image", "shm", c)] for t in ("appliance", "triton")]
    shm_bound, reckoned = budget(us("grpc-floor", "mlp", "grpc", c), min(compute["image"].values()), shm)
    need = max(SHM_OVER_GRPC * best[("appliance", "image", "grpc", c)].rps, best[("triton", "image", "shm", c)].rps)
    lines.append(
        f"image shm c={c} >= {SHM_OVER_GRPC}x our gRPC and >= Triton's shm ({need:,.0f} req/s): {reckoned}: "
        + ("out of reach in one grpc.aio process" if shm_bound < need else "within the budget")
        + f"; appliance {shm[0].rps:,.0f} at {us('appliance', 'image', 'shm', c):.0f} us/req"
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

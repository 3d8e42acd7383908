"""What a route costs over calling the model itself (issue 10's target: under 5% of req/s).

Serves the demo models on one ``appliance serve`` and declares two routes over them: ``<model>_route`` (one arm,
the model itself) and ``<model>_ab`` (two arms, 50/50, over the model and ``<model>_b``, a copy of it, with a
sticky key sent by no client: the random path). Then runs closed-loop points from a fresh client process each
(benchmarks/loadgen.py, the real tritonclient) on the plain model and on each route, interleaved, for
``--rounds`` rounds (these machines are noisy: interleaving spreads the noise over all three), and prints each
point, the median req/s of each and the overhead of each route against the plain model.

    python benchmarks/routes.py                                   # mlp, gRPC and REST, c=16, 3 rounds of 8 s
    python benchmarks/routes.py --models mlp,cnn --concurrency 64 --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as `python benchmarks/routes.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import Point, run_point
from benchmarks.servers import running_appliance

TARGET_OVERHEAD = 0.05


def prepare(root: Path, models: list[str]) -> Path:
    from appliance.demo import write_demo_repository

    repo = root / "repo"
    write_demo_repository(repo)
    for model in models:  # a second model with the same files: the other arm of the A/B route
        copy = repo / f"{model}_b"
        shutil.copytree(repo / model, copy)
        config = copy / "config.pbtxt"
        config.write_text(config.read_text().replace(f'name: "{model}"', f'name: "{model}_b"'))
    return repo


def declare(base: str, model: str) -> None:
    routes = {
        f"{model}_route": {"arms": [{"model": model, "weight": 1}]},
        f"{model}_ab": {
            "arms": [{"model": model, "weight": 50}, {"model": f"{model}_b", "weight": 50}],
            "sticky": "x-user",
        },
    }
    for name, doc in routes.items():
        httpx.put(f"{base}/v2/routes/{name}", json=doc, timeout=30).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp", help="demo models, comma-separated (mlp, cnn)")
    parser.add_argument("--transports", default="grpc,http", help="grpc, http (REST, binary data)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare(Path(tmp), models)
        with running_appliance(repo, Path(tmp) / "work") as server:
            for model in models:
                declare(f"http://{server.http_url}", model)
            print(f"{'model':6} {'transport':9} {'called':10} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
            verdicts = []
            for model in models:
                for transport in args.transports.split(","):
                    names = [model, f"{model}_route", f"{model}_ab"]
                    rps: dict[str, list[float]] = {n: [] for n in names}
                    for round_ in range(args.rounds):
                        for name in names:
                            point: Point = run_point(
                                server, name, transport, args.concurrency, args.duration_s, args.warmup_s, 0
                            )
                            if point.errors:
                                raise SystemExit(f"{name} over {transport}: {point.errors} errors: {point.first_error}")
                            rps[name].append(point.rps)
                            print(
                                f"{model:6} {transport:9} {name:10} {round_ + 1:5} {point.rps:8.0f} "
                                f"{point.p50_ms or 0:7.2f} {point.p99_ms or 0:7.2f}"
                            )
                    plain = statistics.median(rps[model])
                    for name in names[1:]:
                        routed = statistics.median(rps[name])
                        overhead = 1 - routed / plain
                        met = "MET" if overhead < TARGET_OVERHEAD else "NOT MET"
                        verdicts.append(
                            f"{met:7} route overhead {model} {transport} c={args.concurrency} {name}: "
                            f"{routed:.0f} against {plain:.0f} req/s (medians of {args.rounds}): "
                            f"{overhead * 100:+.1f}% (target under {TARGET_OVERHEAD * 100:.0f}%)"
                        )
            print()
            print("\n".join(verdicts))


if __name__ == "__main__":
    main()

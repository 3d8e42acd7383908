"""Latency of the requests in flight during a hot swap, against steady state (issue 10, "Benchmark").

Starts one ``appliance serve --model-control-mode explicit --load-model swap`` on free ports with a generated
repository holding ``swap``: an embedding bag (``ids`` INT64 [B, 8] -> ``y`` FP32 [B, 64], the sum of 8 rows
of a seeded random FP32 table of ``--weights-mb`` MiB, plus a marker constant). A request costs ONNX Runtime
about 15 us; a load (reading the file, ONNX Runtime session, warm-up) takes a few tenths of a second at 64 MiB.
``--external-data`` keeps the table in ``table.bin`` beside ``model.onnx`` (ONNX external data): the server's
``onnx.load`` of the model file (config completion) then parses 300 bytes, not the table, and ONNX Runtime
reads the table itself.

``--clients`` threads, one tritonclient each (``--transport grpc|http``, REST with binary tensors), send
batch-1 requests back to back and record each request's start, end, success and answer. Phases: steady state
for ``--steady`` seconds; ``--swaps`` swaps one after another (the model file is replaced by one whose marker
is the swap's number, then ``load_model("swap")``; ``--gap`` seconds after each load returns); steady again.
In EXPLICIT mode a load reloads whatever the files hold; the marker shows which file answered. The server is
started with this process's ``appliance`` package first on PYTHONPATH (a worktree's ``src`` runs as itself).

Prints per phase p50 / p99 / max (client side, ms) and req/s (requests that ended in the phase / its
length): ``steady`` is both steady phases; ``during swaps`` is every request whose lifetime overlaps a load
call's window (req/s: those that ended inside a window / the windows' total length); ``between swaps`` the
rest of the swap phase. Then the failed requests, the wrong answers (an answer must carry the marker of a
file whose load began before the request ended, and not an older one than the last load that returned before
the request began), the load calls' durations and one verdict line. Exit status 1 when a request failed or was wrong.

    python benchmarks/hot_swap.py                                      # gRPC, 16 clients, 10 swaps, 64 MiB
    python benchmarks/hot_swap.py --transport http --swaps 20 --steady 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

if __package__ in (None, ""):  # run as `python benchmarks/hot_swap.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import appliance
from benchmarks.servers import running_appliance

MODEL = "swap"
DIM = 64  # embedding width: the output's size
BAG = 8  # rows summed a request
CONFIG = f"""\
name: "{MODEL}"
backend: "onnxruntime"
max_batch_size: 16
input [ {{ name: "ids" data_type: TYPE_INT64 dims: [ {BAG} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ {DIM} ] }} ]
dynamic_batching {{ }}
"""


@dataclass(frozen=True, slots=True)
class Request:
    start: float
    end: float
    marker: int | None  # None: the request failed
    error: str = ""


@dataclass(frozen=True, slots=True)
class Swap:
    start: float  # just before the load call
    end: float  # just after it returned
    marker: int  # what the model answers once loaded


def embedding_model(table: np.ndarray) -> onnx.ModelProto:
    """``y = sum(table[ids], axis 1) + marker``; the marker is the graph's last initializer."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"]),
            helper.make_node("ReduceSum", ["rows", "axes"], ["bag"], keepdims=0),
            helper.make_node("Add", ["bag", "marker"], ["y"]),
        ],
        MODEL,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", BAG])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", DIM])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(np.array(0.0, np.float32), "marker"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_files(model: onnx.ModelProto, folder: Path, markers: range, external: Path | None) -> dict[int, Path]:
    """One model file a marker, written before the run: a swap then only renames one into place. With
    ``external`` (a path beside the served model.onnx) the table is written there once, as ONNX external data,
    and every model file refers to it."""
    folder.mkdir(parents=True)
    if external is not None:
        table = model.graph.initializer[0]
        external.write_bytes(table.raw_data)
        set_external_data(table, location=external.name, offset=0, length=len(table.raw_data))
        table.data_location = TensorProto.EXTERNAL
        table.ClearField("raw_data")
    files = {}
    for marker in markers:
        model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.array(marker, np.float32), "marker"))
        files[marker] = folder / f"{marker}.onnx"
        files[marker].write_bytes(model.SerializeToString())
    return files


def client(transport: str, url: str, ids: np.ndarray, expected: np.ndarray, stop: threading.Event) -> list[Request]:
    """Requests back to back until ``stop``; the marker of each answer is ``y - expected``, rounded."""
    module: Any = grpcclient if transport == "grpc" else httpclient
    connection = module.InferenceServerClient(url)
    tensor = module.InferInput("ids", list(ids.shape), "INT64")
    tensor.set_data_from_numpy(ids, **({} if transport == "grpc" else {"binary_data": True}))
    outputs = [module.InferRequestedOutput("y", **({} if transport == "grpc" else {"binary_data": True}))]
    done: list[Request] = []
    try:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                y = connection.infer(MODEL, [tensor], outputs=outputs).as_numpy("y")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and the first one shown
                done.append(Request(start, time.perf_counter(), None, str(exc)))
                continue
            end = time.perf_counter()
            offset = y - expected
            marker = int(round(float(offset[0, 0])))
            exact = bool(np.all(np.abs(offset - marker) < 1e-2))
            done.append(Request(start, end, marker if exact else -1))  # -1: not an answer of any version
    finally:
        connection.close()  # in this thread: tritonclient.http's gevent pool cannot close from another
    return done


def wrong(request: Request, swaps: list[Swap]) -> bool:
    """An answer from a model not loaded by the time the request ended, or older than the last load that
    returned before the request started."""
    assert request.marker is not None
    newest = max([s.marker for s in swaps if s.start < request.end], default=0)
    oldest = max([s.marker for s in swaps if s.end < request.start], default=0)
    return not oldest <= request.marker <= newest


def stats(name: str, latencies: list[float], seconds: float, ended: int) -> str:
    if not latencies:
        return f"{name:15} {0:9,} {'-':>8} {'-':>8} {'-':>8} {'-':>8}"
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    rate = ended / seconds if seconds > 0 else 0.0
    return f"{name:15} {len(latencies):9,} {rate:8,.0f} {p50:8.2f} {p99:8.2f} {max(latencies) * 1e3:8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("grpc", "http"), default="grpc", help="default: grpc")
    parser.add_argument("--clients", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--steady", type=float, default=5.0, help="seconds of each steady phase (default 5)")
    parser.add_argument("--swaps", type=int, default=10, help="swaps (default 10)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds after each load returns (default 0.5)")
    parser.add_argument("--weights-mb", type=float, default=64.0, help="size of the table in MiB (default 64)")
    parser.add_argument(
        "--external-data",
        action="store_true",
        help="keep the table in table.bin beside model.onnx (ONNX external data) instead of inside it",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring (default 1)")
    args = parser.parse_args()

    # The server runs the same appliance package as this process (a worktree's src/ on PYTHONPATH, say)
    package_root = str(Path(appliance.__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)

    rows = max(1, int(args.weights_mb * 2**20) // (4 * DIM))
    table = np.random.default_rng(0).standard_normal((rows, DIM), dtype=np.float32)
    bags = np.random.default_rng(1).integers(0, rows, (args.clients, 1, BAG), dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / MODEL / "1").mkdir(parents=True)
        (repo / MODEL / "config.pbtxt").write_text(CONFIG)
        model_file = repo / MODEL / "1" / "model.onnx"
        external = model_file.with_name("table.bin") if args.external_data else None
        files = write_files(embedding_model(table), Path(tmp) / "files", range(args.swaps + 1), external)
        os.replace(files[0], model_file)
        size = model_file.stat().st_size
        where = f"{size / 2**20:.1f} MiB" if external is None else f"{size:,} bytes + table.bin as external data"
        print(
            f"model '{MODEL}': table {rows:,} x {DIM} FP32 ({table.nbytes / 2**20:.1f} MiB; model.onnx "
            f"{where}), {BAG} rows summed a request; {args.clients} {args.transport} clients "
            f"(threads); {args.swaps} swaps, {args.gap} s apart; steady {args.steady} s before and after"
        )
        print(f"appliance package: {Path(appliance.__file__).parent}")
        server_args = ["--model-control-mode", "explicit", "--load-model", MODEL]
        with running_appliance(repo, Path(tmp) / "work", server_args) as server:
            url = server.url(args.transport)
            module: Any = grpcclient if args.transport == "grpc" else httpclient
            admin = module.InferenceServerClient(url)
            stop = threading.Event()
            results: list[list[Request]] = [[] for _ in range(args.clients)]

            def run(index: int) -> None:
                expected = table[bags[index]].sum(axis=1, dtype=np.float32)
                results[index] = client(args.transport, url, bags[index], expected, stop)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            swaps: list[Swap] = []
            try:
                time.sleep(args.warmup)
                steady_before = (time.perf_counter(), time.perf_counter() + args.steady)
                time.sleep(args.steady)
                swap_phase_start = time.perf_counter()
                for marker in range(1, args.swaps + 1):
                    os.replace(files[marker], model_file)
                    start = time.perf_counter()
                    admin.load_model(MODEL)
                    swaps.append(Swap(start, time.perf_counter(), marker))
                    time.sleep(args.gap)
                swap_phase_end = time.perf_counter()
                time.sleep(args.steady)
                steady_after = (swap_phase_end, time.perf_counter())
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
                admin.close()

    everything = [r for done in results for r in done]  # failures and wrong answers count from the first request
    requests = [r for r in everything if r.end >= steady_before[0]]
    windows = [(s.start, s.end) for s in swaps]

    def overlaps(r: Request) -> bool:
        return any(r.start <= end and r.end >= start for start, end in windows)

    def ended_in(r: Request, spans: list[tuple[float, float]]) -> bool:
        return any(start <= r.end <= end for start, end in spans)

    ok = [r for r in requests if r.marker is not None]
    steady_spans = [steady_before, steady_after]
    steady = [r.end - r.start for r in ok if ended_in(r, steady_spans) and not overlaps(r)]
    during = [r.end - r.start for r in ok if overlaps(r)]
    between = [r.end - r.start for r in ok if swap_phase_start <= r.end <= swap_phase_end and not overlaps(r)]
    steady_s = sum(end - start for start, end in steady_spans)
    window_s = sum(end - start for start, end in windows)
    between_s = swap_phase_end - swap_phase_start - window_s
    print(f"{'phase':15} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(stats("steady", steady, steady_s, sum(ended_in(r, steady_spans) for r in ok)))
    print(stats("during swaps", during, window_s, sum(ended_in(r, windows) for r in ok)))
    print(stats("between swaps", between, between_s, len(between)))

    failed = [r for r in everything if r.marker is None]
    answered = [r for r in everything if r.marker is not None]
    wrong_answers = [r for r in answered if wrong(r, swaps)]
    seen = len({r.marker for r in answered} & set(range(args.swaps + 1)))
    print(f"failed requests: {len(failed)}" + (f" (first: {failed[0].error})" if failed else ""))
    first = f"; first: marker {wrong_answers[0].marker}" if wrong_answers else ""
    print(f"wrong answers: {len(wrong_answers)} (answers from {seen} of the {args.swaps + 1} model files{first})")
    loads = [s.end - s.start for s in swaps]
    if loads:
        print(f"load calls: {len(loads)}, p50 {np.percentile(loads, 50):.3f} s, max {max(loads):.3f} s")
    p99_during = float(np.percentile(during, 99)) * 1e3 if during else float("nan")
    p99_steady = float(np.percentile(steady, 99)) * 1e3 if steady else float("nan")
    print(
        f"hot-swap: {len(failed)} failed, {len(wrong_answers)} wrong; in-flight p99 during swaps = "
        f"{p99_during:.2f} ms vs steady p99 {p99_steady:.2f} ms ({p99_during / p99_steady:.2f}x)"
    )
    return 1 if failed or wrong_answers else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a request's server CPU goes, thread by thread: CPU, context switches and page faults a request.

One point (model, transport, concurrency) of ``loadgen.py`` against ``appliance serve`` started afresh for each
variant and round, variants interleaved round by round (this machine drifts). Counters come from
``/proc/PID/task/*/{stat,status}`` at the load's START and STOP lines, so they cover the measured window only.

    python benchmarks/threads.py --model image --transport shm --concurrency 16 --rounds 3 \\
        --variant batch: --variant other:--cpu-scheduling-policy=other

A variant is ``LABEL:ARGS``, ARGS the extra ``appliance serve`` options separated by spaces (none: as is).
``--reference TARGET`` measures a server of ``grpc_floor.py`` beside them in each round: ``grpc-floor`` (canned
answers), ``grpc-minimal``, ``grpc-minimal-batch`` or ``grpc-minimal-batch-inline``. ``--grpc-floor`` is
``--reference grpc-floor`` without the appliance as is (variants given are still measured). ``--stage NAME``
measures the appliance cut or probed by ``stages.py`` beside them (a stage or probe name).
Per thread: its name, CPU us a request, voluntary and involuntary context switches a request (a voluntary one
is the thread waiting; an involuntary one is the thread preempted), minor page faults a request.

``--perf`` also samples the server over the same window with ``perf record -e cpu-clock`` (Debian's
``linux-perf``; no hardware counters needed) and prints CPU us a request by shared object: the interpreter
(``libpython``), grpc's Cython and C core (``cygrpc``), ONNX Runtime, the kernel, ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/threads.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import servers
from benchmarks.image_model import write_image_model
from benchmarks.stages import PROBES, STAGES, stage_program

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
TICK = os.sysconf("SC_CLK_TCK")
Counters = dict[tuple[int, str], tuple[float, int, int, int]]  # (tid, name) -> cpu s, vol, invol, minflt


def thread_counters(pid: int) -> Counters:
    counters: Counters = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            stat = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"{base}/status").read_text()
            name = Path(f"{base}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        cpu = (int(stat[11]) + int(stat[12])) / TICK
        counters[(int(tid), name)] = (
            cpu,
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
            int(stat[7]),
        )
    return counters


def perf_by_object(data: Path, requests: float) -> list[str]:
    """``perf report`` of a recording: CPU us a request for each shared object over 1 us."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "-n", "--sort", "dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_ns, parsed = 0.0, []
    for line in report.splitlines():
        fields = line.split()
        if line.startswith("# Event count (approx.):"):  # cpu-clock counts nanoseconds
            cpu_ns = float(fields[-1])
        elif not line.startswith("#") and len(fields) >= 3 and fields[0].endswith("%"):  # "12.34%  2201  libc.so.6"
            parsed.append((int(fields[1]), fields[2]))
    samples = sum(n for n, _ in parsed) or 1
    rows = []
    for n, name in parsed:
        us = cpu_ns * n / samples / 1e3 / requests
        if us >= 1:
            rows.append(f"    {name:<40} {us:7.1f}")
    return rows


def measure(server: servers.RunningServer, args: argparse.Namespace, work: Path) -> tuple[float, list[str]]:
    assert server.process is not None
    pid = server.process.pid
    spec = {
        "transport": args.transport,
        "url": server.url(args.transport),
        "model": args.model,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }
    load = subprocess.Popen([sys.executable, str(LOADGEN), json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    start: Counters = {}
    stop: Counters = {}
    result: dict[str, Any] = {}
    perf: subprocess.Popen[bytes] | None = None
    data = work / "perf.data"
    for line in load.stdout:
        if line.startswith("START"):
            start = thread_counters(pid)
            if args.perf:
                record = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-p", str(pid), "-o", str(data)]
                perf = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif line.startswith("STOP"):
            stop = thread_counters(pid)
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait()
        elif line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    if load.wait() != 0 or not result or not stop:
        raise SystemExit(f"loadgen failed (exit {load.returncode})")
    requests = max(result["rps"] * args.duration, 1.0)
    rows, total = [], [0.0, 0.0, 0.0, 0.0]
    for key, (cpu, vol, invol, faults) in sorted(stop.items()):
        before = start.get(key, (0.0, 0, 0, 0))
        per = [(cpu - before[0]) * 1e6 / requests] + [
            (b - a) / requests for a, b in zip(before[1:], (vol, invol, faults))
        ]
        total = [t + p for t, p in zip(total, per)]
        if per[0] >= 1 or per[1] >= 0.05:
            rows.append(f"    {key[1]:<16} {per[0]:7.0f} {per[1]:7.2f} {per[2]:7.2f} {per[3]:8.1f}")
    rows.append(f"    {'all threads':<16} {total[0]:7.0f} {total[1]:7.2f} {total[2]:7.2f} {total[3]:8.1f}")
    if perf is not None:
        rows.append(f"    {'shared object (perf)':<40} {'cpu us':>7}   (a request)")
        rows += perf_by_object(data, requests)
    return result["rps"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="image", help="mlp, cnn (the demo repository) or image")
    parser.add_argument("--transport", default="grpc", choices=["grpc", "http", "shm"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:ARGS")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        choices=servers.GRPC_FLOOR_TARGETS,
        help="also measure this server of grpc_floor.py in each round (repeatable)",
    )
    parser.add_argument(
        "--stage", action="append", default=[], choices=STAGES + PROBES, help="also measure this stages.py server"
    )
    parser.add_argument(
        "--grpc-floor", action="store_true", help="measure the grpc.aio floor, and no appliance unless --variant"
    )
    parser.add_argument(
        "--perf", action="store_true", help="also sample the server with perf and print CPU a request by shared object"
    )
    args = parser.parse_args()
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf needs the perf command (Debian: apt install linux-perf)")
    references = ["grpc-floor"] if args.grpc_floor else args.reference
    variants = [v.partition(":")[::2] for v in args.variant] or ([] if args.grpc_floor else [("as-is", "")])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        if args.model == "image":
            write_image_model(repo)
        else:
            from appliance.demo import write_demo_repository

            write_demo_repository(repo)
        for round_ in range(1, args.rounds + 1):
            runs = [(label, extra, "") for label, extra in variants] + [(r, "", "reference") for r in references]
            runs += [(f"stage:{stage}", "", "stage") for stage in args.stage]
            for label, extra, kind in runs:
                if kind == "stage":
                    program = stage_program(label.removeprefix("stage:"))
                    context = servers.running_appliance(repo, work / label, program=program)
                elif kind == "reference":
                    context = servers.running_server(label, repo, work)
                else:
                    context = servers.running_appliance(repo, work / label, extra.split())
                with context as server:
                    rps, rows = measure(server, args, work)
                print(f"round {round_} {label}: {args.model} {args.transport} c={args.concurrency}, {rps:,.0f} req/s")
                print(f"    {'thread':<16} {'cpu us':>7} {'vol':>7} {'invol':>7} {'faults':>8}   (a request)")
                print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()

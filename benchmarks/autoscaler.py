"""What the autoscaler costs, and how fast it answers a step in load, against a real service on loopback.

1. The loop: the daemon (``appliance autoscale``, its own process) looks at a service serving the demo models and
   a slow model, with device telemetry on a FAKE AGX Orin tree, every ``--interval`` seconds for ``--seconds``;
   its CPU time (``/proc/PID/stat``) per look, and the service's CPU time per ``/metrics`` scrape (timed over 200
   scrapes), give the share of one core at the device's interval (5 s).
2. The step: idle, then 4 clients at once on the slow model (a few ms a request, target 1 in flight per
   instance); the time from the step to the new instance count, with the device's defaults (a look every 5 s,
   up after 15 s of agreement) unless ``--fast``.

    python -m benchmarks.autoscaler                # about 90 s
    python -m benchmarks.autoscaler --fast         # compressed windows (1 s looks, 3 s up window)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from appliance.demo import write_demo_repository
from tests.support.appliance import running_server
from tests.support.autoscaler import start_daemon, stop_daemon
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson
from tests.support.models import write_slow

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0, help="the loop's interval while it is measured")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the loop is measured")
    parser.add_argument("--fast", action="store_true", help="compressed windows for the step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        repo = root / "repo"
        write_demo_repository(repo)
        write_slow(repo, "slow", max_batch_size=1, dynamic_batching=None)
        device = write_fake_jetson(root / "FAKE-agx-orin", AGX_ORIN)
        flags = ("--device-telemetry", "true", "--device-root", str(device))
        with running_server(repo, root / "server.log", *flags) as server, httpx.Client(base_url=server.base) as http:
            # The service's side: one scrape.
            before = _cpu_s(server.process.pid)
            for _ in range(200):
                http.get("/metrics").raise_for_status()
            scrape_ms = (_cpu_s(server.process.pid) - before) / 200 * 1000

            # The daemon's side: idle looks at --interval.
            models = "".join(f"[models.{m}]\nmax_instances = 4\n" for m in ("mlp", "cnn", "slow"))
            config = f'service_url = "{server.base}"\ninterval_s = {args.interval}\n{models}'
            (root / "loop").mkdir()
            process, log = start_daemon(root / "loop", config, None)
            time.sleep(2)  # its start: imports, the first look
            before = _cpu_s(process.pid)
            time.sleep(args.seconds)
            looks = args.seconds / args.interval
            look_ms = (_cpu_s(process.pid) - before) / looks * 1000
            stop_daemon(process)
            share = (look_ms + scrape_ms) / 1000 / 5.0 * 100
            print(f"one look:   daemon {look_ms:6.2f} ms CPU   service (one /metrics) {scrape_ms:6.2f} ms CPU")
            print(f"at the device's interval (5 s): {share:.3f}% of one core  (target: under 1%)")

            # The step.
            interval, up = (1.0, 3.0) if args.fast else (5.0, 15.0)
            config = (
                f'service_url = "{server.base}"\ninterval_s = {interval}\n[models.slow]\nmax_instances = 4\n'
                f"target_ongoing_requests = 1.0\nscale_up_delay_s = {up}\n"
            )
            (root / "step").mkdir()
            process, log = start_daemon(root / "step", config, None)
            time.sleep(2 * interval + 2)  # idle looks first: the window holds the idle recommendation
            stop = threading.Event()

            def client() -> None:
                body = {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                        {"name": "n", "datatype": "INT64", "shape": [1, 1], "data": [3]},
                    ]
                }
                with httpx.Client(base_url=server.base, timeout=60) as c:
                    while not stop.is_set():
                        c.post("/v2/models/slow/infer", json=body).raise_for_status()

            def count() -> int:
                return int(http.get("/v2/models/slow/config").json()["instance_group"][0].get("count", 1))

            workers = [threading.Thread(target=client) for _ in range(4)]
            step = time.monotonic()
            for worker in workers:
                worker.start()
            changed = None
            while time.monotonic() - step < up + 4 * interval + 30:
                if count() > 1:
                    changed = time.monotonic() - step
                    break
                time.sleep(0.05)
            final = count()
            stop.set()
            for worker in workers:
                worker.join()
            stop_daemon(process)
            where = f"a look every {interval:g} s, up after {up:g} s of agreement"
            if changed is None:
                print(f"step (0 -> 4 clients): no change ({where})")
            else:
                print(f"step (0 -> 4 clients): 1 -> {final} instances after {changed:.1f} s ({where})")


if __name__ == "__main__":
    main()

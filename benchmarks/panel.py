"""What the admin panel weighs, how soon it shows something, and what an open panel costs the service.

1. Weight of the first load of each page: the HTML, the script, the stylesheet, and the JSON the page's script
   asks for, raw and gzip-compressed (nginx compresses on the device): target under 300 KB gzip.
2. Time to first render in Debian's chromium (headless) on this machine: first contentful paint, and the time
   until the Overview's figures are filled from the API (median of 5 fresh loads).
3. The service's CPU while one Overview stays open and refreshes every 5 s, against the same minutes with no
   panel open (``/proc/PID/stat``): target under 2 % of one core.

    python -m benchmarks.panel                   # about 3 minutes
    python -m benchmarks.panel --seconds 30      # shorter CPU windows
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from appliance.demo import write_demo_repository
from tests.support.appliance import running_server
from tests.support.browser import chromium

_TICK = os.sysconf("SC_CLK_TCK")
FIRST_LOAD = {
    "overview": ["/admin", "/admin/static/panel.js", "/admin/static/panel.css", "/v2", "/v2/history", "/v2/device",
                 "/v2/update", "/v2/units", "POST /v2/repository/index"],
    "models": ["/admin/models", "/admin/static/panel.js", "/admin/static/panel.css", "POST /v2/repository/index",
               "/v2/models/stats", "/v2/engines"],
    "timeline": ["/admin/timeline", "/admin/static/panel.js", "/admin/static/panel.css", "/v2/history", "/v2/events"],
}  # fmt: skip


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def weights(base: str) -> None:
    print("page weight, first load (raw / gzip), target < 300 KB gzip:")
    with httpx.Client(base_url=base, timeout=30) as client:
        for page, requests in FIRST_LOAD.items():
            raw = packed = 0
            for request in requests:
                method, _, path = request.rpartition(" ")
                body = (client.post(path, json={}) if method == "POST" else client.get(path)).content
                raw += len(body)
                packed += len(gzip.compress(body, 6))
            verdict = "met" if packed < 300_000 else "NOT met"
            sizes = f"{raw / 1024:7.1f} KB raw {packed / 1024:7.1f} KB gzip"
            print(f"  {page:9s} {sizes}  ({len(requests)} requests) {verdict}")


def first_render(base: str, runs: int = 5) -> None:
    paints, filled = [], []
    with chromium() as driver:
        for _ in range(runs):
            driver.delete_all_cookies()
            driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            start = time.perf_counter()
            driver.get(f"{base}/admin")
            while driver.execute_script("return document.querySelector('[data-field=\"models\"]').textContent") in (
                "…",
                "",
            ):
                time.sleep(0.01)
            filled.append((time.perf_counter() - start) * 1000)
            fcp = driver.execute_script(
                "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null"
            )
            if fcp is not None:
                paints.append(fcp)
    print(f"time to first render (chromium, {runs} fresh loads, median): first contentful paint "
          f"{statistics.median(paints):.0f} ms, figures filled {statistics.median(filled):.0f} ms")  # fmt: skip


def cpu(base: str, pid: int, seconds: float) -> None:
    time.sleep(2)
    start = _cpu_s(pid)
    time.sleep(seconds)
    idle = (_cpu_s(pid) - start) / seconds
    with chromium() as driver:
        driver.get(f"{base}/admin")
        time.sleep(6)  # the first refresh has run
        start = _cpu_s(pid)
        time.sleep(seconds)
        open_panel = (_cpu_s(pid) - start) / seconds
    cost = (open_panel - idle) * 100
    verdict = "met" if cost < 2.0 else "NOT met"
    print(
        f"service CPU over {seconds:.0f} s: {idle * 100:.2f} % of a core with no panel, {open_panel * 100:.2f} % with "
        f"the Overview open (refresh every 5 s): the panel costs {cost:.2f} % of a core, target < 2 %: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="each CPU window (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        write_demo_repository(repo)
        log = Path(scratch) / "server.log"
        # Auth off: the weights and timings are those of the pages and the API, not of a login.
        with running_server(repo, log, "--model-control-mode", "explicit", "--load-model", "*") as server:
            weights(server.base)
            first_render(server.base)
            cpu(server.base, server.process.pid, args.seconds)
    print(json.dumps({"note": "figures from one run on this machine; see benchmarks/README.md"}))


if __name__ == "__main__":
    main()

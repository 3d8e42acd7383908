"""What device telemetry costs: one sample of a FAKE AGX Orin tree (tests/support/fake_jetson_sysfs.py: the
files a real one has, on this machine's disk rather than sysfs), and one Prometheus exposition of it, timed
as process CPU time. At one sample a second (a panel and a scrape every few seconds cost less) the CPU share
of one core is the per-sample cost divided by a second.

    python -m benchmarks.device_telemetry               # 2,000 samples
    python -m benchmarks.device_telemetry --count 10000

Reading real sysfs costs more per file than a disk file in the page cache (each read runs the driver's show
function), so on a device measure again: ``python -m benchmarks.device_telemetry --root /``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from appliance.device.jetson import DeviceTelemetry
from appliance.device.metrics import DeviceMetrics
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson


def _cpu_us(call: object, count: int) -> tuple[float, float]:
    """Median and p99 process CPU time of ``call()`` in microseconds."""
    assert callable(call)
    times = []
    for _ in range(count):
        start = time.process_time_ns()
        call()
        times.append((time.process_time_ns() - start) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--root", type=Path, help="read this tree (/ on a device) instead of a fake AGX Orin")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or write_fake_jetson(Path(scratch), AGX_ORIN)
        telemetry = DeviceTelemetry(root)
        metrics = DeviceMetrics(telemetry, clock=lambda: 0.0)  # every call a fresh sample below
        registry = CollectorRegistry()
        registry.register(metrics)

        def scrape() -> None:
            metrics._last = None  # noqa: SLF001 - time the read, not the 0.5 s sharing
            generate_latest(registry)

        sample = _cpu_us(telemetry.sample, args.count)
        exposition = _cpu_us(scrape, args.count)
        s = telemetry.sample()
    print(f"tree: {root if args.root else 'FAKE AGX Orin'}: {len(s.thermal)} zones, {len(s.rails)} rails")
    print(f"sample             median {sample[0]:7.1f} us   p99 {sample[1]:7.1f} us  (CPU)")
    print(f"sample + /metrics  median {exposition[0]:7.1f} us   p99 {exposition[1]:7.1f} us  (CPU)")
    print(f"at 1 sample/s: {exposition[0] / 1e6 * 100:.3f}% of one core (target: under 1%)")


if __name__ == "__main__":
    main()

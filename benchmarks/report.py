"""Tables and the verdict against issue 8's targets (and issue 3's RSS target for --soak)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.measure import Point, SoakResult

# Issue 8, item 3: ratios in one run (batch-1 points, max_queue_delay 0).
IMAGE_CONCURRENCY = 16  # image model: >= Triton's req/s over gRPC and REST binary; shm targets at this concurrency
SHM_OVER_GRPC = 2.0  # image over shm: at least 2x our own gRPC req/s (and at least Triton's shm req/s)
OVER_MLSERVER = 2.0  # every point: at least 2x MLServer's req/s (our REST binary against its REST JSON)
CPU_OVER_FLOOR = 1.25  # MLP, gRPC, c=64: server CPU per request at most 1.25x the grpc.aio floor's
RSS_SECOND_HALF_GROWTH_PCT = 2.0  # issue 3, soak: RSS growth over the second half of the run (fitted) under 2%

_COLUMNS = (
    "target",
    "model",
    "proto",
    "delay_us",
    "conc",
    "batch",
    "req/s",
    "samples/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "client %",
    "server %",
    "other %",
    "server us/req",
    "top thread %",
    "samples/exec",
    "errors",
)
_WIDTHS = (10, 6, 5, 8, 4, 5, 8, 9, 7, 7, 7, 8, 8, 7, 13, 12, 12, 6)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def server_us_per_request(p: Point) -> float | None:
    """Server CPU per request in microseconds (``server %`` / req/s); None without both figures."""
    if p.rps <= 0 or p.server_cpu_pct <= 0:
        return None
    return p.server_cpu_pct / 100 / p.rps * 1e6


def format_points(points: Sequence[Point], header: bool = True) -> str:
    rows = []
    if header:
        rows.append("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(_COLUMNS, _WIDTHS))))
    for p in points:
        cells = (
            p.target,
            p.model,
            p.transport,
            str(p.max_queue_delay_us),
            str(p.concurrency),
            str(p.batch_size),
            f"{p.rps:,.0f}",
            f"{p.samples_per_s:,.0f}",
            _ms(p.p50_ms),
            _ms(p.p95_ms),
            _ms(p.p99_ms),
            f"{p.client_cpu_pct:.0f}",
            f"{p.server_cpu_pct:.0f}",
            f"{p.other_cpu_pct:.0f}",
            "-" if (us := server_us_per_request(p)) is None else f"{us:.0f}",
            f"{p.top_thread_cpu_pct:.0f}",
            "-" if p.samples_per_execution is None else f"{p.samples_per_execution:.2f}",
            str(p.errors),
        )
        rows.append("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, _WIDTHS))))
        if p.first_error:
            rows.append(f"    first error: {p.first_error[:200]}")
    return "\n".join(rows)


def format_references(references: dict[str, Any]) -> str:
    lines = ["in-process ONNX Runtime:"]
    for model, ref in references.items():
        lines.append(
            f"  {model}: {ref['samples_per_s']:,.0f} samples/s at batch {ref['batch']} "
            f"({ref['threads']} intra-op threads, {ref['ms_per_batch']:.3f} ms a batch, "
            f"CPU {ref['cpu_pct']:.0f}%)"
        )
    return "\n".join(lines)


def format_soak(soak: SoakResult) -> str:
    d = soak.drift()
    series = ", ".join(f"{t:.0f}s:{rss / 2**20:.1f}" for t, rss in soak.samples)
    return (
        f"soak {soak.model} {soak.transport} c={soak.concurrency} {soak.duration_s:.0f} s: "
        f"{soak.rps:,.0f} req/s, p99 {_ms(soak.p99_ms)} ms, {soak.errors} errors\n"
        f"  RSS MiB series: {series}\n"
        f"  RSS first {d.get('first_mib', 0):.1f}, last {d.get('last_mib', 0):.1f}, min {d.get('min_mib', 0):.1f}, "
        f"max {d.get('max_mib', 0):.1f}; drift {d.get('drift_mib', 0):+.1f} MiB ({d.get('drift_pct', 0):+.1f}%), "
        f"second-half slope {d.get('second_half_slope_mib_per_min', float('nan')):+.2f} MiB/min"
    )


def _find(
    points: Sequence[Point], target: str, model: str, transport: str, concurrency: int, delay: int = 0
) -> Point | None:
    """The batch-1 point of these settings with answered requests (the targets are about batch 1)."""
    for p in points:
        if (p.target, p.model, p.transport, p.concurrency, p.max_queue_delay_us, p.batch_size) == (
            target,
            model,
            transport,
            concurrency,
            delay,
            1,
        ) and p.requests > 0:
            return p
    return None


@dataclass(frozen=True)
class _Metric:
    unit: str
    read: Callable[[Point], float | None]
    higher_is_better: bool

    def text(self, value: float) -> str:
        return f"{value:,.2f} {self.unit}" if self.unit == "ms" else f"{value:,.0f} {self.unit}"


RPS = _Metric("req/s", lambda p: p.rps, True)
P50 = _Metric("ms", lambda p: p.p50_ms, False)
CPU = _Metric("us/req", server_us_per_request, False)
_LABEL = {"grpc": "gRPC", "http": "REST", "json": "REST JSON", "shm": "shm"}


def _compare(
    name: str, metric: _Metric, ours: tuple[str, Point | None], other: tuple[str, Point | None], factor: float = 1.0
) -> dict[str, Any]:
    """``ours`` against ``factor`` x ``other`` on ``metric``: MET, NOT MET, or n/a when a point is missing."""
    (ours_label, ours_point), (other_label, other_point) = ours, other
    a = metric.read(ours_point) if ours_point else None
    b = metric.read(other_point) if other_point else None
    op = ">=" if metric.higher_is_better else "<="
    scale = "" if factor == 1.0 else f"{factor:g}x "
    threshold = f"{op} {scale}{other_label}"
    if a is None or b is None or b <= 0:
        missing = [label for label, value in ((ours_label, a), (other_label, b)) if value is None]
        return {
            "target": name,
            "status": "n/a",
            "value": None,
            "threshold": threshold,
            "detail": f"not measured: {', '.join(missing) or other_label + ' is 0'}",
        }
    ratio = a / b
    met = ratio >= factor if metric.higher_is_better else ratio <= factor
    return {
        "target": name,
        "status": "MET" if met else "NOT MET",
        "value": ratio,
        "threshold": threshold,
        "detail": f"{ours_label} {metric.text(a)} {op} {scale}{other_label} {metric.text(b)} ({ratio:.2f}x)",
    }


def _versus_mlserver(points: Sequence[Point]) -> dict[str, Any]:
    """Every appliance point against MLServer's point of the same model, concurrency and delay (our REST
    binary against its REST JSON, the only REST it has); the verdict is the smallest ratio."""
    pairs = []
    for p in points:
        if p.target != "appliance" or p.batch_size != 1 or p.requests == 0:
            continue
        theirs = _find(points, "mlserver", p.model, "json" if p.transport == "http" else p.transport, p.concurrency)
        if theirs is not None:
            ours_where = f"{p.model} {_LABEL[p.transport]} c={p.concurrency}"
            pairs.append((p.rps / theirs.rps, ours_where, p, theirs))
    name = f"every point >= {OVER_MLSERVER:g}x MLServer"
    if not pairs:
        return {
            "target": name,
            "status": "n/a",
            "value": None,
            "threshold": f">= {OVER_MLSERVER:g}x mlserver",
            "detail": "not measured: needs appliance and mlserver points",
        }
    short = [pair for pair in pairs if pair[0] < OVER_MLSERVER]
    ratio, where, ours, theirs = min(pairs, key=lambda pair: pair[0])
    detail = (
        f"{len(pairs) - len(short)} of {len(pairs)} points; lowest {where}: appliance {ours.rps:,.0f} req/s vs "
        f"mlserver {_LABEL[theirs.transport]} {theirs.rps:,.0f} ({ratio:.2f}x)"
    )
    if short:
        detail += "; short: " + ", ".join(f"{w} {r:.2f}x" for r, w, _, _ in short)
    return {
        "target": name,
        "status": "MET" if not short else "NOT MET",
        "value": ratio,
        "threshold": f">= {OVER_MLSERVER:g}x mlserver",
        "detail": detail,
    }


def evaluate_targets(
    points: Sequence[Point], references: dict[str, Any], soak: SoakResult | None
) -> list[dict[str, Any]]:
    """One entry per target of issue 8 (and issue 3's RSS target when there is a soak): target, status
    (MET, NOT MET, n/a), value (the ratio), threshold, detail (the figures).

    Only batch-1 points at max_queue_delay 0 count; ``references`` (in-process ONNX Runtime) are shown in
    their own table and judged by no target of issue 8.
    """
    if soak is not None:
        return [_soak_target(soak)]
    c = IMAGE_CONCURRENCY

    def at(target: str, model: str, transport: str, concurrency: int) -> tuple[str, Point | None]:
        return f"{target} {_LABEL[transport]}", _find(points, target, model, transport, concurrency)

    results = [
        _compare(f"image gRPC c={c}", RPS, at("appliance", "image", "grpc", c), at("triton", "image", "grpc", c)),
        _compare(f"image REST c={c}", RPS, at("appliance", "image", "http", c), at("triton", "image", "http", c)),
        _compare(
            f"image shm c={c} vs our gRPC",
            RPS,
            at("appliance", "image", "shm", c),
            at("appliance", "image", "grpc", c),
            SHM_OVER_GRPC,
        ),
        _compare(
            f"image shm c={c} vs Triton", RPS, at("appliance", "image", "shm", c), at("triton", "image", "shm", c)
        ),
        _versus_mlserver(points),
        _compare(
            "mlp gRPC c=64 server CPU",
            CPU,
            at("appliance", "mlp", "grpc", 64),
            at("grpc-floor", "mlp", "grpc", 64),
            CPU_OVER_FLOOR,
        ),
        _compare("cnn gRPC c=64", RPS, at("appliance", "cnn", "grpc", 64), at("triton", "cnn", "grpc", 64)),
    ]
    for model in sorted({p.model for p in points if p.concurrency == 1}):
        for transport in ("grpc", "http"):
            results.append(
                _compare(
                    f"{model} {_LABEL[transport]} c=1 p50",
                    P50,
                    at("appliance", model, transport, 1),
                    at("triton", model, transport, 1),
                )
            )
    return results


def _soak_target(soak: SoakResult) -> dict[str, Any]:
    name = "RSS steady under load (issue 3, soak)"
    if not soak.samples:
        return {"target": name, "status": "n/a", "value": None, "threshold": "", "detail": "no RSS samples"}
    d = soak.drift()
    slope = d["second_half_slope_mib_per_min"]
    growth = (slope * soak.duration_s / 120 / d["last_mib"] * 100) if not math.isnan(slope) else None
    status = "n/a" if growth is None else ("MET" if growth < RSS_SECOND_HALF_GROWTH_PCT else "NOT MET")
    return {
        "target": name,
        "status": status,
        "value": growth,
        "threshold": f"second-half growth < {RSS_SECOND_HALF_GROWTH_PCT}%",
        "detail": f"second-half growth {'-' if growth is None else f'{growth:.2f}%'} "
        f"(< {RSS_SECOND_HALF_GROWTH_PCT}%); drift {d['drift_mib']:+.1f} MiB ({d['drift_pct']:+.1f}%) over "
        f"{soak.duration_s:.0f} s, {len(soak.samples)} samples"
        + ("" if soak.duration_s >= 600 else "; issue asks 600 s"),
    }


def format_targets(results: Sequence[dict[str, Any]], title: str = "targets (issue 8; ratios of this run)") -> str:
    """One verdict line per target: ``MET  image gRPC c=16: appliance gRPC 412 req/s >= triton gRPC 398 ...``."""
    lines = [f"{title}:"]
    for r in results:
        lines.append(f"  {r['status']:<7} {r['target']}: {r['detail']}")
    return "\n".join(lines)

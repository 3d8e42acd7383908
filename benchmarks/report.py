"""Tables and the verdict against issue 3's targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks.measure import Point, SoakResult

RATIO_VS_TRITON = 1.5  # both models, gRPC, c=64: at least 1.5x Triton's req/s
SHARE_OF_INPROCESS = 0.5  # CNN, gRPC, c=64: at least half of in-process batch-32 samples/s
P50_C1_MS = 0.6  # c=1, max_queue_delay 0: p50 under 0.6 ms
RSS_SECOND_HALF_GROWTH_PCT = 2.0  # soak: RSS growth over the second half of the run (fitted) under 2%

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
    "errors",
)
_WIDTHS = (9, 8, 5, 8, 4, 5, 8, 9, 7, 7, 7, 8, 8, 7, 6)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
    """The batch-1 point of these settings (issue 3's targets are about batch-1 requests only)."""
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


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def evaluate_targets(
    points: Sequence[Point], references: dict[str, Any], soak: SoakResult | None
) -> list[dict[str, Any]]:
    """One entry per target of issue 3: name, measured value, threshold, status (PASS/FAIL/n/a), detail.

    Only batch-1 points count (the targets are about batch-1 requests); points at other batch sizes are
    reported in the table and the JSON, not judged here.
    """
    results: list[dict[str, Any]] = []
    models = sorted({p.model for p in points if p.batch_size == 1})
    for model in models:
        ours, triton = _find(points, "appliance", model, "grpc", 64), _find(points, "triton", model, "grpc", 64)
        ratio = ours.rps / triton.rps if ours and triton else None
        results.append(
            {
                "target": f"{model} gRPC c=64 vs Triton",
                "value": ratio,
                "threshold": f">= {RATIO_VS_TRITON}x",
                "status": _verdict(None if ratio is None else ratio >= RATIO_VS_TRITON),
                "detail": (
                    f"{ours.rps:,.0f} vs {triton.rps:,.0f} req/s"
                    if ours and triton
                    else "needs appliance and triton gRPC c=64 points"
                ),
            }
        )
    if "cnn" in references:
        ref = references["cnn"]["samples_per_s"]
        ours, triton = _find(points, "appliance", "cnn", "grpc", 64), _find(points, "triton", "cnn", "grpc", 64)
        share = ours.rps / ref if ours else None
        detail = f"in-process {ref:,.0f} samples/s"
        if ours:
            detail += f"; ours {ours.rps:,.0f} req/s"
        if triton:
            detail += f"; Triton {triton.rps:,.0f} req/s = {triton.rps / ref:.0%}"
        results.append(
            {
                "target": "cnn gRPC c=64 vs in-process batch-32",
                "value": share,
                "threshold": f">= {SHARE_OF_INPROCESS:.0%}",
                "status": _verdict(None if share is None else share >= SHARE_OF_INPROCESS),
                "detail": detail,
            }
        )
    for model in models:
        for transport in ("grpc", "http"):
            ours = _find(points, "appliance", model, transport, 1)
            triton = _find(points, "triton", model, transport, 1)
            if ours is None and triton is None:
                continue
            p50 = ours.p50_ms if ours else None
            results.append(
                {
                    "target": f"{model} {transport} c=1 delay 0 p50",
                    "value": p50,
                    "threshold": f"< {P50_C1_MS} ms",
                    "status": _verdict(None if p50 is None else p50 < P50_C1_MS),
                    "detail": (f"ours {_ms(p50)} ms" if ours else "no appliance point")
                    + (f"; Triton {_ms(triton.p50_ms)} ms" if triton else ""),
                }
            )
    if soak is not None and soak.samples:
        d = soak.drift()
        slope = d["second_half_slope_mib_per_min"]
        growth = (slope * soak.duration_s / 120 / d["last_mib"] * 100) if not math.isnan(slope) else None
        results.append(
            {
                "target": "RSS steady under load (soak)",
                "value": growth,
                "threshold": f"second-half growth < {RSS_SECOND_HALF_GROWTH_PCT}%",
                "status": _verdict(None if growth is None else growth < RSS_SECOND_HALF_GROWTH_PCT),
                "detail": f"drift {d['drift_mib']:+.1f} MiB ({d['drift_pct']:+.1f}%) over {soak.duration_s:.0f} s, "
                f"{len(soak.samples)} samples" + ("" if soak.duration_s >= 600 else "; issue asks 600 s"),
            }
        )
    else:
        results.append(
            {
                "target": "RSS steady under load (soak)",
                "value": None,
                "threshold": "run --soak 600",
                "status": "n/a",
                "detail": "not measured in this run",
            }
        )
    return results


def format_targets(results: Sequence[dict[str, Any]]) -> str:
    lines = ["targets (issue 3):"]
    for r in results:
        value = r["value"]
        shown = "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append(f"  [{r['status']:>4}] {r['target']:<40} {shown:>8}  ({r['threshold']}; {r['detail']})")
    return "\n".join(lines)

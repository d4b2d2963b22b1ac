"""The service page's probe panel: per vantage up/down, last check, 24 h latency chart.

Pure presentation: fed the stored results (`Live.probe_results`) and the time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SPAN_S = 86_400.0
WIDTH = 240
HEIGHT = 36


@dataclass(frozen=True)
class LatencyChart:
    """An inline SVG chart of one vantage's checks: latency of good ones as a line, failed
    ones as red marks along the bottom."""

    path: str  # polyline points "x,y x,y ..." of good checks
    fails: list[float]  # x of failed checks
    max_ms: float
    median_ms: float | None
    width: int = WIDTH
    height: int = HEIGHT


@dataclass(frozen=True)
class VantageRow:
    vantage: str
    target: str
    site: str
    ok: bool
    status: int | None
    latency_ms: float | None
    at: str
    chart: LatencyChart


def latency_chart(points: Sequence[tuple[float, float | None]], now: float) -> LatencyChart:
    t0 = now - SPAN_S
    good = [(t, ms) for t, ms in points if ms is not None and t >= t0]
    top = max((ms for _, ms in good), default=0.0)
    top = max(top, 1.0)
    coords = []
    for t, ms in good:
        x = (t - t0) / SPAN_S * WIDTH
        y = HEIGHT - 4 - ms / top * (HEIGHT - 8)
        coords.append(f"{x:.1f},{y:.1f}")
    fails = [round((t - t0) / SPAN_S * WIDTH, 1) for t, ms in points if ms is None and t >= t0]
    values = sorted(ms for _, ms in good)
    median = values[len(values) // 2] if values else None
    return LatencyChart(" ".join(coords), fails, round(top, 1), median)


def vantage_rows(
    latest: Sequence[Mapping[str, Any]],
    history: Mapping[tuple[str, str], Sequence[tuple[float, float | None]]],
    now: float,
) -> list[VantageRow]:
    rows = []
    for p in latest:
        key = (str(p["target"]), str(p["vantage"]))
        rows.append(
            VantageRow(
                vantage=key[1],
                target=key[0],
                site=str(p["site"]),
                ok=bool(p["ok"]),
                status=p.get("status"),
                latency_ms=p.get("latency_ms"),
                at=str(p["at"]),
                chart=latency_chart(history.get(key, ()), now),
            )
        )
    return rows

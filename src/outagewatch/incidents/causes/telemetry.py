"""`capacity` and `ddos` from the operator's metrics (one analysis gives both):

- `capacity`: an `errors` (or `latency`) metric rising while the `load` metric is high,
  with traffic and sources per unit of load normal;
- `ddos`: `traffic` or `sources` far above what the `load` metric explains (x4 or more
  per unit of load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from outagewatch.incidents.causes.base import Cause, Context, FunctionRule, hm, num, times
from outagewatch.incidents.evidence import MetricSeries

REFERENCE_MINUTES = 360  # normal levels: the median of the 6 hours before the window
MIN_REFERENCE_POINTS = 10
ANOMALOUS = 0.999  # generic-scorer score above which a metric minute is anomalous
FLOOD_FACTOR = 4.0  # traffic or sources per unit of load this many times usual: a flood


@dataclass(frozen=True)
class _Shape:
    """One metric over the window against its normal level."""

    name: str
    ref: float  # median of the reference hours
    points: list[tuple[int, float, float]]  # (minute, value, score) in the window
    ref_points: list[tuple[int, float, float]]

    @property
    def peak(self) -> float:
        return max(v for _, v, _ in self.points)

    def ratio(self, v: float) -> float:
        return v / self.ref if self.ref > 0 else (math.inf if v > 0 else 1.0)

    def rise(self, factor: float = 1.5) -> tuple[int, float] | None:
        """The first minute the metric was anomalously high (score and size), or None."""
        for m, v, s in self.points:
            if s >= ANOMALOUS and v > self.ref and self.ratio(v) >= factor:
                return m, v
        return None

    def value_at(self, minute: int) -> float | None:
        for m, v, _ in self.points:
            if m == minute:
                return v
        return None


def _median(values: list[float]) -> float:
    import statistics  # here: ~1.5 ms of imports that a replay without telemetry skips

    return float(statistics.median(values))


def _shape(ctx: Context, ser: MetricSeries) -> _Shape | None:
    ref_points = ser.points(ctx.lo - REFERENCE_MINUTES, ctx.lo - 1)
    points = ser.points(ctx.lo, ctx.hi)
    if len(ref_points) < MIN_REFERENCE_POINTS or not points:
        return None
    ref = _median([v for _, v, _ in ref_points])
    return _Shape(ser.name, ref, points, ref_points)


def _per_load(a: _Shape, load: _Shape) -> tuple[float, int] | None:
    """Peak of a/load in the window over its reference median: (ratio, minute of peak)."""
    ref_load = {m: v for m, v, _ in load.ref_points}
    win_load = {m: v for m, v, _ in load.points}
    ref = [v / ref_load[m] for m, v, _ in a.ref_points if ref_load.get(m, 0) > 0]
    win = [(v / win_load[m], m) for m, v, _ in a.points if win_load.get(m, 0) > 0]
    if len(ref) < MIN_REFERENCE_POINTS or not win:
        return None
    base = _median(ref)
    peak, minute = max(win)
    return (peak / base if base > 0 else math.inf), minute


def _telemetry(ctx: Context) -> list[Cause]:
    """`capacity` and `ddos` from the operator's metrics."""
    if ctx.svc is None or not ctx.svc.metrics:
        ctx.checked.append(f"{ctx.inc.service} sends no telemetry (no metrics in the catalog)")
        return []
    shapes: dict[str, list[_Shape]] = {}
    for role in ("load", "traffic", "sources", "errors", "latency"):
        shapes[role] = [s for s in (_shape(ctx, ser) for ser in ctx.metric(role)) if s]
    if not any(shapes.values()):
        names = ", ".join(sorted(ctx.svc.metrics))
        ctx.checked.append(f"no recent telemetry ({names}) with enough history to compare")
        return []
    load = shapes["load"][0] if shapes["load"] else None
    failing = None  # (shape, rise minute, value)
    for s in shapes["errors"] + shapes["latency"]:
        r = s.rise()
        if r is not None and (failing is None or r[0] < failing[1]):
            failing = (s, r[0], r[1])

    # ---------------------------------------------------------------- flood beyond load
    flood: list[tuple[float, str]] = []  # (factor, sentence)
    for s in shapes["traffic"] + shapes["sources"]:
        if load is not None:
            pl = _per_load(s, load)
            if pl is None:
                continue
            factor, minute = pl
            at = s.value_at(minute)
            lv = load.value_at(minute)
            flood.append(
                (
                    factor,
                    f"{s.name} rose x{times(s.ratio(at or s.peak))} ({num(s.ref)} -> "
                    f"{num(at or s.peak)}) while {load.name} was x{times(load.ratio(lv or 0))} "
                    f"of normal: {s.name} per unit of {load.name} x{times(factor)} its usual level",
                )
            )
        else:
            factor = s.ratio(s.peak)
            flood.append(
                (factor, f"{s.name} rose x{times(factor)} ({num(s.ref)} -> {num(s.peak)})")
            )
    flood.sort(key=lambda f: -f[0])
    causes: list[Cause] = []
    top_flood = flood[0][0] if flood else 0.0
    if top_flood >= FLOOD_FACTOR:
        sentences = [t for f, t in flood if f >= FLOOD_FACTOR]
        if load is not None:
            load_ratio = load.ratio(load.peak)
            conf = 0.55 + 0.15 * min(2.0, math.log2(top_flood / FLOOD_FACTOR))
            if load_ratio >= 1.5:
                conf *= 0.6
                sentences.append(f"but {load.name} rose too (x{times(load_ratio)})")
            else:
                sentences.append(
                    f"legitimate load stayed flat: {load.name} peaked at x{times(load_ratio)} "
                    f"of normal ({num(load.peak)})"
                )
        else:
            conf = 0.4
            sentences.append(
                "no load metric to tell legitimate demand from a flood (give a `load` metric)"
            )
        if failing is not None:
            conf += 0.05
            s = failing[0]
            sentences.append(f"{s.name} rose with it ({num(s.ref)} -> {num(s.peak)})")
        causes.append(Cause("ddos", min(conf, 0.95), tuple(sentences)))

    # ---------------------------------------------------------------- failures with load
    if failing is not None:
        s, rise_min, _ = failing
        sentences = [
            f"{s.name} rose from {num(s.ref)} to {num(s.peak)} "
            f"(anomalous from {hm(rise_min * 60)} UTC)"
        ]
        conf = 0.3
        if load is not None:
            lv = load.value_at(rise_min)
            if lv is None:
                lv = load.peak
            high = load.ratio(lv) >= 1.3 or any(
                m <= rise_min and sc >= ANOMALOUS and v > load.ref for m, v, sc in load.points
            )
            if high:
                conf += 0.25
                sentences.insert(
                    0,
                    f"{s.name} rose when {load.name} passed {num(lv)} "
                    f"(x{times(load.ratio(lv))} its usual {num(load.ref)})",
                )
            else:
                conf -= 0.1
                sentences.append(f"{load.name} was normal then ({num(lv)})")
            rho = _spearman(s, load)
            if rho is not None and rho >= 0.5:
                conf += 0.1
                sentences.append(f"{s.name} followed {load.name} (rank correlation {rho:.2f})")
            capped = _capped(s, load)
            if capped is not None:
                conf += 0.15
                sentences.append(capped)
            ratios = [
                (a.name, pl[0])
                for a in shapes["traffic"] + shapes["sources"]
                if (pl := _per_load(a, load)) is not None
            ]
            if ratios and max(r for _, r in ratios) < 2.0:
                conf += 0.1
                sentences.append(
                    "traffic per unit of load stayed normal ("
                    + ", ".join(f"{n} per {load.name} x{times(r)}" for n, r in ratios)
                    + ")"
                )
            if top_flood >= FLOOD_FACTOR:
                conf *= 0.4
        else:
            conf = 0.25
            sentences.append("no load metric to relate the failures to demand")
        causes.append(Cause("capacity", min(conf, 0.95), tuple(sentences)))
    elif not causes:
        names = ", ".join(s.name for ss in shapes.values() for s in ss)
        ctx.checked.append(f"telemetry ({names}) shows no failure growing with load and no flood")
    return causes


def _capped(err: _Shape, load: _Shape) -> str | None:
    """'errors fell when load was capped': load dropped well below its peak, errors followed."""
    pts = load.points
    k = max(range(len(pts)), key=lambda i: (pts[i][1], -i))
    peak_m, peak_v = pts[k][0], pts[k][1]
    after = [(m, v) for m, v, _ in pts[k + 1 :]]
    if len(after) < 3 or peak_v <= 0:
        return None
    tail_load = _median([v for _, v in after[-5:]])
    if tail_load > 0.85 * peak_v:
        return None
    errs = [v for m, v, _ in err.points if m > peak_m]
    if len(errs) < 3:
        return None
    tail_err = _median(errs[-5:])
    if tail_err > err.ref + 0.5 * (err.peak - err.ref):
        return None
    return (
        f"{err.name} fell back to {num(tail_err)} once {load.name} was held at "
        f"{num(tail_load)}, below its peak of {num(peak_v)}"
    )


def _spearman(a: _Shape, b: _Shape) -> float | None:
    bv = {m: v for m, v, _ in b.points}
    pairs = [(v, bv[m]) for m, v, _ in a.points if m in bv]
    if len(pairs) < 10:
        return None
    x = np.argsort(np.argsort([p[0] for p in pairs])).astype(float)
    y = np.argsort(np.argsort([p[1] for p in pairs])).astype(float)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


RULE = FunctionRule(("capacity", "ddos"), _telemetry)

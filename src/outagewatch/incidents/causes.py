"""What most likely caused an incident, with the evidence (contract §4 `causes`).

A pure function of the incident, the incidents going on at the same time, the catalog and
the evidence (telemetry, probes, official status): no I/O, no clock. Every cause carries a
confidence in [0, 1] and sentences naming the metrics, probes, services or countries it
rests on. Each rule asks for specific evidence; when none is strong enough the answer is
`unknown`, with what was checked, rather than a confident wrong guess.

- `capacity`: an `errors` (or `latency`) metric rising while the `load` metric is high,
  with traffic and sources per unit of load normal;
- `ddos`: `traffic` or `sources` far above what the `load` metric explains (x4 or more
  per unit of load);
- `failover`: probes of a site (e.g. `primary`) failing, the `public` endpoint failing
  with it, another site healthy;
- `upstream`: a provider in `depends_on` failing at the same time (its own incident, its
  public probes, or its status page);
- `regional_network`: 3+ unrelated services failing at once with most of their reports
  from one country;
- `shared_platform`: 2+ services of one `group` failing at once.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from outagewatch.catalog import Catalog, Service
from outagewatch.events import iso
from outagewatch.pipeline.evidence import PUBLIC_SITE, Evidence, MetricSeries

CONCURRENT_S = 1200  # incidents starting within 20 minutes of each other are concurrent
PRE_MINUTES = 15  # the evidence window starts this long before the incident
REFERENCE_MINUTES = 360  # normal levels: the median of the 6 hours before the window
MIN_REFERENCE_POINTS = 10
ANOMALOUS = 0.999  # generic-scorer score above which a metric minute is anomalous
DOWN_MINUTES = 2  # a site is down when most of its checks failed in this many minutes
REGIONAL_SHARE = 0.6  # an incident is "in" a country when this share of reports is from it
REGIONAL_MIN_SERVICES = 3
LISTED_MIN = 0.25  # causes below this confidence are left out
UNKNOWN_BELOW = 0.5  # `unknown` is added when no cause reaches this confidence
UNKNOWN_MAX = 0.8

# Kinds of cause that a cluster explains, by cluster kind.
CLUSTER_CAUSE = {"upstream": "upstream", "regional": "regional_network", "group": "shared_platform"}


# ==================================================================== incidents as seen here
@dataclass(frozen=True, slots=True)
class IncidentView:
    """The parts of an incident (a contract §4 doc) that explanations use."""

    id: str
    service: str
    start: float  # epoch seconds
    end: float | None  # None while ongoing
    total: int
    countries: tuple[tuple[str, int], ...]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> IncidentView:
        end = doc.get("ended_at")
        return cls(
            id=str(doc["id"]),
            service=str(doc["service"]),
            start=_ts(doc["started_at"]),
            end=None if end is None else _ts(end),
            total=int(doc.get("total_reports") or 0),
            countries=tuple((c["country"], int(c["reports"])) for c in doc.get("countries", [])),
        )

    def top_country(self) -> tuple[str, float] | None:
        """The country with most reports and its share, or None without reports."""
        n = sum(r for _, r in self.countries)
        if n <= 0 or not self.countries:
            return None
        country, reports = max(self.countries, key=lambda cr: (cr[1], cr[0]))
        return country, reports / n

    def concurrent(self, other: IncidentView, window_s: float = CONCURRENT_S) -> bool:
        """Starting within `window_s` of each other and overlapping in time."""
        if abs(self.start - other.start) > window_s:
            return False
        a_end = math.inf if self.end is None else self.end
        b_end = math.inf if other.end is None else other.end
        return self.start < b_end and other.start < a_end


def _ts(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Cause:
    kind: str
    confidence: float
    evidence: tuple[str, ...]

    def doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "confidence": round(min(max(self.confidence, 0.0), 1.0), 2),
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    causes: list[dict[str, Any]]
    probe_confirmed: bool | None


# ==================================================================== entry point
def explain(
    inc: IncidentView,
    others: Sequence[IncidentView],
    *,
    catalog: Catalog | None,
    evidence: Evidence | None,
    final_minute: int,
    cluster: Mapping[str, Any] | None = None,
    window_s: float = CONCURRENT_S,
) -> Explanation:
    """Causes of `inc` (sorted, highest confidence first) and whether probes confirm it.

    `others` are other incidents (any; the concurrent ones are picked here), `final_minute`
    the last minute whose evidence is final, `cluster` the incident's cluster if any.
    """
    svc = catalog.services.get(inc.service) if catalog is not None else None
    concurrent = [o for o in others if o.id != inc.id and inc.concurrent(o, window_s)]
    lo = int(inc.start // 60) - PRE_MINUTES
    hi = final_minute if inc.end is None else min(final_minute, int(inc.end // 60))
    hi = max(hi, lo)
    ctx = _Ctx(inc, svc, catalog, evidence, concurrent, lo, hi)
    found: list[Cause] = []
    found += _telemetry(ctx)
    found += _failover(ctx)
    found += _upstream(ctx)
    found += _regional(ctx)
    found += _shared_platform(ctx)
    if cluster is not None:
        # The cluster that explains most incidents wins; other shared explanations weaken.
        keep = CLUSTER_CAUSE.get(str(cluster.get("kind")))
        shared = set(CLUSTER_CAUSE.values())
        found = [
            Cause(c.kind, c.confidence * 0.7, c.evidence)
            if c.kind in shared and c.kind != keep
            else c
            for c in found
        ]
    found = [c for c in found if c.confidence >= LISTED_MIN]
    found.sort(key=lambda c: (-round(c.confidence, 2), c.kind))
    best = found[0].confidence if found else 0.0
    if best < UNKNOWN_BELOW:
        # Sure that nothing known fits, never certain: the catalog may lack a provider.
        conf = min(UNKNOWN_MAX, max(UNKNOWN_BELOW, 1.0 - best))
        found.append(Cause("unknown", conf, tuple(ctx.checked)))
        found.sort(key=lambda c: (-round(c.confidence, 2), c.kind))
    status = _own_status(ctx)
    if status and found:
        top = found[0]
        found[0] = Cause(top.kind, top.confidence, (*top.evidence, status))
    return Explanation([c.doc() for c in found], _probe_confirmed(ctx))


@dataclass
class _Ctx:
    inc: IncidentView
    svc: Service | None
    catalog: Catalog | None
    ev: Evidence | None
    concurrent: list[IncidentView]
    lo: int  # evidence window, final minutes lo..hi
    hi: int

    def __post_init__(self) -> None:
        self.checked: list[str] = []  # what was looked at, for `unknown`

    def metric(self, role: str) -> list[MetricSeries]:
        if self.svc is None or self.ev is None:
            return []
        out = []
        for name, r in sorted(self.svc.metrics.items()):
            ser = self.ev.metric(self.svc.id, name) if r == role else None
            if ser is not None:
                out.append(ser)
        return out


# ==================================================================== telemetry
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


def _shape(ctx: _Ctx, ser: MetricSeries) -> _Shape | None:
    ref_points = ser.points(ctx.lo - REFERENCE_MINUTES, ctx.lo - 1)
    points = ser.points(ctx.lo, ctx.hi)
    if len(ref_points) < MIN_REFERENCE_POINTS or not points:
        return None
    ref = statistics.median(v for _, v, _ in ref_points)
    return _Shape(ser.name, ref, points, ref_points)


def _per_load(a: _Shape, load: _Shape) -> tuple[float, int] | None:
    """Peak of a/load in the window over its reference median: (ratio, minute of peak)."""
    ref_load = {m: v for m, v, _ in load.ref_points}
    win_load = {m: v for m, v, _ in load.points}
    ref = [v / ref_load[m] for m, v, _ in a.ref_points if ref_load.get(m, 0) > 0]
    win = [(v / win_load[m], m) for m, v, _ in a.points if win_load.get(m, 0) > 0]
    if len(ref) < MIN_REFERENCE_POINTS or not win:
        return None
    base = statistics.median(ref)
    peak, minute = max(win)
    return (peak / base if base > 0 else math.inf), minute


def _telemetry(ctx: _Ctx) -> list[Cause]:
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
                    f"{s.name} rose x{_x(s.ratio(at or s.peak))} ({_num(s.ref)} -> "
                    f"{_num(at or s.peak)}) while {load.name} was x{_x(load.ratio(lv or 0))} "
                    f"of normal: {s.name} per unit of {load.name} x{_x(factor)} its usual level",
                )
            )
        else:
            factor = s.ratio(s.peak)
            flood.append((factor, f"{s.name} rose x{_x(factor)} ({_num(s.ref)} -> {_num(s.peak)})"))
    flood.sort(key=lambda f: -f[0])
    causes: list[Cause] = []
    top_flood = flood[0][0] if flood else 0.0
    if top_flood >= 4.0:
        sentences = [t for f, t in flood if f >= 4.0]
        if load is not None:
            load_ratio = load.ratio(load.peak)
            conf = 0.55 + 0.15 * min(2.0, math.log2(top_flood / 4.0))
            if load_ratio >= 1.5:
                conf *= 0.6
                sentences.append(f"but {load.name} rose too (x{_x(load_ratio)})")
            else:
                sentences.append(
                    f"legitimate load stayed flat: {load.name} peaked at x{_x(load_ratio)} "
                    f"of normal ({_num(load.peak)})"
                )
        else:
            conf = 0.4
            sentences.append(
                "no load metric to tell legitimate demand from a flood (give a `load` metric)"
            )
        if failing is not None:
            conf += 0.05
            s = failing[0]
            sentences.append(f"{s.name} rose with it ({_num(s.ref)} -> {_num(s.peak)})")
        causes.append(Cause("ddos", min(conf, 0.95), tuple(sentences)))

    # ---------------------------------------------------------------- failures with load
    if failing is not None:
        s, rise_min, _ = failing
        sentences = [
            f"{s.name} rose from {_num(s.ref)} to {_num(s.peak)} "
            f"(anomalous from {_hm(rise_min * 60)} UTC)"
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
                    f"{s.name} rose when {load.name} passed {_num(lv)} "
                    f"(x{_x(load.ratio(lv))} its usual {_num(load.ref)})",
                )
            else:
                conf -= 0.1
                sentences.append(f"{load.name} was normal then ({_num(lv)})")
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
                    + ", ".join(f"{n} per {load.name} x{_x(r)}" for n, r in ratios)
                    + ")"
                )
            if top_flood >= 4.0:
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
    tail_load = statistics.median(v for _, v in after[-5:])
    if tail_load > 0.85 * peak_v:
        return None
    errs = [v for m, v, _ in err.points if m > peak_m]
    if len(errs) < 3:
        return None
    tail_err = statistics.median(errs[-5:])
    if tail_err > err.ref + 0.5 * (err.peak - err.ref):
        return None
    return (
        f"{err.name} fell back to {_num(tail_err)} once {load.name} was held at "
        f"{_num(tail_load)}, below its peak of {_num(peak_v)}"
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


# ==================================================================== probes
@dataclass
class _Site:
    name: str
    targets: set[str]
    vantages: set[str]
    failing_from: set[str] = field(default_factory=set)  # vantages that saw a failure
    checks: int = 0
    failed: int = 0
    down_minutes: int = 0
    first_down: int | None = None
    error: str = ""


def _sites(ev: Evidence | None, service: str, lo: int, hi: int) -> dict[str, _Site]:
    """Per site: how its checks went in final minutes lo..hi."""
    out: dict[str, _Site] = {}
    if ev is None:
        return out
    per_minute: dict[tuple[str, int], list[int]] = {}
    for key in ev.probe_keys(service):
        _, target, site, vantage = key
        s = out.setdefault(site, _Site(site, set(), set()))
        ps = ev.probes[key]
        for m, ok, failed in ps.counts(lo, hi):
            s.targets.add(target)
            if vantage:
                s.vantages.add(vantage)
                if failed:
                    s.failing_from.add(vantage)
            s.checks += ok + failed
            s.failed += failed
            cell = per_minute.setdefault((site, m), [0, 0])
            cell[0] += ok
            cell[1] += failed
            if failed and ps.last_error:
                s.error = ps.last_error
    for (site, m), (ok, failed) in sorted(per_minute.items()):
        if failed > ok:
            s = out[site]
            s.down_minutes += 1
            if s.first_down is None:
                s.first_down = m
    return {k: v for k, v in out.items() if v.checks}


def _site_text(s: _Site) -> str:
    where = f" from {len(s.vantages)} vantage(s)" if s.vantages else ""
    fine = s.vantages - s.failing_from
    if s.failing_from and fine:  # seen failing from some places only: say which
        where = (
            f" (failing from {', '.join(sorted(s.failing_from))} only; "
            f"fine from {', '.join(sorted(fine))})"
        )
    return f"{s.name} site ({', '.join(sorted(s.targets))}){where}"


def _failover(ctx: _Ctx) -> list[Cause]:
    sites = _sites(ctx.ev, ctx.inc.service, ctx.lo, ctx.hi)
    if not sites:
        ctx.checked.append(f"no probe results for {ctx.inc.service}")
        return []
    public = sites.get(PUBLIC_SITE)
    if public is not None and public.failing_from and public.vantages - public.failing_from:
        ctx.checked.append(f"probes of {ctx.inc.service}: {_site_text(public)}")
    inner = [s for n, s in sorted(sites.items()) if n != PUBLIC_SITE]
    failed = [s for s in inner if s.down_minutes >= DOWN_MINUTES]
    healthy = [s for s in inner if s.checks >= 3 and s.down_minutes == 0]
    public_down = public is not None and public.down_minutes >= DOWN_MINUTES
    if not failed or public is None:
        if public_down:
            ctx.checked.append(
                f"public probes of {ctx.inc.service} failed, but no site of its own is probed "
                "failing (no failover pattern)"
            )
        else:
            ctx.checked.append(f"probes of {ctx.inc.service} show no failed site")
        return []
    first = min(failed, key=lambda s: (s.first_down or 0, s.name))
    t_fail = _hm((first.first_down or 0) * 60)
    if not public_down:
        ctx.checked.append(
            f"{first.name} site failed from {t_fail} UTC but the public endpoint stayed up "
            "(a working failover)"
        )
        return []
    assert public is not None
    sentences = [
        f"{_site_text(first)} failed from {t_fail} UTC ({first.failed} of {first.checks} "
        f"checks{', last: ' + first.error if first.error else ''})",
        f"the public endpoint ({', '.join(sorted(public.targets))}) failed with it from "
        f"{_hm((public.first_down or 0) * 60)} UTC ({public.failed} of {public.checks} checks)",
    ]
    if healthy:
        conf = 0.85
        for h in healthy:
            sentences.append(
                f"{_site_text(h)} stayed healthy ({h.checks - h.failed} of {h.checks} checks ok)"
                " but users were not moved to it"
            )
    else:
        conf = 0.35
        sentences.append("no healthy site to fail over to was probed")
    if (
        public.first_down is not None
        and first.first_down is not None
        and public.first_down + 2 < first.first_down
    ):
        conf *= 0.6
        sentences.append("the public endpoint failed before the site did")
    return [Cause("failover", conf, tuple(sentences))]


def _probe_confirmed(ctx: _Ctx) -> bool | None:
    """True when public probes failed during the incident, False when they were fine,
    None when the service has no probes (or no probe results in the incident's window)."""
    sites = _sites(ctx.ev, ctx.inc.service, ctx.lo + PRE_MINUTES - 5, ctx.hi)
    if not sites:
        return None
    public = sites.get(PUBLIC_SITE)
    if public is not None:
        return public.down_minutes >= DOWN_MINUTES
    return all(s.down_minutes >= DOWN_MINUTES for s in sites.values())


# ==================================================================== upstream
def _upstream(ctx: _Ctx) -> list[Cause]:
    if ctx.svc is None or not ctx.svc.depends_on:
        ctx.checked.append(f"{ctx.inc.service} depends on no provider in the catalog")
        return []
    causes = []
    for provider in ctx.svc.depends_on:
        parts: list[tuple[float, str]] = []
        own = [o for o in ctx.concurrent if o.service == provider]
        if own:
            o = min(own, key=lambda i: i.start)
            parts.append(
                (
                    0.6,
                    f"{provider} (listed in depends_on) has its own incident since "
                    f"{_hm(o.start)} UTC ({o.total:,} reports)",
                )
            )
        sites = _sites(ctx.ev, provider, ctx.lo, ctx.hi)
        pub = sites.get(PUBLIC_SITE)
        if pub is not None and pub.down_minutes >= DOWN_MINUTES:
            parts.append(
                (
                    0.5,
                    f"public probes of {provider} ({', '.join(sorted(pub.targets))}) failed "
                    f"from {_hm((pub.first_down or 0) * 60)} UTC",
                )
            )
        st = _bad_status(ctx, provider)
        if st is not None:
            parts.append(st)
        if not parts:
            ctx.checked.append(f"its provider {provider} is not failing (no incident, probes ok)")
            continue
        conf = 1.0 - math.prod(1.0 - p for p, _ in parts)
        siblings = sorted(
            {
                o.service
                for o in ctx.concurrent
                if ctx.catalog is not None
                and o.service in ctx.catalog.services
                and provider in ctx.catalog.services[o.service].depends_on
            }
        )
        sentences = [t for _, t in parts]
        if siblings:
            conf += min(0.2, 0.1 * len(siblings))
            sentences.append(
                f"other services that depend on {provider} are down too: {', '.join(siblings)}"
            )
        causes.append(Cause("upstream", min(conf, 0.95), tuple(sentences)))
    return causes


def _bad_status(ctx: _Ctx, service: str) -> tuple[float, str] | None:
    if ctx.ev is None:
        return None
    weight = {"major": 0.5, "critical": 0.55, "minor": 0.3}
    for r in ctx.ev.status_runs(service, ctx.lo * 60.0, (ctx.hi + 1) * 60.0):
        if r.indicator in weight:
            what = f' ("{r.incident or r.description}")' if (r.incident or r.description) else ""
            return (
                weight[r.indicator],
                f"the status page of {service} said {_indicator(r.indicator)} from "
                f"{_hm(r.start)} UTC{what}",
            )
    return None


def _own_status(ctx: _Ctx) -> str | None:
    got = _bad_status(ctx, ctx.inc.service)
    if got is None and ctx.ev is not None:
        runs = ctx.ev.status_runs(ctx.inc.service, ctx.lo * 60.0, (ctx.hi + 1) * 60.0)
        if any(r.indicator == "maintenance" for r in runs):
            return f"the status page of {ctx.inc.service} announced maintenance"
        if runs and all(r.indicator == "none" for r in runs):
            return f"the status page of {ctx.inc.service} said all systems operational"
    return None if got is None else "official: " + got[1]


def _indicator(ind: str) -> str:
    return {"minor": "minor problems", "major": "a major outage", "critical": "a critical outage"}[
        ind
    ]


# ==================================================================== regional
def in_country(inc: IncidentView) -> str | None:
    """The country an incident is concentrated in (most of its reports), or None."""
    top = inc.top_country()
    if top is None or top[1] < REGIONAL_SHARE:
        return None
    return top[0]


def family(catalog: Catalog | None, service: str) -> str:
    """What makes services related: their group, else their providers, else themselves."""
    svc = catalog.services.get(service) if catalog is not None else None
    if svc is not None and svc.group:
        return f"group:{svc.group}"
    if svc is not None and svc.depends_on:
        return "providers:" + ",".join(sorted(svc.depends_on))
    return f"service:{service}"


def _regional(ctx: _Ctx) -> list[Cause]:
    top = ctx.inc.top_country()
    country = in_country(ctx.inc)
    if country is None or top is None:
        ctx.checked.append("its reports are not concentrated in one country")
        return []
    there = sorted({o.service for o in ctx.concurrent if in_country(o) == country})
    services = sorted({ctx.inc.service, *there})
    families = {family(ctx.catalog, s) for s in services}
    if len(services) < REGIONAL_MIN_SERVICES or len(families) < REGIONAL_MIN_SERVICES:
        others = f" (only {', '.join(there)})" if there else ""
        ctx.checked.append(f"no other unrelated services fail in {country} at once{others}")
        return []
    conf = min(0.9, 0.4 + 0.07 * len(services))
    return [
        Cause(
            "regional_network",
            conf,
            (
                f"{len(services)} unrelated services fail in {country} at once: "
                + ", ".join(services),
                f"{round(100 * top[1])}% of the reports of {ctx.inc.service} come from "
                f"{country}; the rest of the world is fine",
            ),
        )
    ]


# ==================================================================== shared platform
def _shared_platform(ctx: _Ctx) -> list[Cause]:
    if ctx.svc is None or ctx.catalog is None or not ctx.svc.group:
        ctx.checked.append(f"{ctx.inc.service} belongs to no group")
        return []
    group = ctx.svc.group
    members = sorted(s for s, v in ctx.catalog.services.items() if v.group == group)
    down = sorted({ctx.inc.service, *(o.service for o in ctx.concurrent if o.service in members)})
    if len(down) < 2:
        ctx.checked.append(f"no other service of group {group} is down")
        return []
    spared = [s for s in members if s not in down]
    starts = [ctx.inc.start] + [o.start for o in ctx.concurrent if o.service in members]
    spread = round((max(starts) - min(starts)) / 60)
    conf = min(0.9, 0.45 + 0.4 * len(down) / len(members))
    sentences = [
        f"{len(down)} of {len(members)} services of group {group} are down at once: "
        + ", ".join(down),
        f"they started within {spread} minute(s) of each other",
    ]
    if spared:
        sentences.append(f"spared: {', '.join(spared)} (same group) stayed up")
    return [Cause("shared_platform", conf, tuple(sentences))]


# ==================================================================== formatting
def _num(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1:
        return f"{v:.4g}"
    return f"{v:.2g}"


def _x(r: float) -> str:
    if math.isinf(r):
        return "inf"
    return f"{r:.1f}" if r < 10 else f"{r:.0f}"


def _hm(t: float) -> str:
    return iso(t)[11:16]


def failing_providers(
    catalog: Catalog | None, evidence: Evidence | None, lo: int, hi: int
) -> Collection[str]:
    """Providers (services named in some `depends_on`) whose probes or status page say they
    are failing in final minutes lo..hi: an upstream cluster can form without their own
    incident."""
    if catalog is None or evidence is None:
        return ()
    providers = sorted({p for s in catalog.services.values() for p in s.depends_on})
    out = []
    for p in providers:
        pub = _sites(evidence, p, lo, hi).get(PUBLIC_SITE)
        bad = pub is not None and pub.down_minutes >= DOWN_MINUTES
        if not bad:
            bad = any(
                r.indicator in ("major", "critical")
                for r in evidence.status_runs(p, lo * 60.0, (hi + 1) * 60.0)
            )
        if bad:
            out.append(p)
    return out

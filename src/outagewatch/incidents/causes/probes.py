"""Probe and status-page evidence that several rules read: how each probed site of a
service fared, whether public probes confirm an incident, what the status page said."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from outagewatch.catalog import Catalog
from outagewatch.incidents.causes.base import DOWN_MINUTES, PRE_MINUTES, Context, hm
from outagewatch.incidents.evidence import PUBLIC_SITE, Evidence


@dataclass
class Site:
    name: str
    targets: set[str]
    vantages: set[str]
    failing_from: set[str] = field(default_factory=set)  # vantages that saw a failure
    checks: int = 0
    failed: int = 0
    down_minutes: int = 0
    first_down: int | None = None
    error: str = ""


def sites(ev: Evidence | None, service: str, lo: int, hi: int) -> dict[str, Site]:
    """Per site: how its checks went in final minutes lo..hi."""
    out: dict[str, Site] = {}
    if ev is None:
        return out
    per_minute: dict[tuple[str, int], list[int]] = {}
    for key in ev.probe_keys(service):
        _, target, site, vantage = key
        s = out.setdefault(site, Site(site, set(), set()))
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


def site_text(s: Site) -> str:
    where = f" from {len(s.vantages)} vantage(s)" if s.vantages else ""
    fine = s.vantages - s.failing_from
    if s.failing_from and fine:  # seen failing from some places only: say which
        where = (
            f" (failing from {', '.join(sorted(s.failing_from))} only; "
            f"fine from {', '.join(sorted(fine))})"
        )
    return f"{s.name} site ({', '.join(sorted(s.targets))}){where}"


def probe_confirmed(ctx: Context) -> bool | None:
    """True when public probes failed during the incident, False when they were fine,
    None when the service has no probes (or no probe results in the incident's window)."""
    found = sites(ctx.ev, ctx.inc.service, ctx.lo + PRE_MINUTES - 5, ctx.hi)
    if not found:
        return None
    public = found.get(PUBLIC_SITE)
    if public is not None:
        return public.down_minutes >= DOWN_MINUTES
    return all(s.down_minutes >= DOWN_MINUTES for s in found.values())


def bad_status(ctx: Context, service: str) -> tuple[float, str] | None:
    if ctx.ev is None:
        return None
    weight = {"major": 0.5, "critical": 0.55, "minor": 0.3}
    for r in ctx.ev.status_runs(service, ctx.lo * 60.0, (ctx.hi + 1) * 60.0):
        if r.indicator in weight:
            what = f' ("{r.incident or r.description}")' if (r.incident or r.description) else ""
            return (
                weight[r.indicator],
                f"the status page of {service} said {indicator(r.indicator)} from "
                f"{hm(r.start)} UTC{what}",
            )
    return None


def own_status(ctx: Context) -> str | None:
    got = bad_status(ctx, ctx.inc.service)
    if got is None and ctx.ev is not None:
        runs = ctx.ev.status_runs(ctx.inc.service, ctx.lo * 60.0, (ctx.hi + 1) * 60.0)
        if any(r.indicator == "maintenance" for r in runs):
            return f"the status page of {ctx.inc.service} announced maintenance"
        if runs and all(r.indicator == "none" for r in runs):
            return f"the status page of {ctx.inc.service} said all systems operational"
    return None if got is None else "official: " + got[1]


def indicator(ind: str) -> str:
    return {"minor": "minor problems", "major": "a major outage", "critical": "a critical outage"}[
        ind
    ]


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
        pub = sites(evidence, p, lo, hi).get(PUBLIC_SITE)
        bad = pub is not None and pub.down_minutes >= DOWN_MINUTES
        if not bad:
            bad = any(
                r.indicator in ("major", "critical")
                for r in evidence.status_runs(p, lo * 60.0, (hi + 1) * 60.0)
            )
        if bad:
            out.append(p)
    return out

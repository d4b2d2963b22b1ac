"""`regional_network`: 3+ unrelated services failing at once with most of their reports from
one country."""

from __future__ import annotations

from outagewatch.catalog import Catalog
from outagewatch.incidents.causes.base import Cause, Context, FunctionRule, IncidentView

REGIONAL_SHARE = 0.6  # an incident is "in" a country when this share of reports is from it
REGIONAL_MIN_SERVICES = 3


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


def _regional(ctx: Context) -> list[Cause]:
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


RULE = FunctionRule(("regional_network",), _regional, cluster="regional")

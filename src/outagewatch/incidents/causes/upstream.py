"""`upstream`: a provider in `depends_on` failing at the same time (its own incident, its
public probes, or its status page)."""

from __future__ import annotations

import math

from outagewatch.incidents.causes.base import DOWN_MINUTES, Cause, Context, FunctionRule, hm
from outagewatch.incidents.causes.probes import bad_status, sites
from outagewatch.incidents.evidence import PUBLIC_SITE


def _upstream(ctx: Context) -> list[Cause]:
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
                    f"{hm(o.start)} UTC ({o.total:,} reports)",
                )
            )
        pub = sites(ctx.ev, provider, ctx.lo, ctx.hi).get(PUBLIC_SITE)
        if pub is not None and pub.down_minutes >= DOWN_MINUTES:
            parts.append(
                (
                    0.5,
                    f"public probes of {provider} ({', '.join(sorted(pub.targets))}) failed "
                    f"from {hm((pub.first_down or 0) * 60)} UTC",
                )
            )
        st = bad_status(ctx, provider)
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


RULE = FunctionRule(("upstream",), _upstream, cluster="upstream")

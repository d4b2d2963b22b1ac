"""`failover`: probes of a site (e.g. `primary`) failing, the `public` endpoint failing with
it, another site healthy: users were not moved to the healthy one."""

from __future__ import annotations

from outagewatch.incidents.causes.base import DOWN_MINUTES, Cause, Context, FunctionRule, hm
from outagewatch.incidents.causes.probes import site_text, sites
from outagewatch.incidents.evidence import PUBLIC_SITE


def _failover(ctx: Context) -> list[Cause]:
    found = sites(ctx.ev, ctx.inc.service, ctx.lo, ctx.hi)
    if not found:
        ctx.checked.append(f"no probe results for {ctx.inc.service}")
        return []
    public = found.get(PUBLIC_SITE)
    if public is not None and public.failing_from and public.vantages - public.failing_from:
        ctx.checked.append(f"probes of {ctx.inc.service}: {site_text(public)}")
    inner = [s for n, s in sorted(found.items()) if n != PUBLIC_SITE]
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
    t_fail = hm((first.first_down or 0) * 60)
    if not public_down:
        ctx.checked.append(
            f"{first.name} site failed from {t_fail} UTC but the public endpoint stayed up "
            "(a working failover)"
        )
        return []
    assert public is not None
    sentences = [
        f"{site_text(first)} failed from {t_fail} UTC ({first.failed} of {first.checks} "
        f"checks{', last: ' + first.error if first.error else ''})",
        f"the public endpoint ({', '.join(sorted(public.targets))}) failed with it from "
        f"{hm((public.first_down or 0) * 60)} UTC ({public.failed} of {public.checks} checks)",
    ]
    if healthy:
        conf = 0.85
        for h in healthy:
            sentences.append(
                f"{site_text(h)} stayed healthy ({h.checks - h.failed} of {h.checks} checks ok)"
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


RULE = FunctionRule(("failover",), _failover)

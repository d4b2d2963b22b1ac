"""`shared_platform`: 2+ services of one `group` failing at once (and which of the group
stayed up)."""

from __future__ import annotations

from outagewatch.incidents.causes.base import Cause, Context, FunctionRule


def _shared_platform(ctx: Context) -> list[Cause]:
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


RULE = FunctionRule(("shared_platform",), _shared_platform, cluster="group")

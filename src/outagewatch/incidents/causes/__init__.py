"""What most likely caused an incident, with the evidence (docs/contract.md §4 `causes`).

One module per rule in this package, listed in `RULES` below: a new kind of cause is a
module with a `RULE` (base.Rule) and one line here; `KINDS` and `CLUSTER_CAUSE` follow.

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

from collections.abc import Mapping, Sequence
from typing import Any

from outagewatch.catalog import Catalog
from outagewatch.incidents.causes import (
    failover,
    regional,
    shared_platform,
    telemetry,
    upstream,
)
from outagewatch.incidents.causes.base import (
    CONCURRENT_S,
    PRE_MINUTES,
    Cause,
    Context,
    Explanation,
    IncidentView,
    Rule,
)
from outagewatch.incidents.causes.probes import failing_providers, own_status, probe_confirmed
from outagewatch.incidents.causes.regional import REGIONAL_MIN_SERVICES, family, in_country
from outagewatch.incidents.evidence import Evidence

RULES: tuple[Rule, ...] = (
    telemetry.RULE,
    failover.RULE,
    upstream.RULE,
    regional.RULE,
    shared_platform.RULE,
)

UNKNOWN = "unknown"
KINDS: tuple[str, ...] = (*(k for r in RULES for k in r.kinds), UNKNOWN)
# Kinds of cause that a cluster explains, by cluster kind.
CLUSTER_CAUSE = {r.cluster: r.kinds[0] for r in RULES if r.cluster is not None}

LISTED_MIN = 0.25  # causes below this confidence are left out
UNKNOWN_BELOW = 0.5  # `unknown` is added when no cause reaches this confidence
UNKNOWN_MAX = 0.8


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
    ctx = Context(inc, svc, catalog, evidence, concurrent, lo, hi)
    found = [c for rule in RULES for c in rule.explain(ctx)]
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
        found.append(Cause(UNKNOWN, conf, tuple(ctx.checked)))
        found.sort(key=lambda c: (-round(c.confidence, 2), c.kind))
    status = own_status(ctx)
    if status and found:
        top = found[0]
        found[0] = Cause(top.kind, top.confidence, (*top.evidence, status))
    return Explanation([c.doc() for c in found], probe_confirmed(ctx))


__all__ = [
    "CLUSTER_CAUSE",
    "CONCURRENT_S",
    "KINDS",
    "REGIONAL_MIN_SERVICES",
    "RULES",
    "Cause",
    "Explanation",
    "IncidentView",
    "explain",
    "failing_providers",
    "family",
    "in_country",
]

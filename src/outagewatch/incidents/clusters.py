"""Clusters of concurrent incidents that share one explanation (docs/contract.md §4 `cluster`).

A pure function over incidents (as `IncidentView`, built from §4 docs) and the catalog, so
it runs the same inside one pipeline and over incidents read from a store. Candidates:

- `upstream` (key: the provider): incidents of services whose `depends_on` names the
  provider, together with the provider's own incident; the provider must be failing (its
  own incident among them, or named in `failing_providers` from probes/status pages);
- `regional` (key: the country): incidents of 3+ unrelated services with most of their
  reports from that country;
- `group` (key: the group): incidents of 2+ services of one catalog `group`.

Incidents chain into one candidate when they are concurrent (start within the window of
each other and overlap in time). The candidate that explains most incidents wins and takes
its incidents; the rest are re-checked without them (ties: upstream, regional, group, then
the key). An incident in no winning candidate has no cluster. Services without an incident
(a rival that only gets more visitors) are never part of a cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outagewatch.catalog import Catalog
from outagewatch.events import iso
from outagewatch.incidents.causes import (
    CONCURRENT_S,
    REGIONAL_MIN_SERVICES,
    IncidentView,
    family,
    in_country,
)
from outagewatch.incidents.severity import public

KIND_RANK = {"upstream": 0, "regional": 1, "group": 2}  # ties: lower wins


@dataclass(frozen=True)
class _Candidate:
    kind: str
    key: str
    members: frozenset[str]  # incident ids


def assign_clusters(
    incidents: Sequence[IncidentView],
    catalog: Catalog | None,
    *,
    window_s: float = CONCURRENT_S,
    failing_providers: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """incident id -> its cluster `{"id", "kind", "key", "services"}` (lone ones absent)."""
    if catalog is None or len(incidents) < 2:
        return {}
    by_id = {i.id: i for i in incidents}
    failing = set(failing_providers)
    cands = _candidates(incidents, catalog, window_s)
    taken: dict[str, dict[str, Any]] = {}
    while True:
        best: tuple[int, int, str, _Candidate, list[IncidentView]] | None = None
        for c in cands:
            left = [by_id[i] for i in sorted(c.members) if i not in taken]
            if not _valid(c, left, catalog, failing):
                continue
            rank = (-len(left), KIND_RANK[c.kind], c.key)
            if best is None or rank < best[:3]:
                best = (*rank, c, left)
        if best is None:
            return taken
        c, left = best[3], best[4]
        start = min(i.start for i in left)
        cluster = {
            "id": f"{c.kind}-{c.key}-{iso(start)[:16].replace('-', '').replace(':', '')}Z",
            "kind": c.kind,
            "key": c.key,
            "services": sorted({i.service for i in left}),
        }
        for i in left:
            taken[i.id] = cluster


def _valid(c: _Candidate, left: list[IncidentView], catalog: Catalog, failing: set[str]) -> bool:
    services = {i.service for i in left}
    if c.kind == "group":
        return len(services) >= 2
    if c.kind == "upstream":
        dependents = services - {c.key}
        return bool(dependents) and (c.key in services or (c.key in failing and len(left) >= 2))
    families = {family(catalog, s) for s in services}
    return len(services) >= REGIONAL_MIN_SERVICES and len(families) >= REGIONAL_MIN_SERVICES


def _candidates(
    incidents: Sequence[IncidentView], catalog: Catalog, window_s: float
) -> list[_Candidate]:
    keyed: dict[tuple[str, str], list[IncidentView]] = {}
    for inc in incidents:
        svc = catalog.services.get(inc.service)
        if svc is None:
            continue
        if svc.group:
            keyed.setdefault(("group", svc.group), []).append(inc)
        for p in svc.depends_on:
            keyed.setdefault(("upstream", p), []).append(inc)
        country = in_country(inc)
        if country is not None:
            keyed.setdefault(("regional", country), []).append(inc)
    # A provider's own incident belongs to its upstream candidate.
    for (kind, key), members in list(keyed.items()):
        if kind == "upstream":
            members.extend(i for i in incidents if i.service == key)
    out = []
    for (kind, key), members in sorted(keyed.items()):
        for comp in _components(members, window_s):
            if len(comp) >= 2:
                out.append(_Candidate(kind, key, frozenset(comp)))
    return out


def _components(members: list[IncidentView], window_s: float) -> list[list[str]]:
    """Groups of incidents chained by concurrency (union-find)."""
    ms = sorted({i.id: i for i in members}.values(), key=lambda i: (i.start, i.id))
    parent = list(range(len(ms)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(ms)):
        for b in range(a + 1, len(ms)):
            if ms[b].start - ms[a].start > window_s:
                break
            if ms[a].concurrent(ms[b], window_s):
                parent[root(b)] = root(a)
    comps: dict[int, list[str]] = {}
    for a, inc in enumerate(ms):
        comps.setdefault(root(a), []).append(inc.id)
    return list(comps.values())


def stored_clusters(
    docs: Sequence[Mapping[str, Any]], catalog: Catalog | None
) -> dict[str, dict[str, Any] | None]:
    """incident id -> its cluster over stored docs (docs/contract.md §4) written by several
    pipelines (scale-out: one per partition, each seeing only its own services): the clusters one
    pipeline would have given them. Suspected floods are left out as the pipeline leaves
    them out; a provider counts as failing, without its own incident, where a partition's
    probes or status pages said so (an `upstream` cluster it found)."""
    views = [IncidentView.from_doc(d) for d in docs if public(d)]
    failing = {
        str(c["key"])
        for d in docs
        if isinstance(c := d.get("cluster"), Mapping) and c.get("kind") == "upstream"
    }
    found = assign_clusters(views, catalog, failing_providers=failing)
    return {str(d["id"]): found.get(str(d["id"])) for d in docs}

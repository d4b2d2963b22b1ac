"""What every cause rule shares: the incident as seen here, a cause, the context a rule is
asked in, the `Rule` interface and the sentence formatting.

A rule is a module in this package with a `RULE` object (see `Rule`); `RULES` in
`__init__.py` lists them, and everything that needs the kinds of cause (the API schema,
clusters) takes them from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from outagewatch.catalog import Catalog, Service
from outagewatch.events import epoch_of, iso
from outagewatch.incidents.evidence import Evidence, MetricSeries

CONCURRENT_S = 1200  # incidents starting within 20 minutes of each other are concurrent
PRE_MINUTES = 15  # the evidence window starts this long before the incident
DOWN_MINUTES = 2  # a site is down when most of its checks failed in this many minutes


@dataclass(frozen=True, slots=True)
class IncidentView:
    """The parts of an incident (a docs/contract.md §4 doc) that explanations use."""

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
            start=epoch_of(doc["started_at"]),
            end=None if end is None else epoch_of(end),
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


@dataclass
class Context:
    """What a rule is asked about: the incident, its service, the concurrent incidents and
    the evidence of final minutes lo..hi. A rule appends what it looked at, and found
    nothing in, to `checked` (the evidence of `unknown`)."""

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


class Rule(Protocol):
    """One kind of explanation (or a few that share their analysis)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of cause it can give."""
        ...

    @property
    def cluster(self) -> str | None:
        """The kind of cluster (clusters.py) that this rule's cause explains, if any."""
        ...

    def explain(self, ctx: Context) -> list[Cause]: ...


@dataclass(frozen=True)
class FunctionRule:
    """A rule that is one function of the context."""

    kinds: tuple[str, ...]
    fn: Callable[[Context], list[Cause]]
    cluster: str | None = None

    def explain(self, ctx: Context) -> list[Cause]:
        return self.fn(ctx)


# ==================================================================== formatting
def num(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1:
        return f"{v:.4g}"
    return f"{v:.2g}"


def times(r: float) -> str:
    if math.isinf(r):
        return "inf"
    return f"{r:.1f}" if r < 10 else f"{r:.0f}"


def hm(t: float) -> str:
    return iso(t)[11:16]

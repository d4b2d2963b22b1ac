"""Incident lifecycle as a small state table.

    quiet --opened--> ongoing --peak|cause|cluster--> ongoing --resolved--> resolved
                                                   resolved --cause|cluster--> resolved

Every change is a `Transition` row (the store writes them guarded by the old state), and
`TABLE` is the only place that says which changes are allowed. A change of the suspected
causes or of the cluster is a row too (`cause`, `cluster`); a resolved incident may still
get them while its last minutes become final. So is a change of the suspicion that the
reports are a fake flood (`abuse`), while the incident is ongoing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from outagewatch.errors import OutagewatchError
from outagewatch.events import iso


class State(StrEnum):
    QUIET = "quiet"
    ONGOING = "ongoing"
    RESOLVED = "resolved"


# (from, to) -> the actions allowed for that change; the first is the default.
TABLE: dict[tuple[State, State], tuple[str, ...]] = {
    (State.QUIET, State.ONGOING): ("opened",),
    (State.ONGOING, State.ONGOING): ("peak", "cause", "cluster", "abuse", "detected"),
    (State.ONGOING, State.RESOLVED): ("resolved",),
    (State.RESOLVED, State.RESOLVED): ("cause", "cluster"),
}


@dataclass(frozen=True, slots=True)
class Transition:
    incident: str
    service: str
    action: str  # one of the actions TABLE allows for (from_state, to_state)
    from_state: State
    to_state: State
    at: float  # event time, epoch seconds
    detail: dict[str, Any]


@dataclass
class Incident:
    id: str
    service: str
    started_min: int
    detected_at: float
    baseline: float  # expected reports/minute at the start
    state: State = State.QUIET
    peak_min: int = 0
    peak_reports: float = 0.0
    ended_min: int | None = None  # first minute after the surge
    last_hot_min: int = 0
    quiet_run: int = 0
    # Reports of minutes already final (older than the allowed lateness), folded in:
    acc_until: int = 0
    total: float = 0.0
    countries: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    drivers: set[int] = field(default_factory=set)  # series that fired during the incident
    # Explanations (incidents.causes / incidents.clusters), re-evaluated as evidence arrives:
    causes: list[dict[str, Any]] = field(default_factory=list)
    cluster: dict[str, Any] | None = None
    probe_confirmed: bool | None = None
    # A fake-report flood is suspected (pipeline.sources), with what it rests on:
    suspected_abuse: bool = False
    abuse_evidence: list[str] = field(default_factory=list)
    shown: bool = True  # the public sees it (incidents.severity.public), as last judged
    # What confirmed it (incidents.verdicts): "reports", "probes", "status_page".
    detected_by: list[str] = field(default_factory=lambda: ["reports"])
    maintenance: bool = False  # opened inside a maintenance window of its service

    @staticmethod
    def make_id(service: str, started_min: int) -> str:
        return f"{service}-{iso(started_min * 60)[:16].replace('-', '').replace(':', '')}Z"

    def move(self, to: State, at: float, *, action: str | None = None, **detail: Any) -> Transition:
        allowed = TABLE.get((self.state, to), ())
        if not allowed or (action is not None and action not in allowed):
            what = f"{self.state} -> {to}" + ("" if action is None else f" ({action})")
            raise OutagewatchError(f"incident {self.id}: no transition {what}")
        action = action or allowed[0]
        tr = Transition(self.id, self.service, action, self.state, to, at, detail)
        self.state = to
        return tr

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (transitions are rows already)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, State):
                value = value.value
            elif isinstance(value, Counter):
                value = dict(value)
            elif isinstance(value, set):
                value = sorted(value)
            out[f.name] = value
        return out

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Incident:
        return cls(
            **{
                **d,
                "state": State(d["state"]),
                "countries": Counter(d["countries"]),
                "problems": Counter(d["problems"]),
                "drivers": set(d["drivers"]),
            }
        )

    @property
    def done(self) -> bool:
        """Resolved and every minute of it final: nothing can change any more."""
        return (
            self.state is State.RESOLVED
            and self.ended_min is not None
            and self.acc_until >= self.ended_min
        )

    def doc(
        self,
        total: float | None = None,
        countries: Counter[str] | None = None,
        problems: Counter[str] | None = None,
    ) -> dict[str, Any]:
        """The contract §4 JSON object (counts default to the folded ones)."""
        total = self.total if total is None else total
        countries = self.countries if countries is None else countries
        problems = self.problems if problems is None else problems
        return {
            "id": self.id,
            "service": self.service,
            "status": "resolved" if self.state is State.RESOLVED else "ongoing",
            "started_at": iso(self.started_min * 60),
            "detected_at": iso(self.detected_at),
            "peak_at": iso(self.peak_min * 60),
            "ended_at": None if self.ended_min is None else iso(self.ended_min * 60),
            "peak_reports_per_minute": round(self.peak_reports),
            "baseline_reports_per_minute": round(float(self.baseline), 2),
            "total_reports": round(total),
            "countries": _breakdown(countries, "country"),
            "problems": _breakdown(problems, "problem"),
            "probe_confirmed": self.probe_confirmed,
            "suspected_abuse": self.suspected_abuse,
            "abuse_evidence": list(self.abuse_evidence),
            "causes": [dict(c, evidence=list(c["evidence"])) for c in self.causes],
            "cluster": None if self.cluster is None else dict(self.cluster),
            "detected_by": list(self.detected_by),
            "maintenance": self.maintenance,
            "updates": [],  # the operator's posts, stored apart (Store.updates) and added on read
        }


def _breakdown(counts: Counter[str], key: str) -> list[dict[str, Any]]:
    items = sorted(((k, round(v)) for k, v in counts.items() if v >= 0.5), key=_order)
    return [{key: k, "reports": v} for k, v in items]


def _order(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])

"""Incident lifecycle as a small state table.

    quiet --opened--> ongoing --peak|cause|cluster--> ongoing --resolved--> resolved
                                                   resolved --cause|cluster--> resolved

Every change is a `Transition` row (the store writes them guarded by the old state), and
`TABLE` is the only place that says which changes are allowed. A change of the suspected
causes or of the cluster is a row too (`cause`, `cluster`); a resolved incident may still
get them while its last minutes become final. So is a change of the suspicion that the
reports are a fake flood (`abuse`), while the incident is ongoing.

The stepping that drives the table for incidents the reports detect (`step`: open, backdate,
peak, resolve) is here too, beside it; the pipeline's tick calls it once a minute.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.scorer import Scores, is_hot
from outagewatch.errors import OutagewatchError
from outagewatch.events import iso

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import Pipeline


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
        """The docs/contract.md §4 JSON object (counts default to the folded ones)."""
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


# ==================================================================== stepping
# The lifecycle of crowd-detected incidents, stepped by the pipeline's tick of minute m on
# its scores: open (backdated to where the surge began), peak, resolve. The pipeline holds
# the incidents (`incidents`, `open_by_service`, `last_ended`) and the transitions; the
# incidents' report counts are read from its ring.


def step(p: Pipeline, m: int, sc: Scores, disp: NDArray[np.float64]) -> None:
    """Minute m's step of every incident: services that fired open one; open ones follow
    their peak and resolve after `quiet_minutes` minutes that are not elevated (unless a
    probe or status-page verdict holds them open: incidents.verdicts)."""
    s = p.series
    at = (m + 1) * 60.0
    if sc.fired.any():
        fired_services = set(s.view("svc")[sc.fired].tolist())
        for si in sorted(fired_services):
            sid = s.services[si]
            if sid not in p.open_by_service:
                open_incident(p, si, m, at, sc, disp)
    for sid, inc in list(p.open_by_service.items()):
        si = s.service_index[sid]
        members = s.service_series[si]
        inc.drivers.update(i for i in members if sc.fired[i])
        busy = bool(sc.elevated(members).any())
        watch = [s.total_of[si], *sorted(inc.drivers)]
        if busy and sc.hot(watch).any():
            inc.last_hot_min = m
        update_peak(p, inc, m, at)
        if inc.last_hot_min == m:
            # Judged while the surge is hot: the tail of an incident (elevated, no
            # longer surging) is mostly ordinary reports, which say nothing about who
            # sent the surge.
            p._judge_sources(inc, si, m, at)
        inc.quiet_run = 0 if busy else inc.quiet_run + 1
        p._changed.add(inc.id)
        if inc.quiet_run >= p.settings.quiet_minutes and not p.verdicts.holds(sid):
            end = p.verdicts.end_min(sid)  # probes or the status page saw it longer
            resolve(p, inc, max(inc.last_hot_min + 1, inc.started_min + 1, end), at)


def open_incident(
    p: Pipeline, si: int, m: int, at: float, sc: Scores, disp: NDArray[np.float64]
) -> Incident:
    """Open an incident for service `si`, whose series fired at minute m."""
    s = p.series
    sid = s.services[si]
    members = s.service_series[si]
    total = s.total_of[si]
    # Find where the surge began: walk back over hot minutes of the firing series.
    firing = [i for i in members if sc.fired[i]]
    probe = [total, *firing] if sc.hot([total])[0] or total in firing else firing
    start = min(backdate(p, i, m, disp[i]) for i in probe)
    start = max(start, p.last_ended.get(sid, start))
    baseline_rate = float(s.ring_expected[start % s.ring, total])
    inc = Incident(
        id=Incident.make_id(sid, start),
        service=sid,
        started_min=start,
        detected_at=at,
        baseline=baseline_rate,
        peak_min=start,
        last_hot_min=m,
        acc_until=start,
        maintenance=p._maintained(sid, start * 60.0) or p._maintained(sid, at - 1),
    )
    p._judge_sources(inc, si, m, None)
    p._transitions.append(
        inc.move(
            State.ONGOING,
            at,
            started_at=start * 60,
            series=[str(s.keys[i]) for i in firing],
            ratio=round(float(sc.ratio[firing].max()), 2) if firing else None,
            suspected_abuse=inc.suspected_abuse,
        )
    )
    p.incidents[inc.id] = inc
    p.open_by_service[sid] = inc
    # Fold the minutes of the surge that are already final.
    for f in range(start, p.final_until):
        p._fold(inc, f)
    update_peak(p, inc, m, at, record=False)
    return inc


def backdate(p: Pipeline, i: int, m: int, disp: float) -> int:
    """Where the surge of series `i` that fired at minute m began: the earliest of the hot
    minutes before m (one quiet minute inside is tolerated), at most `backdate_max_minutes`
    back and within the ring."""
    s = p.series
    ring = s.ring
    lo = max(m - p.settings.backdate_max_minutes, p.closed_until - ring + 1)
    mins = np.arange(m, lo - 1, -1)
    x = s.ring_count[mins % ring, i].astype(np.float64)
    mu = s.ring_expected[mins % ring, i].astype(np.float64)
    # Stricter than the end test: a chance busy minute before the onset must not pull
    # the start back.
    hot = is_hot(x, mu, np.full(len(mins), disp), z=3.0)
    start = m
    misses = 0
    for k in range(len(mins)):
        if hot[k]:
            start = int(mins[k])
            misses = 0
        else:
            misses += 1
            if misses > 1:  # one quiet minute inside a surge is tolerated
                break
    return start


def update_peak(p: Pipeline, inc: Incident, m: int, at: float, *, record: bool = True) -> None:
    """The busiest minute so far of the incident's total series; a peak that grew by 10%
    is a `peak` transition (`record`)."""
    s = p.series
    ring = s.ring
    total = s.total_of[s.service_index[inc.service]]
    lo = max(inc.started_min, m - p.settings.lateness_min - 1, inc.peak_min)
    mins = np.arange(lo, m + 1)
    x = s.ring_count[mins % ring, total]
    k = int(np.argmax(x))
    if x[k] > inc.peak_reports:
        grew = inc.peak_reports > 0 and x[k] >= 1.1 * inc.peak_reports
        inc.peak_reports = float(x[k])
        inc.peak_min = int(mins[k])
        if record and grew:
            p._transitions.append(
                inc.move(
                    State.ONGOING,
                    at,
                    peak_at=inc.peak_min * 60,
                    peak_reports_per_minute=inc.peak_reports,
                )
            )


def resolve(p: Pipeline, inc: Incident, end: int, at: float) -> None:
    """The incident ended at minute `end` (the first after it): the minutes folded in
    after it are taken back, and the service may open a new one from `end` on."""
    inc.ended_min = end
    p._unfold_after_end(inc)
    p._transitions.append(inc.move(State.RESOLVED, at, ended_at=end * 60))
    del p.open_by_service[inc.service]
    p.last_ended[inc.service] = end
    p._changed.add(inc.id)

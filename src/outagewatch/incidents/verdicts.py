"""Probe and status-page verdicts: incidents that need no crowd reports.

Pure state (no I/O, no clock), stepped by the pipeline each time a minute becomes final,
right after the evidence (pipeline.evidence) has applied that minute. So a verdict is the
same whether the events came one by one or in batches, and survives a restart with the
pipeline state (`dump` / `load`).

Probes. Every public-site (target, vantage) pair is a *unit* with a run of consecutive
failed checks and a run of consecutive good ones (per final minute: more failed than good
checks is a failed minute). A vantage *reports* when it had a result in the last three
intervals of its probe. The *quorum* of a target is `probe_quorum` vantages (default 2) and
at least `probe_quorum_fraction` (default half) of those reporting; a vantage alone is a
quorum only when it is the only one reporting. A target is *down* once the quorum has
failed `probe_fail_checks` (default 2) consecutive checks each; it is *up* again once the
quorum has passed as many consecutive checks (or no vantage reports any more). Fewer
failing vantages than the quorum is a *partial* verdict: "failing from eu-west only; fine
from us-east, ap-south" (the service shows `problems`, never `outage`, on that alone).

Status page. The service's own page saying `major` or `critical` in a final minute holds;
anything else releases.

A holding signal opens an incident (`detected_by: ["probes"]` or `["status_page"]`) or
joins the service's open one; a crowd surge on an incident a signal opened joins it as
`reports`. While any signal holds, the crowd lifecycle does not resolve the incident; when
the last signal releases, an incident the crowd did not confirm resolves at once, and a
crowd one resolves as usual once its reports are quiet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outagewatch.catalog import Service
from outagewatch.incidents.evidence import PUBLIC_SITE
from outagewatch.incidents.lifecycle import Incident, State, resolve

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import Pipeline

SIGNALS = ("reports", "probes", "status_page")  # the order `detected_by` lists them in
GRAVE = frozenset({"major", "critical"})
SILENT_INTERVALS = 3  # a source silent this many of its intervals says nothing any more
LOOKBACK_MINUTES = 60  # a first step (or one after a gap) reads at most this far back
LOCAL_VANTAGE = "local"  # how a result without a vantage is named


@dataclass
class Unit:
    """One public target seen from one vantage."""

    fail_run: int = 0  # consecutive failed checks up to the last minute with data
    ok_run: int = 0
    fail_since: int = 0  # minute of the first failed check of the current failing run
    ok_since: int = 0
    last: int = -1  # last final minute with a result

    def feed(self, minute: int, ok: int, failed: int) -> None:
        if failed > ok:
            if self.fail_run == 0:
                self.fail_since = minute
            self.fail_run += failed
            self.ok_run = 0
        else:
            if self.ok_run == 0:
                self.ok_since = minute
            self.ok_run += ok
            self.fail_run = 0
        self.last = minute


@dataclass
class Signal:
    """A non-crowd signal of one service: whether it holds, since when."""

    holds: bool = False
    since: int = 0  # first minute of the trouble it saw
    until: int = 0  # first minute after it (set when it releases)


@dataclass
class TargetVerdict:
    target: str
    failing: list[str]
    fine: list[str]
    quorum: int
    down: bool


@dataclass
class Verdicts:
    quorum_min: int = 2
    quorum_fraction: float = 0.5
    fail_checks: int = 2
    units: dict[str, dict[tuple[str, str], Unit]] = field(default_factory=dict)  # svc -> units
    probes: dict[str, Signal] = field(default_factory=dict)  # service -> probe signal
    status: dict[str, Signal] = field(default_factory=dict)  # service -> status-page signal
    until: int | None = None  # minutes below this have been stepped
    detail: dict[str, str] = field(default_factory=dict)  # service -> sentence (partial/down)
    partial: set[str] = field(default_factory=set)  # services failing below the quorum

    # ------------------------------------------------------------------ verdicts
    def quorum(self, reporting: int) -> int:
        if reporting <= 1:
            return reporting
        return max(self.quorum_min, math.ceil(self.quorum_fraction * reporting - 1e-9))

    def target_verdicts(self, p: Pipeline, service: str, f: int) -> list[TargetVerdict]:
        """Per public target of `service`: who fails, who is fine, as of final minute f."""
        targets: dict[str, list[tuple[str, Unit]]] = {}
        windows: dict[str, int] = {}
        for (target, vantage), u in self.units.get(service, {}).items():
            window = windows.get(target)
            if window is None:
                window = windows[target] = _window_min(p, service, target)
            if u.last >= f - window + 1:
                targets.setdefault(target, []).append((vantage, u))
        out = []
        n = self.fail_checks
        for target in sorted(targets):
            units = sorted(targets[target])
            failing = [v for v, u in units if u.fail_run >= n]
            fine = [v for v, u in units if u.fail_run < n]
            q = self.quorum(len(units))
            out.append(TargetVerdict(target, failing, fine, q, len(failing) >= q > 0))
        return out

    # ------------------------------------------------------------------ stepping
    def step(self, p: Pipeline, m: int, f: int) -> None:
        """Minute f is final (the tick closing minute m): update units, then signals."""
        lo = f - LOOKBACK_MINUTES if self.until is None else max(self.until, f - LOOKBACK_MINUTES)
        if f < lo:
            return
        ev = p.evidence
        touched: set[str] = set()
        for key in _public_keys(p):
            service, target, _site, vantage = key
            ps = ev.probes[key]
            if not ps.minutes or ps.minutes[-1] < lo:
                continue  # nothing new
            rows = ps.counts(lo, f)
            if not rows:
                continue
            mine = self.units.setdefault(service, {})
            unit = mine.setdefault((target, vantage or LOCAL_VANTAGE), Unit())
            for minute, ok, failed in rows:
                if minute > unit.last:
                    unit.feed(minute, ok, failed)
            touched.add(service)
        self.until = f + 1
        at = (m + 1) * 60.0
        services = sorted(touched | {s for s, sig in self.probes.items() if sig.holds})
        services += [s for s in sorted(self.detail) if s not in services]
        for service in services:
            sig = self.probes.get(service)
            if (
                (sig is None or not sig.holds)
                and service not in self.detail
                and all(u.fail_run == 0 for u in self.units.get(service, {}).values())
            ):
                continue  # every check passed: nothing to say
            self._probe_signal(p, service, f, at)
        for service in sorted(set(ev.status) | {s for s, g in self.status.items() if g.holds}):
            self._status_signal(p, service, f, at)
        self._join_reports(p, at)
        self._trim(f)

    def _probe_signal(self, p: Pipeline, service: str, f: int, at: float) -> None:
        verdicts = self.target_verdicts(p, service, f)
        sig = self.probes.setdefault(service, Signal())
        down = [v for v in verdicts if v.down]
        failing = sorted({x for v in verdicts for x in v.failing})
        fine = sorted({x for v in verdicts for x in v.fine} - set(failing))
        self.partial.discard(service)
        self.detail.pop(service, None)
        if failing:
            self.detail[service] = _sentence(failing, fine)
            if not down:
                self.partial.add(service)
        if not sig.holds and down:
            units = [self.units[service][(v.target, x)] for v in down for x in v.failing]
            sig.holds, sig.since = True, min(u.fail_since for u in units)
            self._hold(p, service, "probes", sig.since, f, at)
        elif sig.holds and not down:
            recovered = True
            ends: list[int] = []
            for v in verdicts:
                units = [self.units[service][(v.target, x)] for x in v.failing + v.fine]
                good = sorted(u.ok_since for u in units if u.ok_run >= self.fail_checks)
                if len(good) < v.quorum:
                    recovered = False
                elif good:
                    ends.append(good[v.quorum - 1])
            if not verdicts:  # every vantage fell silent: the evidence is gone
                last = [u.last for u in self.units.get(service, {}).values()]
                ends.append(max(last, default=f) + 1)
            if recovered:
                sig.holds, sig.until = False, max(max(ends, default=f + 1), sig.since + 1)
                self._release(p, service, at)

    def _status_signal(self, p: Pipeline, service: str, f: int, at: float) -> None:
        runs = p.evidence.status_runs(service, (f + 1) * 60.0 - 1e-6, (f + 1) * 60.0 - 1e-6)
        now = runs[-1] if runs else None
        grave = now is not None and now.indicator in GRAVE
        sig = self.status.setdefault(service, Signal())
        if grave and not sig.holds:
            assert now is not None
            sig.holds, sig.since = True, min(int(now.start // 60), f)
            self._hold(p, service, "status_page", sig.since, f, at)
        elif not grave and sig.holds:
            end = int(now.start // 60) if now is not None else f + 1
            sig.holds, sig.until = False, max(end, sig.since + 1)
            self._release(p, service, at)

    # ------------------------------------------------------------------ incidents
    def holds(self, service: str) -> bool:
        """Whether a non-crowd signal keeps the service's incident open."""
        a, b = self.probes.get(service), self.status.get(service)
        return bool((a is not None and a.holds) or (b is not None and b.holds))

    def end_min(self, service: str) -> int:
        """The first minute after the trouble the signals saw (0: none)."""
        return max((s.until for s in (self.probes.get(service), self.status.get(service)) if s),
                   default=0)  # fmt: skip

    def _hold(self, p: Pipeline, service: str, signal: str, since: int, f: int, at: float) -> None:
        inc = p.open_by_service.get(service)
        if inc is not None:
            _detect(p, inc, signal, at)
            return
        s = p.series
        if service not in s.service_index:
            s.service(service)  # a total series, so the incident has its report counts
            fresh = s.fresh
            for i in fresh:
                s.born[i] = f
            fresh.clear()
        start = max(since, p.last_ended.get(service, since))
        iid = Incident.make_id(service, start)
        k = 2
        while iid in p.incidents or iid in p._recent:
            iid = f"{Incident.make_id(service, start)}-{k}"
            k += 1
        si = s.service_index[service]
        inc = Incident(
            id=iid,
            service=service,
            started_min=start,
            detected_at=(f + 1) * 60.0,
            baseline=float(s.ring_expected[start % s.ring, s.total_of[si]]),
            peak_min=start,
            last_hot_min=f,
            acc_until=max(start, 0),
            detected_by=[signal],
        )
        p._transitions.append(
            inc.move(State.ONGOING, at, started_at=start * 60, detected_by=[signal])
        )
        p.incidents[inc.id] = inc
        p.open_by_service[service] = inc
        for g in range(start, p.final_until):
            p._fold(inc, g)
        p._changed.add(inc.id)

    def _release(self, p: Pipeline, service: str, at: float) -> None:
        """A signal released: resolve an incident nothing else keeps open."""
        inc = p.open_by_service.get(service)
        if inc is None or self.holds(service):
            return
        if "reports" in inc.detected_by and inc.quiet_run < p.settings.quiet_minutes:
            return  # the crowd lifecycle resolves it once its reports are quiet
        end = max(self.end_min(service), inc.started_min + 1)
        if "reports" in inc.detected_by:
            end = max(end, inc.last_hot_min + 1)
        resolve(p, inc, end, at)

    def _join_reports(self, p: Pipeline, at: float) -> None:
        """A crowd surge on an incident a signal opened joins it."""
        for inc in p.open_by_service.values():
            if inc.drivers and "reports" not in inc.detected_by:
                _detect(p, inc, "reports", at)

    def _trim(self, f: int) -> None:
        """Forget units silent for a day (a removed target or vantage)."""
        for service in list(self.units):
            mine = self.units[service]
            for k in [k for k, u in mine.items() if u.last < f - 1440]:
                del mine[k]
            if not mine:
                del self.units[service]

    # ------------------------------------------------------------------ persistence
    def dump(self) -> dict[str, Any]:
        return {
            "until": self.until,
            "units": [
                [s, *k, u.fail_run, u.ok_run, u.fail_since, u.ok_since, u.last]
                for s, mine in sorted(self.units.items())
                for k, u in sorted(mine.items())
            ],
            "probes": {s: [g.holds, g.since, g.until] for s, g in self.probes.items()},
            "status": {s: [g.holds, g.since, g.until] for s, g in self.status.items()},
            "detail": dict(self.detail),
            "partial": sorted(self.partial),
        }

    def load(self, d: dict[str, Any]) -> None:
        self.until = d["until"]
        for service, target, vantage, *nums in d["units"]:
            self.units.setdefault(service, {})[(target, vantage)] = Unit(*nums)
        self.probes = {s: Signal(*g) for s, g in d["probes"].items()}
        self.status = {s: Signal(*g) for s, g in d["status"].items()}
        self.detail = dict(d["detail"])
        self.partial = set(d["partial"])


def _detect(p: Pipeline, inc: Incident, signal: str, at: float) -> None:
    if signal in inc.detected_by:
        return
    inc.detected_by = [s for s in SIGNALS if s in {*inc.detected_by, signal}]
    p._transitions.append(
        inc.move(inc.state, at, action="detected", detected_by=list(inc.detected_by))
    )
    p._changed.add(inc.id)


def _public_keys(p: Pipeline) -> list[tuple[str, str, str, str]]:
    return sorted(k for k in p.evidence.probes if k[2] == PUBLIC_SITE)


def _window_min(p: Pipeline, service: str, target: str) -> int:
    """Minutes in SILENT_INTERVALS intervals of the probe of `target` (60 s if unknown)."""
    interval = 60
    svc = p.catalog.services.get(service) if p.catalog is not None else None
    if svc is not None:
        for probe in svc.probes:
            if probe.url == target:
                interval = probe.interval_s
    return max(1, math.ceil(SILENT_INTERVALS * interval / 60))


def _sentence(failing: list[str], fine: list[str]) -> str:
    if not fine:
        n = len(failing)
        return f"failing from {failing[0]}" if n == 1 else f"failing from all {n} vantages"
    return f"failing from {', '.join(failing)} only; fine from {', '.join(fine)}"


# ---------------------------------------------------------------------- reading (live)
@dataclass(frozen=True)
class ServiceVerdict:
    """What the signals say of one service now, besides its incident."""

    partial: bool  # public probes fail from fewer vantages than the quorum
    silent: bool  # every configured source silent for SILENT_INTERVALS, and no reports
    detail: str | None  # "failing from eu-west only; fine from us-east"


def service_verdict(p: Pipeline, svc: Service, now: float) -> ServiceVerdict:
    v = p.verdicts
    return ServiceVerdict(svc.id in v.partial, silent(p, svc, now), v.detail.get(svc.id))


def silent(p: Pipeline, svc: Service, now: float) -> bool:
    """Every configured source of `svc` (probes, status page) said nothing for
    SILENT_INTERVALS of its intervals, and it got no reports in as long: nothing says it
    is fine. A service with no configured source is never silent (reports alone)."""
    intervals = [pr.interval_s for pr in svc.probes]
    if svc.status_page is not None:
        intervals.append(svc.status_page.interval_s)
    if not intervals:
        return False
    for probe in svc.probes:
        last = _last_probe(p, svc.id, probe.url)
        if last is not None and now - last < SILENT_INTERVALS * probe.interval_s:
            return False
    if svc.status_page is not None:
        last = _last_status(p, svc.id)
        if last is not None and now - last < SILENT_INTERVALS * svc.status_page.interval_s:
            return False
    s = p.series
    si = s.service_index.get(svc.id)
    if si is not None:
        window = min(math.ceil(SILENT_INTERVALS * max(intervals) / 60), s.ring - 1)
        rows = [m % s.ring for m in range(p.closed_until - window, p.closed_until + 1)]
        if float(s.ring_count[rows, s.total_of[si]].sum()) > 0:
            return False
    return True


def _last_probe(p: Pipeline, service: str, target: str) -> float | None:
    """The end of the last minute with a result of `target` (final or pending)."""
    ev = p.evidence
    last: int | None = None
    for key in ev.probe_keys(service):
        ps = ev.probes[key]
        if key[1] == target and ps.minutes:
            last = max(last if last is not None else ps.minutes[-1], ps.minutes[-1])
    for minute, acc in ev.pending.items():
        if (last is None or minute > last) and any(
            k[0] == service and k[1] == target for k in acc.probes
        ):
            last = minute
    return None if last is None else (last + 1) * 60.0


def _last_status(p: Pipeline, service: str) -> float | None:
    ev = p.evidence
    runs = ev.status.get(service)
    last = runs[-1].last if runs else None
    for acc in ev.pending.values():
        for st in acc.status:
            if st[0] == service and (last is None or st[1] > last):
                last = st[1]
    return last

"""Evidence besides reports: operator telemetry, probe results and official status pages.

Pure state (no I/O, no clock), fed with accepted `metric`, `probe` and `status` events and
told which minutes are final. An event is first kept with the other events of its minute;
when the pipeline makes that minute final (its allowed lateness has passed) the minute is
applied in a fixed order:

- `metric`: the mean of the minute's values per (service, metric name) becomes one point of
  a per-minute series, scored by the generic scorer of `outagewatch score` (one scorer per
  series: score first, then learn, so the score of a minute uses the minutes before it);
- `probe`: ok and failed checks per (service, target, site, vantage) are counted per minute;
- `status`: the service's official indicator, kept as runs ("major since 14:02").

Causes read only final minutes, so the same events give the same evidence whether they
came one by one or in batches, and in any order within the allowed lateness. An event for a
minute that is already final is late: counted in `late`, not used.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from outagewatch.catalog import Catalog
from outagewatch.detect.generic import GenericScorer
from outagewatch.events import EventIn, MetricIn, OtherEvent, ProbeIn, StatusIn, iso

HISTORY_MINUTES = 720  # final minutes of metric and probe history kept per series
MAX_METRIC_SERIES = 2_000  # metric series kept at most; more are dropped (bounded memory)
MAX_PROBE_KEYS = 5_000  # (service, target, site, vantage) kept at most
MAX_STATUS_RUNS = 48  # status runs kept per service
PUBLIC_SITE = "public"

_DECODE = msgspec.json.Decoder(EventIn).decode

_GRAVITY = {"none": 0, "maintenance": 1, "minor": 2, "major": 3, "critical": 4}

ProbeKey = tuple[str, str, str, str]  # (service, target, site, vantage or "")


@dataclass(frozen=True, slots=True)
class StatusRun:
    """A stretch of time in which a service's official status kept one indicator."""

    start: float  # ts of the first event of the run
    last: float  # ts of the latest event of the run
    indicator: str
    description: str | None = None
    incident: str | None = None

    def doc(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator,
            "since": iso(self.start),
            "updated_at": iso(self.last),
            "description": self.description,
            "incident": self.incident,
        }


def _between(minutes: deque[int], lo: int, hi: int) -> range:
    """The indices of the sorted `minutes` that are in lo..hi (inclusive)."""
    return range(bisect.bisect_left(minutes, lo), bisect.bisect_right(minutes, hi))


def _new_scorer() -> GenericScorer:
    # causes look for the first anomalous minute of each metric in a window: no refractory
    # period, so an earlier small flag does not hide the rise that matters
    return GenericScorer(1, refractory=0)


@dataclass
class MetricSeries:
    service: str
    name: str
    scorer: GenericScorer = field(default_factory=_new_scorer)
    minutes: deque[int] = field(default_factory=deque)
    values: deque[float] = field(default_factory=deque)
    scores: deque[float] = field(default_factory=deque)

    def points(self, lo: int, hi: int) -> list[tuple[int, float, float]]:
        """(minute, value, anomaly score) of final minutes lo..hi (inclusive)."""
        ms = self.minutes
        return [(ms[i], self.values[i], self.scores[i]) for i in _between(ms, lo, hi)]


@dataclass
class ProbeSeries:
    key: ProbeKey
    minutes: deque[int] = field(default_factory=deque)
    ok: deque[int] = field(default_factory=deque)
    failed: deque[int] = field(default_factory=deque)
    last_error: str = ""  # the latest failure's status/error, for evidence sentences

    def counts(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(minute, ok checks, failed checks) of final minutes lo..hi (inclusive)."""
        ms = self.minutes
        return [(ms[i], self.ok[i], self.failed[i]) for i in _between(ms, lo, hi)]


@dataclass
class _Minute:
    """Events of one minute not yet final."""

    metrics: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # [sum, n]
    probes: dict[ProbeKey, list[Any]] = field(default_factory=dict)  # [ok, failed, (ts, err)]
    status: list[tuple[str, float, str, str, str]] = field(default_factory=list)


@dataclass
class EvidenceStats:
    metrics: int = 0
    probes: int = 0
    status: int = 0
    late: int = 0  # events for a minute already final: not used
    unused: int = 0  # metrics the catalog names no role for (stored elsewhere, not used here)
    dropped: int = 0  # events beyond MAX_METRIC_SERIES / MAX_PROBE_KEYS

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Evidence:
    """Per-minute telemetry, probe health and official status, for every service."""

    def __init__(self, catalog: Catalog | None = None, *, carry_min: int = 1) -> None:
        self.catalog = catalog
        # A probe result at most this many minutes late is counted in the first minute
        # still open (the reports' lateness: a stream of reports whose time runs ahead of
        # the server's clock does not make the server's own checks late); older ones are
        # late (an agent's buffer posted after an outage of the server is history).
        self.carry_min = carry_min
        self.metrics: dict[tuple[str, str], MetricSeries] = {}
        self.probes: dict[ProbeKey, ProbeSeries] = {}
        self.probes_of: dict[str, list[ProbeKey]] = {}
        self.status: dict[str, list[StatusRun]] = {}
        self.pending: dict[int, _Minute] = {}
        self.final_until: int | None = None  # minutes below this are final
        # Probe results and status polls are final sooner (`finalise_signals`): the server
        # and its agents send them as they happen, and probe-only incidents wait for them.
        self.signals_until: int | None = None
        self.stats = EvidenceStats()
        self._sites: dict[tuple[str, str], str] = {}

    def set_catalog(self, catalog: Catalog | None) -> None:
        self.catalog = catalog
        self._sites = {}
        if catalog is not None:
            for sid, svc in catalog.services.items():
                for p in svc.probes:
                    self._sites[(sid, p.url)] = p.site

    @property
    def active(self) -> bool:
        """Whether there is any evidence at all (reports-only runs skip all the work)."""
        return bool(self.pending or self.metrics or self.probes or self.status)

    # ------------------------------------------------------------------ ingest
    def ingest(self, others: Iterable[OtherEvent]) -> None:
        for o in others:
            ev = _DECODE(o.body)
            minute = math.floor(o.ts / 60.0)
            signal = isinstance(ev, ProbeIn | StatusIn)
            until = self.signals_until if signal else self.final_until
            if until is not None and minute < until:
                if not (isinstance(ev, ProbeIn) and until - minute <= self.carry_min):
                    self.stats.late += 1
                    continue
                # A check begun just before its minute became final (it was answered
                # after): counted in the first minute still open, not lost.
                minute = until
            acc = self.pending.get(minute)
            if acc is None:
                acc = self.pending[minute] = _Minute()
            if isinstance(ev, MetricIn):
                self._metric(acc, o.service, ev)
            elif isinstance(ev, ProbeIn):
                self._probe(acc, o.service, o.ts, ev)
            elif isinstance(ev, StatusIn):
                self.stats.status += 1
                acc.status.append(
                    (o.service, o.ts, ev.indicator, ev.description or "", ev.incident or "")
                )

    def _room(self, series: Mapping[Any, Any], key: Any, cap: int) -> bool:
        """Whether `key` has a series or may start one (at most `cap` are kept; a key
        beyond them is dropped and counted)."""
        if key not in series and len(series) >= cap:
            self.stats.dropped += 1
            return False
        return True

    def _metric(self, acc: _Minute, service: str, ev: MetricIn) -> None:
        if not math.isfinite(ev.value):
            return
        key = (service, ev.name)
        svc = self.catalog.services.get(service) if self.catalog is not None else None
        if svc is not None and ev.name not in svc.metrics:
            self.stats.unused += 1
            return
        if not self._room(self.metrics, key, MAX_METRIC_SERIES):
            return
        self.stats.metrics += 1
        cell = acc.metrics.get(key)
        if cell is None:
            acc.metrics[key] = [ev.value, 1.0]
        else:
            cell[0] += ev.value
            cell[1] += 1.0

    def _probe(self, acc: _Minute, service: str, ts: float, ev: ProbeIn) -> None:
        site = ev.site or self._sites.get((service, ev.target), PUBLIC_SITE)
        key = (service, ev.target, site, ev.vantage or "")
        if not self._room(self.probes, key, MAX_PROBE_KEYS):
            return
        self.stats.probes += 1
        cell = acc.probes.get(key)
        if cell is None:
            cell = acc.probes[key] = [0, 0, (-math.inf, "")]
        if ev.ok:
            cell[0] += 1
        else:
            cell[1] += 1
            what = ev.error or (f"HTTP {ev.status}" if ev.status is not None else "failed")
            cell[2] = max(cell[2], (ts, what))  # the latest; ties broken by text (any order)

    # ------------------------------------------------------------------ final minutes
    def finalise_signals(self, f: int) -> None:
        """Probe results and status polls of minutes up to `f` are final (f is at least the
        last final minute of metrics): apply them, in minute order."""
        if self.signals_until is not None and f < self.signals_until:
            return
        if self.pending:
            for minute in sorted(m for m in self.pending if m <= f):
                acc = self.pending[minute]
                self._apply_signals(minute, acc)
                acc.probes, acc.status = {}, []
        self.signals_until = f + 1

    def finalise(self, f: int) -> None:
        """Minutes up to `f` are final: apply their events, in minute order (the probe
        results and status polls first, unless `finalise_signals` did)."""
        if self.final_until is not None and f < self.final_until:
            return
        if self.signals_until is None or self.signals_until <= f:
            self.finalise_signals(f)
        if self.pending:
            for minute in sorted(m for m in self.pending if m <= f):
                self._apply_metrics(minute, self.pending[minute])
                if minute < (self.signals_until or 0):
                    del self.pending[minute]
        self.final_until = f + 1
        if self.metrics or self.probes:
            self._trim(f - HISTORY_MINUTES)

    def _apply_metrics(self, minute: int, acc: _Minute) -> None:
        t = (minute + 1) * 60.0
        for key in sorted(acc.metrics):
            total, n = acc.metrics[key]
            ser = self.metrics.get(key)
            if ser is None:
                ser = self.metrics[key] = MetricSeries(*key)
            value = total / n
            x = np.array([value])
            score = float(ser.scorer.score_one(t, x)[0])
            ser.scorer.learn_one(t, x)
            ser.minutes.append(minute)
            ser.values.append(value)
            ser.scores.append(score)
        acc.metrics = {}

    def _apply_signals(self, minute: int, acc: _Minute) -> None:
        for pkey in sorted(acc.probes):
            ok, failed, (_, err) = acc.probes[pkey]
            ps = self.probes.get(pkey)
            if ps is None:
                ps = self.probes[pkey] = ProbeSeries(pkey)
                self.probes_of.setdefault(pkey[0], []).append(pkey)
                self.probes_of[pkey[0]].sort()
            ps.minutes.append(minute)
            ps.ok.append(ok)
            ps.failed.append(failed)
            if failed:
                ps.last_error = err
        for service, ts, indicator, description, incident in sorted(acc.status):
            self._status(service, ts, indicator, description, incident)

    def _status(self, service: str, ts: float, indicator: str, desc: str, incident: str) -> None:
        runs = self.status.setdefault(service, [])
        _add_run(runs, ts, indicator, desc, incident)
        if len(runs) > MAX_STATUS_RUNS:
            del runs[: len(runs) - MAX_STATUS_RUNS]

    def _trim(self, lo: int) -> None:
        for ser in self.metrics.values():
            while ser.minutes and ser.minutes[0] < lo:
                ser.minutes.popleft()
                ser.values.popleft()
                ser.scores.popleft()
        for ps in self.probes.values():
            while ps.minutes and ps.minutes[0] < lo:
                ps.minutes.popleft()
                ps.ok.popleft()
                ps.failed.popleft()

    # ------------------------------------------------------------------ reading
    def metric(self, service: str, name: str) -> MetricSeries | None:
        return self.metrics.get((service, name))

    def probe_keys(self, service: str) -> Sequence[ProbeKey]:
        return self.probes_of.get(service, ())

    def status_runs(self, service: str, lo: float, hi: float) -> list[StatusRun]:
        """The final status runs of `service` that overlap [lo, hi] (event time, seconds)."""
        runs = self.status.get(service, [])
        out = []
        for i, r in enumerate(runs):
            end = runs[i + 1].start if i + 1 < len(runs) else math.inf
            if r.start <= hi and end > lo:
                out.append(r)
        return out

    def official_status(self, service: str) -> dict[str, Any] | None:
        """What the service's own status page says now (pending events included), or None."""
        runs = list(self.status.get(service, []))
        pending = sorted(
            st for acc in self.pending.values() for st in acc.status if st[0] == service
        )
        for _, ts, indicator, description, incident in pending:
            _add_run(runs, ts, indicator, description, incident)
        return runs[-1].doc() if runs else None

    def official_during(self, service: str, lo: float, hi: float) -> dict[str, Any] | None:
        """The gravest thing the service's status page said between lo and hi (epoch s),
        from final minutes only (so the same for any batching), or None."""
        runs = list(self.status.get(service, []))
        best: StatusRun | None = None
        for i, run in enumerate(runs):
            end = runs[i + 1].start if i + 1 < len(runs) else run.last
            if (
                run.start <= hi
                and end >= lo
                and (best is None or _GRAVITY[run.indicator] >= _GRAVITY[best.indicator])
            ):
                best = run
        return None if best is None else best.doc()

    # ------------------------------------------------------------------ persistence
    def dump(self) -> dict[str, Any]:
        """The state as plain data (msgpack-able)."""
        return {
            "final_until": self.final_until,
            "signals_until": self.signals_until,
            "stats": self.stats.as_dict(),
            "metrics": [
                [
                    s.service,
                    s.name,
                    _scorer_state(s.scorer),
                    list(s.minutes),
                    list(s.values),
                    list(s.scores),
                ]
                for s in self.metrics.values()
            ],
            "probes": [
                [list(p.key), list(p.minutes), list(p.ok), list(p.failed), p.last_error]
                for p in self.probes.values()
            ],
            "status": {
                sid: [[r.start, r.last, r.indicator, r.description, r.incident] for r in runs]
                for sid, runs in self.status.items()
            },
            "pending": [
                [
                    minute,
                    [[k[0], k[1], v[0], v[1]] for k, v in acc.metrics.items()],
                    [[*k, v[0], v[1], v[2][0], v[2][1]] for k, v in acc.probes.items()],
                    [list(st) for st in acc.status],
                ]
                for minute, acc in sorted(self.pending.items())
            ],
        }

    def load(self, d: dict[str, Any]) -> None:
        self.final_until = d["final_until"]
        self.signals_until = d.get("signals_until", self.final_until)
        self.stats = EvidenceStats(**d["stats"])
        for service, name, sc, minutes, values, scores in d["metrics"]:
            ser = MetricSeries(service, name, _scorer_from(sc))
            ser.minutes.extend(minutes)
            ser.values.extend(values)
            ser.scores.extend(scores)
            self.metrics[(service, name)] = ser
        for key, minutes, ok, failed, last_error in d["probes"]:
            pkey: ProbeKey = (key[0], key[1], key[2], key[3])
            ps = ProbeSeries(pkey, deque(minutes), deque(ok), deque(failed), last_error)
            self.probes[pkey] = ps
            self.probes_of.setdefault(pkey[0], []).append(pkey)
        for keys in self.probes_of.values():
            keys.sort()
        for sid, runs in d["status"].items():
            self.status[sid] = [StatusRun(*r) for r in runs]
        for minute, metrics, probes, status in d["pending"]:
            acc = self.pending[minute] = _Minute()
            for service, name, total, n in metrics:
                acc.metrics[(service, name)] = [total, n]
            for service, target, site, vantage, ok, failed, ts, err in probes:
                acc.probes[(service, target, site, vantage)] = [ok, failed, (ts, err)]
            acc.status = [(st[0], st[1], st[2], st[3], st[4]) for st in status]


def _add_run(runs: list[StatusRun], ts: float, indicator: str, desc: str, incident: str) -> None:
    """Fold one status event (in time order) into the runs."""
    last = runs[-1] if runs else None
    if last is not None and ts < last.start:
        return  # older than the current run: history is not rewritten
    if last is not None and last.indicator == indicator:
        runs[-1] = StatusRun(
            last.start, max(last.last, ts), indicator, desc or last.description,
            incident or last.incident,
        )  # fmt: skip
    else:
        runs.append(StatusRun(ts, ts, indicator, desc or None, incident or None))


def _scorer_state(sc: GenericScorer) -> dict[str, Any]:
    return sc.dump()


def _scorer_from(state: dict[str, Any] | list[float]) -> GenericScorer:
    sc = _new_scorer()
    if isinstance(state, dict):
        sc.load(state)
        return sc
    # a snapshot from before the likelihood scorer: keep what it learned, the rest anew
    nobs, t_last, s1, s2, mad, t_prev = state
    sc.nobs = np.array([int(nobs)], np.int64)
    sc.t_last = np.array([t_last])
    sc.s1 = np.array([s1])
    sc.s2 = np.array([s2])
    sc.mad = np.array([mad])
    sc.slevel = np.array([s1])
    sc.smad = np.array([mad])
    sc.long_mean = np.array([math.sqrt(2.0 / math.pi)])  # E|z| and the spread of its
    sc.long_var = np.array([(1.0 - 2.0 / math.pi) / sc.short_window])  # short mean, Gaussian
    sc._t_prev = t_prev
    return sc

"""The pure pipeline core: fed events and told the time, it emits incident changes.

No I/O and no wall clock. Time is the *watermark*: the latest event time seen, or a time
the caller announces with `advance_to` (the server's wall clock). When the watermark
passes the end of minute m, minute m *closes*: every series is scored on windows ending
at m (one vectorised tick) and the incident lifecycle steps. Minute m becomes *final*
`lateness` minutes later: the baseline learns from it and open incidents fold it in.
Events for minutes not yet final count as on time; older ones are late: they are still
kept in the stored minute counts, but decisions already taken are not revised.
"""

from __future__ import annotations

import io
import itertools
import math
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgspec
import numpy as np
from numpy.typing import NDArray

from outagewatch.catalog import Catalog
from outagewatch.detect.baseline import Baseline
from outagewatch.detect.cusum import (
    SURGE_SIZES,
    Sequential,
    cusum_step,
    first_sizes,
    guard_ratio,
    threshold,
)
from outagewatch.detect.kernels import Guards, Minute, Ring, Windows, window_scan
from outagewatch.detect.quiet import quiet_scan
from outagewatch.detect.scorer import Scores, score
from outagewatch.detect.series import Series, SeriesKey
from outagewatch.errors import StoreError
from outagewatch.events import OtherEvent, Rejection, ReportColumns
from outagewatch.incidents import lifecycle
from outagewatch.incidents.causes import IncidentView, explain, failing_providers
from outagewatch.incidents.clusters import assign_clusters
from outagewatch.incidents.evidence import Evidence
from outagewatch.incidents.lifecycle import Incident, State, Transition
from outagewatch.incidents.severity import confirmed, public
from outagewatch.incidents.verdicts import Verdicts
from outagewatch.pipeline.clock import StreamClock
from outagewatch.pipeline.dedup import Dedup
from outagewatch.pipeline.sources import BUCKETS, SOURCES_CHUNK, Sources
from outagewatch.pipeline.sources import RING as SOURCES_RING
from outagewatch.pipeline.sources import WINDOW as SOURCES_WINDOW
from outagewatch.settings import PipelineSettings

SPAN_MARGIN = 8  # a span freshens rows at least this many minutes older than ticks read
LEARN_BLOCK = 15  # the baseline learns from final minutes in aligned blocks of this many
SIGNAL_LATENESS_MIN = 0  # minutes after its close that a minute's probe results are final
RECENT_MINUTES = 180  # finished incidents stay this long as context for causes and clusters


class QuietRunHook(Protocol):
    """Per-series state that a quiet run of minutes must also carry forward (see
    `Pipeline._quiet_run`) besides the ring, the baseline and the sequential test (which
    `detect.quiet.quiet_scan` steps itself)."""

    def quiet_until(self, m0: int, m1: int) -> int:
        """The first minute in [m0, m1) that needs an ordinary tick by this state (m1: none),
        asked before the run is scanned (the minutes' counts are in the ring rows
        `m % ring`). Changes nothing."""
        ...

    def skip(self, m0: int, m1: int) -> None:
        """Carry the state over the quiet minutes [m0, m1), as their ticks would (their
        expectations are in `Series.ring_expected` by then)."""
        ...


@dataclass
class Stats:
    reports: int = 0  # accepted report events
    counted: int = 0  # reports that counted after deduplication (events, not weighted)
    duplicates: int = 0
    late: int = 0  # counted reports later than the allowed lateness
    ticks: int = 0  # minutes closed (quiet runs included)
    skipped_minutes: int = 0  # minutes jumped over in a gap of the data

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class CountRows:
    """Counted reports per (minute, service, country, problem), for the store."""

    minute: NDArray[np.int64]
    service: NDArray[np.int32]  # index into `services`
    country: NDArray[np.int32]  # index into `countries`
    problem: NDArray[np.int32]  # index into `problems`
    count: NDArray[np.int64]
    services: list[str]
    countries: list[str]
    problems: list[str]

    def __len__(self) -> int:
        return len(self.minute)

    def select(self, mask: NDArray[np.bool_]) -> CountRows:
        """The rows where `mask` is true (the same vocabularies)."""
        return CountRows(
            self.minute[mask], self.service[mask], self.country[mask], self.problem[mask],
            self.count[mask], self.services, self.countries, self.problems,
        )  # fmt: skip


@dataclass
class _Vocab:
    values: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def __call__(self, value: str) -> int:
        i = self.index.get(value)
        if i is None:
            i = self.index[value] = len(self.values)
            self.values.append(value)
        return i


class Pipeline:
    # Quiet runs of minutes in one compiled step (False: every minute an ordinary tick;
    # the results are identical, see tests/test_quiet.py).
    quiet_runs = True

    def __init__(
        self, settings: PipelineSettings | None = None, *, catalog: Catalog | None = None
    ) -> None:
        self.settings = settings or PipelineSettings()
        # The catalog gives causes their metric roles, groups and providers (None: causes
        # rest on reports and probes only).
        self.catalog = catalog
        self.evidence = Evidence(catalog, carry_min=max(1, self.settings.lateness_min))
        cfg = self.settings
        # Probe and status-page verdicts (incidents.verdicts): stepped on final minutes.
        self.verdicts = Verdicts(cfg.probe_quorum, cfg.probe_quorum_fraction, cfg.probe_fail_checks)
        self._recent: dict[str, dict[str, Any]] = {}  # finished incidents' docs, for context
        self.series = Series(self.settings.ring_minutes)
        self.baseline = Baseline(self.settings)
        self.dedup = Dedup(self.settings.dedup_window_s, self.settings.lateness_s)
        self.sources = Sources()
        self.stats = Stats()
        self.watermark: float | None = None
        # Decides when a report's time has come (one bad clock cannot move the time).
        self.clock = StreamClock(
            agree=self.settings.clock_agree, max_ahead_s=self.settings.max_ahead_s
        )
        self.closed_until = 0  # minutes < closed_until have been scored
        self.final_until = 0  # minutes < final_until have been folded into incidents
        self.told: float | None = None  # the time `advance_to` was last told (not stored)
        self.learn_until = 0  # minutes < learn_until have been learned by the baseline
        self.incidents: dict[str, Incident] = {}  # id -> incident still changing
        self.open_by_service: dict[str, Incident] = {}
        self.last_ended: dict[str, int] = {}  # service -> ended minute of its last incident
        self._transitions: list[Transition] = []
        self._changed: set[str] = set()
        self._finished: list[dict[str, Any]] = []
        self._countries = _Vocab()
        self._problems = _Vocab()
        self._pending: list[tuple[NDArray[np.int64], ...]] = []
        self._combo: dict[tuple[str, str, str], int] = {}
        self._combo_table = np.zeros((64, 6), np.int64)
        # A decoder's key table and the combination row of each of its keys (-1: not yet),
        # `_combo_rows`.
        self._kid_table: list[tuple[str, str, str]] | None = None
        self._kid_rows = np.zeros(0, np.int64)
        self._wrange = np.arange(max(self.settings.windows))
        self._windows = np.asarray(self.settings.windows, np.int64)
        self._log_alpha = math.log(self.settings.alpha)
        budget = self.settings.false_alarm_budget
        self._cusum_h = None if budget <= 0 else threshold(budget)
        self._cusum_ratio = guard_ratio(self.settings.min_ratio, self.settings.organic_ratio)
        self._ks = np.asarray(SURGE_SIZES, np.float64)
        self._first: NDArray[np.int8] = np.zeros(0, np.int8)
        self._wide: tuple[NDArray[Any], ...] | None = None  # `_scores_of`'s, for one run
        # Per-series state that quiet runs must carry forward besides the baseline's.
        self.quiet_hooks: list[QuietRunHook] = []
        # Maintenance windows, handed in as data: (service or group id, start s, end s).
        self.maintenance: tuple[tuple[str, float, float], ...] = ()

    # ================================================================ ingest
    def ingest(self, rep: ReportColumns) -> list[Rejection]:
        """Take a batch of accepted reports (arrival order) through the stream clock
        (pipeline.clock): those whose time the stream has reached are counted, the others
        held; returns the ones rejected as too far ahead of the stream."""
        ready, refused = self.clock.admit(rep)
        self._ingest(ready)
        return refused

    def _ingest(self, rep: ReportColumns) -> None:
        """Count a batch of accepted reports (arrival order) and run the ticks they cause.

        Deduplication follows the watermark report by report; the batch is then cut where
        the watermark enters a new minute, and each piece is counted after the ticks that
        closed the minutes before it: exactly as if the events had come one by one.
        """
        n = len(rep)
        if n == 0:
            return
        self.stats.reports += n
        ts, count = rep.ts, rep.count
        minute = np.floor(ts / 60.0).astype(np.int64)
        rows = self._combo_rows(rep)  # (may grow the table: before it is read)
        table = self._combo_table[rows]
        ids = table[:, :3]
        svc, cidx, pidx = table[:, 3], table[:, 4], table[:, 5]
        if self.watermark is None:
            self._start(int(minute[0]))
        wm_s = np.maximum.accumulate(np.maximum(ts, self.watermark or 0.0))
        hp, pb = self.dedup.person_hashes(rep.person, BUCKETS)
        kept = self.dedup.filter_indexed(svc, self.series.services, rep.person, ts, count, wm_s, hp)
        wm = np.maximum.accumulate(np.maximum(minute, self.closed_until))
        if self.series.fresh:
            self._birth(ids, wm)

        def to_sources(idx: NDArray[np.int64]) -> None:
            """The reports `idx` join the source sketches (pipeline.sources)."""
            if len(idx) == n:
                self.sources.add(svc, ts, pb, rep.ip, count, kept)
            elif len(idx):
                a, b = int(idx[0]), int(idx[-1]) + 1
                if b - a == len(idx):  # a run of reports (the common case): slices
                    cut = slice(a, b)
                    self.sources.add(svc[cut], ts[cut], pb[cut], rep.ip[cut], count[cut], kept[cut])
                    return
                ips = [rep.ip[i] for i in idx.tolist()]
                self.sources.add(svc[idx], ts[idx], pb[idx], ips, count[idx], kept[idx])

        steps = np.diff(np.concatenate(([self.closed_until], wm)))
        if steps.max() > self.settings.max_catchup_minutes:
            # A gap in the data: minute by minute, as `_advance_minute` handles gaps.
            starts = np.concatenate(([0], np.flatnonzero(np.diff(wm)) + 1, [n]))
            for a, b in itertools.pairwise(starts.tolist()):
                self._advance_minute(int(wm[a]))
                keep = kept[a:b]
                self._add(ids[a:b][keep], minute[a:b][keep], count[a:b][keep])
                to_sources(np.arange(a, b))
        else:
            self._ingest_spans(ids, minute, count, kept, wm, to_sources)
        n_kept = int(kept.sum())
        self.stats.counted += n_kept
        self.stats.duplicates += n - n_kept
        self._pending.append((minute[kept], svc[kept], cidx[kept], pidx[kept], count[kept]))
        self.watermark = max(float(self.watermark or 0.0), float(ts.max()))

    def _ingest_spans(
        self,
        ids: NDArray[np.int64],
        minute: NDArray[np.int64],
        count: NDArray[np.int64],
        kept: NDArray[np.bool_],
        wm: NDArray[np.int64],
        to_sources: Callable[[NDArray[np.int64]], None],
    ) -> None:
        """Count reports span by span (at most `ring - backdate_max - SPAN_MARGIN` minutes
        of watermark each: 60 by default).

        A report in the newest minute at its arrival can only be read by the tick that
        closes that minute or later ones, so a span's in-order reports go into the ring at
        once, after the span's new minutes are made fresh. Only out-of-order reports are
        added one watermark step at a time. A span starts at most one minute after the last
        closed one, so the rows it freshens held minutes at least backdate_max +
        SPAN_MARGIN older than its first tick, which no tick of the span reads (they look
        back at most backdate_max minutes, and late reports at most the lateness).
        """
        n = len(wm)
        ring = self.series.ring
        span = max(1, ring - self.settings.backdate_max_minutes - SPAN_MARGIN)
        on_time_new = kept & (minute == wm)
        late_ish = kept & ~on_time_new
        # The source sketches (pipeline.sources) keep a short ring, so they take in-order
        # reports SOURCES_CHUNK watermark minutes at a time (never further ahead of the
        # ticks), and out-of-order ones after the ticks before them, as the ring here does.
        late_src = minute < wm
        any_late_src = bool(late_src.any())
        sources_until = -1  # in-order reports of watermark minutes <= this are in
        a = 0
        while a < n:
            if wm[a] > self.closed_until + 1:
                # A jump: close the minutes in between one by one first, so that a span
                # never freshens more than `span` rows ahead of the ticks.
                self._advance_minute(int(wm[a]))
            b = int(np.searchsorted(wm, wm[a] + span, side="left"))
            first_new, last = self.closed_until + 1, int(wm[b - 1])
            if last >= first_new:
                self.series.ring_count[np.arange(first_new, last + 1) % ring] = 0
            sel = on_time_new[a:b]
            self._add(ids[a:b][sel], minute[a:b][sel], count[a:b][sel])
            wa = wm[a:b]
            starts = np.concatenate(([0], np.flatnonzero(np.diff(wa)) + 1, [b - a]))
            has_late = bool(late_ish[a:b].any())
            if not has_late and not any_late_src:
                # In order: the ticks between two source chunks run together.
                sources_until = self._close_by_chunks(a, wa, starts, sources_until, to_sources)
                a = b
                continue
            for s0, s1 in itertools.pairwise(starts.tolist()):
                if wa[s0] > sources_until:
                    e = int(np.searchsorted(wa, wa[s0] + SOURCES_CHUNK, side="left"))
                    chunk = a + s0 + np.flatnonzero(~late_src[a + s0 : a + e])
                    to_sources(chunk)
                    # The last watermark minute taken (a chunk stops at the span's end).
                    sources_until = int(wa[e - 1])
                self._close_until(int(wa[s0]))
                if has_late:
                    sel = late_ish[a + s0 : a + s1]
                    if sel.any():
                        seg = slice(a + s0, a + s1)
                        self._add(ids[seg][sel], minute[seg][sel], count[seg][sel])
                if any_late_src:
                    to_sources(a + s0 + np.flatnonzero(late_src[a + s0 : a + s1]))
            a = b

    def _close_by_chunks(
        self,
        a: int,
        wa: NDArray[np.int64],
        starts: NDArray[np.int64],
        sources_until: int,
        to_sources: Callable[[NDArray[np.int64]], None],
    ) -> int:
        """`_ingest_spans`' loop over watermark steps for in-order reports only: a chunk's
        reports join the source sketches, then the ticks up to its last watermark step run
        (the order of the step-by-step loop).

        Only ordinary ticks read the sketches (an incident opening or hot), so while the
        minutes are quiet (`_quiet_run`) the chunks wait, and join in their order before
        the next ordinary tick (or at the span's end) in one addition of the reports of
        their last `SOURCES_RING` minutes: older ones would be overwritten or left unread
        in the sketches' ring (`Sources.dump` leaves such slots out), so the sketches are
        those of one chunk after the other. Returns the new `sources_until`."""
        seg = wa[starts[:-1]]
        waiting: list[int] = []  # [first report, end] of chunks not yet added

        def join() -> None:
            if waiting:
                lo, e = waiting
                newest = int(wa[e - a - 1])  # in order: the reports' minutes are wa's
                lo = max(lo, a + int(np.searchsorted(wa, newest - SOURCES_RING + 1)))
                to_sources(np.arange(lo, e))
                waiting.clear()

        end = int(seg[-1])
        i = 0
        while i < len(seg):
            w = int(seg[i])
            if w > sources_until:
                lo = a + int(starts[i])
                e = a + int(np.searchsorted(wa, w + SOURCES_CHUNK, side="left"))
                # The chunk ends with the span: it covers the steps up to its last report's.
                sources_until = int(wa[e - a - 1])
                if waiting:
                    waiting[1] = e
                else:
                    waiting[:] = [lo, e]
            j = int(np.searchsorted(seg, sources_until, side="right"))
            target = int(seg[j - 1])
            # Quiet minutes up to the span's last step, past this chunk: they read no sketch.
            self._close(end, zero_next=False, quiet_only=True)
            if self.closed_until >= end and sources_until < end:
                # The rest of the span is quiet: its chunks only wait, up to its last step.
                lo = a + int(starts[j])
                waiting[:] = [waiting[0] if waiting else lo, a + len(wa)]
                sources_until = end
                break
            if self.closed_until < target:  # an ordinary tick is due: it may read them
                join()
                self._close(target, zero_next=False)
            i = j
        join()
        return sources_until

    def _birth(self, ids: NDArray[np.int64], wm: NDArray[np.int64]) -> None:
        """New series take part in ticks from their first report's arrival on, as if the
        reports had come one by one (not from the start of the batch)."""
        s = self.series
        fresh = np.asarray(s.fresh, np.int64)
        s.fresh.clear()
        first = np.full(len(fresh), len(wm), np.int64)
        if len(fresh) <= 16:  # the common case: a few new series, found by comparisons
            for k, f in enumerate(fresh.tolist()):
                at = np.flatnonzero((ids == f).any(axis=1))
                if len(at):
                    first[k] = at[0]
        else:
            for col in range(ids.shape[1]):
                uniq, at = np.unique(ids[:, col], return_index=True)
                pos = np.searchsorted(uniq, fresh)
                hit = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == fresh)
                first[hit] = np.minimum(first[hit], at[pos[hit]])
        s.born[fresh] = np.where(first < len(wm), wm[np.minimum(first, len(wm) - 1)], 0)

    def _close_until(self, m_now: int) -> None:
        """Tick every minute before `m_now` (the ring rows are already fresh)."""
        self._close(m_now, zero_next=False)

    def _combo_rows(self, rep: ReportColumns) -> NDArray[np.int64]:
        """Each report's row of the combination table, new combinations registered in the
        order they first come. By the decoder's key indices where it gave them (an array
        look-up, `ReportColumns.kid`), else one dict look-up per report."""
        keys, kid, known = rep.keys, rep.kid, rep.table
        if known is not None and len(kid) == len(keys):
            if known is not self._kid_table:  # another decoder's indices
                self._kid_table, self._kid_rows = known, np.zeros(0, np.int64)
            if len(self._kid_rows) < len(known):
                more = np.full(len(known) - len(self._kid_rows), -1, np.int64)
                self._kid_rows = np.concatenate((self._kid_rows, more))
            rows = self._kid_rows[kid]
            if rows.min(initial=0) < 0:
                missing = kid[rows < 0]
                seen, first = np.unique(missing, return_index=True)
                filled = self._kid_rows.copy()  # never written in place (a copied pipeline)
                for k in seen[np.argsort(first)].tolist():  # in the order they first come
                    filled[k] = self._new_combo(known[k])
                self._kid_rows = filled
                rows = filled[kid]
            return rows
        found: list[int | None] = list(map(self._combo.get, keys))
        if None in found:  # new combinations, registered in the order they first come
            fresh = itertools.compress(keys, map(operator.is_, found, itertools.repeat(None)))
            for key in dict.fromkeys(fresh):  # C-level passes, not a loop in Python
                self._new_combo(key)
            found = list(map(self._combo.get, keys))
        return np.asarray(found, np.int64)

    def _new_combo(self, key: tuple[str, str, str]) -> int:
        """Register a (service, country, problem) combination: its series and codes."""
        known = self._combo.get(key)
        if known is not None:  # registered already
            return known
        service, country, problem = key
        s = self.series
        row = (
            s.get(SeriesKey(service, "total")),
            s.get(SeriesKey(service, "country", country)),
            s.get(SeriesKey(service, "problem", problem)),
            s.service_index[service],
            self._countries(country),
            self._problems(problem),
        )
        i = len(self._combo)
        if i >= len(self._combo_table):
            grown = np.zeros((max(64, 2 * i), 6), np.int64)
            grown[:i] = self._combo_table[:i]
            self._combo_table = grown
        self._combo_table[i] = row
        self._combo[key] = i
        return i

    def _start(self, minute: int) -> None:
        self.watermark = minute * 60.0
        self.closed_until = minute
        self.final_until = minute - self.settings.lateness_min
        self.learn_until = self.final_until

    def _add(
        self, ids: NDArray[np.int64], minute: NDArray[np.int64], count: NDArray[np.int64]
    ) -> None:
        on_time = minute >= self.final_until
        late = int((~on_time).sum())
        if late:
            self.stats.late += late
            ids, minute, count = ids[on_time], minute[on_time], count[on_time]
        if len(minute) == 0:
            return
        rc = self.series.ring_count
        # Flat indices into the (C-ordered) ring: numpy's fast path of `at`, ~6x the
        # (row, column) form's speed, the same additions in the same order.
        base = (minute % self.series.ring) * rc.shape[1]
        c = count.astype(np.float32)
        flat = rc.reshape(-1)
        for col in range(3):
            np.add.at(flat, base + ids[:, col], c)

    def set_maintenance(self, windows: Sequence[tuple[str, float, float]]) -> None:
        """The maintenance windows: (service or group id, start, end) in epoch seconds.
        Incidents that open inside one are marked `maintenance` (they alert no one), and
        the minutes inside one do not teach the baseline."""
        self.maintenance = tuple((str(k), float(a), float(b)) for k, a, b in windows)

    def _maintained(self, service: str, t: float) -> bool:
        """Is `service` inside a maintenance window at `t` (epoch seconds)?"""
        if not self.maintenance:
            return False
        svc = self.catalog.services.get(service) if self.catalog is not None else None
        keys = (service, svc.group) if svc is not None and svc.group else (service,)
        return any(k in keys and a <= t < b for k, a, b in self.maintenance)

    def _maintenance_mask(self, f: int) -> NDArray[np.bool_]:
        """Services inside a maintenance window during minute `f`."""
        mask = np.zeros(self.series.n_services, np.bool_)
        keys = {k for k, a, b in self.maintenance if a < (f + 1) * 60.0 and b > f * 60.0}
        if keys:
            for si, sid in enumerate(self.series.services):
                svc = self.catalog.services.get(sid) if self.catalog is not None else None
                mask[si] = sid in keys or (svc is not None and svc.group in keys)
        return mask

    def set_catalog(self, catalog: Catalog | None) -> None:
        self.catalog = catalog
        self.evidence.set_catalog(catalog)

    def ingest_others(self, others: Sequence[OtherEvent]) -> None:
        """Keep accepted probe, status and metric events as evidence for causes.

        They do not move the time: they are applied when their minute becomes final (the
        ticks that reports or `advance_to` cause), so a batch's others may be handed in
        before its reports. Others for a minute already final are late and not used.
        """
        if others:
            self.evidence.ingest(others)

    def official_status(self, service: str) -> dict[str, Any] | None:
        """What the service's status page says: {"indicator", "since", "updated_at",
        "description", "incident"} (times RFC 3339), or None when it never said anything."""
        return self.evidence.official_status(service)

    # ================================================================ time
    def advance_to(self, t: float) -> None:
        """The time is now `t` (epoch seconds): close every minute that ended by then."""
        self.told = t
        self._ingest(self.clock.advance(t))  # held reports the time has reached
        if self.watermark is None:
            self._start(int(t // 60))
        self._advance_minute(int(t // 60))
        self.watermark = max(float(self.watermark or 0.0), t)
        if self.evidence.active and self.closed_until > 0:
            self._signals(self.closed_until - 1)  # minutes the reports closed before `t` did

    def release_until(self, t: float) -> None:
        """A clock the caller trusts says it is `t` (the server's): count the held reports
        it has reached, without closing minutes (that is `advance_to`'s)."""
        self._ingest(self.clock.advance(t))

    def rewind(self, t: float) -> None:
        """The time was ahead of `t` (a server restarted after its clock ran ahead): go back,
        as after a gap in the data (the ring's minutes are dropped, none is ticked twice)."""
        if self.watermark is None or self.watermark <= t:
            return
        m = int(t // 60)
        self.series.ring_count[:] = 0
        self.series.ring_expected[:] = 0
        self.watermark = t
        self.closed_until = m
        self.final_until = m - self.settings.lateness_min
        self.learn_until = min(self.learn_until, self.final_until)
        self.clock.rewind(t)

    def _advance_minute(self, m_now: int) -> None:
        """Minutes before `m_now` close; the ring slots up to `m_now` are made fresh."""
        if m_now <= self.closed_until:
            return
        ring = self.series.ring
        gap = m_now - self.closed_until
        if gap > self.settings.max_catchup_minutes:
            # A gap in the data: do not pretend we watched those minutes.
            self.stats.skipped_minutes += gap
            for m in range(self.closed_until, self.closed_until + self.settings.lateness_min + 1):
                self._tick(m)  # close and finalise what the ring still holds
                self.series.ring_count[(m + 1) % ring] = 0
            self.series.ring_count[:] = 0
            self.series.ring_expected[:] = 0
            self.closed_until = m_now
            self.final_until = m_now - self.settings.lateness_min
            self.learn_until = self.final_until
            return
        # Each minute's row is made fresh (it held minute - ring) just after the tick before
        # it, never earlier: rows of minutes before the jump stay readable by those ticks.
        self._close(m_now, zero_next=True)

    # ================================================================ quiet runs
    def _close(self, m_now: int, *, zero_next: bool, quiet_only: bool = False) -> None:
        """Close every minute before `m_now`: quiet runs in one compiled step, the other
        minutes tick by tick. `zero_next`: each next minute's ring row is cleared after the
        minute closes (when no report is added between ticks). `quiet_only`: stop at the
        first minute that needs an ordinary tick."""
        ring = self.series.ring
        while self.closed_until < m_now:
            m = self.closed_until
            # Probe, status or metric evidence is finalised minute by minute and its verdicts
            # may open an incident in any of them (incidents.verdicts): ordinary ticks then.
            # Services with an incident are ticked beside a run (see `_quiet_run`); their
            # ticks read the source sketches, which `quiet_only` runs leave waiting.
            if (
                self.quiet_runs
                and len(self.series)
                and not self.evidence.active
                and not (quiet_only and self.incidents)
            ):
                m, need_tick = self._quiet_run(m, m_now, zero_next=zero_next)
                if not need_tick:
                    continue
            if quiet_only:
                return
            self._tick(m)
            if zero_next:
                self.series.ring_count[(m + 1) % ring] = 0

    def _quiet_run(self, m0: int, m_now: int, *, zero_next: bool) -> tuple[int, bool]:
        """Close minutes from m0 on while they are quiet: no surge candidate in any window
        of a service without an incident (open or recent), so their ticks would only write
        the expectation into the ring, step the sequential test and learn. Returns (k,
        need_tick): minutes < k are closed; minute k needs an ordinary tick when `need_tick`.

        The series of services with an incident ("hot") are left out of the compiled run
        and then ticked minute by minute for the run's minutes, on their own
        (`_tick(only=...)`): nothing in a tick mixes series of different services (windows,
        scores, the sequential test and learning are per series; the lifecycle, folding and
        explanations read only the incidents' services), so this is the order-independent
        split of the ordinary ticks. A series outside them that becomes a candidate ends
        the run, and its minute is an ordinary tick of every series.

        Every per-series state that ticks carry forward is carried here: the ring, the
        sequential test and the baseline's learning (`detect.quiet.quiet_scan`, which also
        gathers the seasonal factors once per half hour and learning step, from the
        calendar handed in once per half hour), and whatever `quiet_hooks` hold (one place
        to add more). Runs are taken only while no probe, status or metric evidence is
        active (see `_close`)."""
        s = self.series
        cfg = self.settings
        lat = cfg.lateness_min
        # Rows cleared ahead are never read by a tick a hook may call for (backdating).
        longest = max(1, s.ring - cfg.backdate_max_minutes - 2)
        m1 = min(m_now, m0 + longest)
        natural = m1
        for hook in self.quiet_hooks:  # before the scan: it steps the CUSUMs in place
            m1 = min(m1, hook.quiet_until(m0, m1))
        # The calendar of every half hour the run's ticks and learning blocks read.
        h_first = (m0 - lat - LEARN_BLOCK) // 30
        calendar = self.baseline.run_calendar(s, h_first, (m1 - 1) // 30 + 1)
        busy = self._learn_busy(m0, m1)
        hot = self._hot_series()
        ticking = np.flatnonzero(hot)
        if len(ticking):
            held = (s.cusum[ticking], s.cusum_x[ticking], s.cusum_mu[ticking])
            before = (self.final_until, self.learn_until)
            self._wide = None
        tests = (self._windows, cfg.warmup_minutes, self._guards(), self._sequential_test())
        learning = (
            lat, LEARN_BLOCK, self.final_until, self.learn_until, busy, s.view("born"),
            self.baseline.rates,
        )  # fmt: skip
        k, learn_until, learned = quiet_scan(
            (m0, m1, hot, zero_next), s.rings(), s.model(), calendar, tests, learning
        )
        need_tick = k < m1 or m1 < natural  # a candidate, or a hook wants the tick
        for hook in self.quiet_hooks:
            hook.skip(m0, k)
        if len(ticking):
            # The kernel held their sequential tests at 0: their own ticks step them.
            s.cusum[ticking], s.cusum_x[ticking], s.cusum_mu[ticking] = held
        if k == m0:
            return k, need_tick
        self.baseline.learned(learned)
        if len(ticking):
            self.final_until, self.learn_until = before
            for m in range(m0, k):
                self._tick(m, only=ticking)
            assert self.closed_until == k and self.learn_until == learn_until
            return k, need_tick
        # The tails of the ticks of minutes m0..k-1 (`_tick` after `lifecycle.step`).
        self.stats.ticks += k - m0
        self.closed_until = k
        self.final_until = max(self.final_until, k - lat)
        self.learn_until = learn_until
        return k, need_tick

    def _hot_series(self) -> NDArray[np.bool_]:
        """The series of services with an incident (open, or ended and not yet final)."""
        s = self.series
        mask = np.zeros(s.n_services, np.bool_)
        for inc in self.incidents.values():
            mask[s.service_index[inc.service]] = True
        out: NDArray[np.bool_] = mask[s.view("svc")]
        return out

    def _signals(self, m: int) -> None:
        """Probe results and status polls are final SIGNAL_LATENESS_MIN after their minute
        closes (not the reports' lateness: they come as they happen, and a probe-only
        incident opens within its checks, incidents.verdicts); their verdicts step then."""
        fs = m - min(self.settings.lateness_min, SIGNAL_LATENESS_MIN)
        if self.told is not None:
            # Not beyond the caller's clock (the server's): reports stamped ahead of it
            # move the stream's time, but the server's own checks are stamped by it.
            fs = min(fs, int(self.told // 60) - 1)
        self.evidence.finalise_signals(fs)
        self.verdicts.step(self, m, fs)

    def _learn_busy(self, m0: int, m1: int) -> NDArray[np.bool_]:
        """Which series may not learn in each learning block whose tick is in [m0, m1):
        (blocks, series), the services in maintenance (a quiet run has no incident)."""
        lat = self.settings.lateness_min
        ticks = [
            m
            for m in range(max(m0, self.final_until + lat), m1)
            if (m - lat + 1) % LEARN_BLOCK == 0
        ]
        n = len(self.series)
        busy = np.zeros((max(len(ticks), 1), n), np.bool_)
        if self.maintenance:
            svc = self.series.view("svc")
            learn_until = self.learn_until
            for b, m in enumerate(ticks):
                f = m - lat
                mask = np.zeros(self.series.n_services, np.bool_)
                for g in range(max(learn_until, f + 1 - LEARN_BLOCK), f + 1):
                    mask |= self._maintenance_mask(g)
                busy[b] = mask[svc]
                learn_until = f + 1
        return busy

    # ================================================================ tick
    def _tick(self, m: int, only: NDArray[np.int64] | None = None) -> None:
        """Minute m's tick. `only`: of these series alone (the others' minute is a quiet
        run's, `_quiet_run`); they are every series of their services."""
        s = self.series
        cfg = self.settings
        n = len(s)
        ring = s.ring
        self.closed_until = m + 1
        self.stats.ticks += 1
        if n == 0:
            self.final_until = m + 1 - cfg.lateness_min
            if self.evidence.active:
                self._signals(m)
                self.evidence.finalise(m - cfg.lateness_min)
            return
        if only is not None:
            self._tick_tail(m, *self._scores_of(m, only), only)
            return
        mu = self.baseline.expected(s, m)
        rows = self._window_rows(m)  # the newest minute first
        x = s.ring_count[m % ring, :n]
        eligible = s.view("nobs") >= cfg.warmup_minutes
        disp32 = s.view("disp")
        minute = (x, mu, disp32, eligible)
        sums, expected, candidate = self._window_scan(s.rings(), rows, minute)
        disp = disp32.astype(np.float64)
        scores = score(sums, expected, x, mu, disp, eligible, cfg, candidate=candidate)
        if self._cusum_h is not None:
            scores = self._sequential(scores, minute)
        self._tick_tail(m, scores, disp)

    def _window_scan(self, ring: Ring, rows: NDArray[np.int64], minute: Minute) -> Windows:
        """`detect.kernels.window_scan` of the series of `minute` (the columns of `ring`)."""
        n = len(minute[1])
        nw = len(self._windows)
        out = (np.empty((n, nw)), np.empty((n, nw)), np.empty((n, nw), np.bool_))
        window_scan(ring, rows, self._windows, minute, self._guards(), out)
        return out

    def _tick_tail(
        self,
        m: int,
        scores: Scores,
        disp: NDArray[np.float64],
        only: NDArray[np.int64] | None = None,
    ) -> None:
        """The incidents' step, final minutes, signals and explanations of minute m's tick."""
        cfg = self.settings
        lifecycle.step(self, m, scores, disp)
        f = m - cfg.lateness_min
        if f >= self.final_until:
            self._finalise(f, only)
            self.final_until = f + 1
        if self.evidence.active:
            self._signals(m)
            self.evidence.finalise(f)
        if self.incidents:
            self._explain(m, f)

    def _scores_of(self, m: int, idx: NDArray[np.int64]) -> tuple[Scores, NDArray[np.float64]]:
        """`_tick`'s windows, scores and sequential test for the series `idx` alone (the
        same kernels on their columns), widened to every series: the others score nothing
        (their minute is a quiet run's, which had no candidate and did not fire). The wide
        arrays are kept for the run (`_wide`): only the entries of `idx` are ever written."""
        s = self.series
        cfg = self.settings
        n = len(s)
        rows = self._window_rows(m)
        nw = len(cfg.windows)
        if self._wide is None or self._wide[0] is not idx:
            self._wide = (
                idx, np.zeros(n, np.bool_), np.zeros(n), np.zeros((n, nw)), np.zeros((n, nw)),
                np.zeros(n), np.zeros(n),
            )  # fmt: skip
        _, w_fired, w_ratio, w_sums, w_expected, w_mu, w_disp = self._wide
        mu = self.baseline.expected_of(s, m, idx)
        # The windows' minutes of those series alone (newest first), as a ring of their own.
        count = s.ring_count[rows[:, None], idx]
        expect = s.ring_expected[rows[:, None], idx]
        eligible = s.view("nobs")[idx] >= cfg.warmup_minutes
        disp32 = np.ascontiguousarray(s.view("disp")[idx])
        x = count[0]
        minute = (x, mu, disp32, eligible)
        sums, expected, candidate = self._window_scan((count, expect), self._wrange, minute)
        s.ring_expected[rows[0], idx] = expect[0]
        disp = disp32.astype(np.float64)
        sc = score(sums, expected, x, mu, disp, eligible, cfg, candidate=candidate)
        fired, ratio = sc.fired, sc.ratio
        if self._cusum_h is not None:
            held = self._hold_open()
            kept = s.cusum_recent[held]
            test = self._sequential_test(idx)
            fired = fired.copy()
            ratio = ratio.copy()
            cusum_step(test, minute, self._guards(), (fired, ratio))
            s.cusum[idx], s.cusum_x[idx], s.cusum_mu[idx], s.cusum_recent[idx] = test[:4]
            s.cusum_recent[held] = kept
        w_fired[idx] = fired
        w_ratio[idx] = ratio
        w_sums[idx] = sums
        w_expected[idx] = expected
        w_mu[idx] = mu
        w_disp[idx] = disp
        x_all = s.ring_count[m % s.ring, :n]
        wide = Scores(w_fired, w_ratio, w_sums, w_expected, x_all, w_mu, w_disp, sc.w5)
        return wide, w_disp

    def _hold_open(self) -> NDArray[np.int64]:
        """The sequential test of series whose service has an open incident starts every
        minute from 0 (`_sequential`). Returns those series: their guard's forecast-bias
        EWMAs (`Series.cusum_recent`) do not learn the outage's minutes, as the baseline
        does not (the caller puts them back after the step)."""
        s = self.series
        if not self.open_by_service:
            return np.zeros(0, np.int64)
        busy = np.zeros(s.n_services, np.bool_)
        busy[[s.service_index[sid] for sid in self.open_by_service]] = True
        held = np.flatnonzero(busy[s.view("svc")])
        s.cusum[held] = 0.0
        s.cusum_x[held] = 0.0
        s.cusum_mu[held] = 0.0
        return held

    def _sequential(self, sc: Scores, minute: Minute) -> Scores:
        """This minute of the sequential surge test (detect.cusum), beside the windows: a
        series fires when either test does. While its service has an open incident a
        series' CUSUM starts every minute from 0: the incident is confirmed already, and a
        run carried over from the surge must not open a second one after it resolves."""
        assert self._cusum_h is not None
        s = self.series
        held = self._hold_open()
        kept = s.cusum_recent[held]
        fired = sc.fired.copy()
        ratio = sc.ratio.copy()
        cusum_step(self._sequential_test(), minute, self._guards(), (fired, ratio))
        s.cusum_recent[held] = kept
        return replace(sc, fired=fired, ratio=ratio)

    def _sequential_test(self, idx: NDArray[np.int64] | None = None) -> Sequential:
        """The sequential test as `cusum_step` takes it (`detect.cusum.Sequential`): every
        series' state itself, or copies of the series `idx` (the caller writes them back).
        h is 0 when the test is off; its ratio guard is `guard_ratio`'s (`_cusum_ratio`)."""
        s = self.series
        h = 0.0 if self._cusum_h is None else self._cusum_h
        g = self._cusum_ratio
        if idx is None:
            state = (s.cusum, s.cusum_x, s.cusum_mu, s.cusum_recent)
            return (*state, self._ks, self._first_size(), h, g)
        first = np.ascontiguousarray(self._first_size()[idx])
        state = (s.cusum[idx], s.cusum_x[idx], s.cusum_mu[idx], s.cusum_recent[idx])
        return (*state, self._ks, first, h, g)

    def _guards(self) -> Guards:
        """The guards as the kernels take them (`detect.kernels.Guards`)."""
        cfg = self.settings
        return (cfg.min_ratio, cfg.min_excess, self._log_alpha)

    def _first_size(self) -> NDArray[np.int8]:
        """detect.cusum.first_sizes of every series (a series' kind never changes)."""
        n = len(self.series)
        if len(self._first) != n:
            self._first = first_sizes(self.series.view("kind"))
        return self._first

    def _window_rows(self, m: int) -> NDArray[np.int64]:
        return (m - self._wrange) % self.series.ring

    def _judge_sources(self, inc: Incident, si: int, m: int, at: float | None) -> None:
        """Does the incident's traffic up to minute m (the last 16 minutes at most) look like
        a fake-report flood? (See pipeline.sources.) Asked when it opens and at every
        minute its surge is hot. A change while ongoing is an `abuse` transition (`at`:
        None when the incident is opening: the `opened` row says it)."""
        s = self.series
        lo = max(inc.started_min, m - SOURCES_WINDOW + 1)
        mins = np.arange(lo, m + 1) % s.ring
        expected = float(s.ring_expected[mins, s.total_of[si]].sum())
        v = self.sources.assess(si, inc.started_min, m, was=inc.suspected_abuse, expected=expected)
        evidence = v.evidence or (inc.abuse_evidence if v.suspected else [])
        if v.suspected == inc.suspected_abuse and evidence == inc.abuse_evidence:
            return
        changed = v.suspected != inc.suspected_abuse
        inc.suspected_abuse = v.suspected
        inc.abuse_evidence = list(evidence)
        self._changed.add(inc.id)
        self._check_public(inc, at, force=changed)

    def _check_public(self, inc: Incident, at: float | None, *, force: bool = False) -> None:
        """Whether the public sees the incident (not a suspected flood, or confirmed) may
        have changed: while ongoing, a change is an `abuse` transition, which is also what
        lets alerts go out for a flood that probes or the status page come to confirm."""
        shown = self._trusted(inc)
        if shown == inc.shown and not force:
            return
        inc.shown = shown
        if at is not None and inc.state is State.ONGOING:
            self._transitions.append(
                inc.move(
                    State.ONGOING,
                    at,
                    action="abuse",
                    suspected_abuse=inc.suspected_abuse,
                    public=shown,
                )
            )

    # ================================================================ final minutes
    def _in_incident(self, f: int) -> NDArray[np.bool_]:
        mask = np.zeros(self.series.n_services, np.bool_)
        for inc in self.incidents.values():
            if inc.started_min <= f and (inc.ended_min is None or f < inc.ended_min):
                mask[self.series.service_index[inc.service]] = True
        return mask

    def _finalise(self, f: int, only: NDArray[np.int64] | None = None) -> None:
        """Minute f is final: fold it into incidents; every LEARN_BLOCK minutes, learn (the
        series `only`, when given)."""
        for inc in list(self.incidents.values()):
            if inc.acc_until <= f:
                self._fold(inc, f)
        if (f + 1) % LEARN_BLOCK == 0:
            self._learn(list(range(max(self.learn_until, f + 1 - LEARN_BLOCK), f + 1)), only)
        for inc in list(self.incidents.values()):
            if inc.done and inc.acc_until <= self.learn_until:
                doc = inc.doc()
                # What the status page said during the incident (final minutes only).
                assert inc.ended_min is not None
                doc["official_status"] = self.evidence.official_during(
                    inc.service, inc.started_min * 60.0, inc.ended_min * 60.0
                )
                self._finished.append(doc)
                self._recent[inc.id] = doc
                self._changed.discard(inc.id)
                del self.incidents[inc.id]

    def _learn(self, minutes: list[int], only: NDArray[np.int64] | None = None) -> None:
        s = self.series
        n = len(s)
        busy = np.zeros(s.n_services, np.bool_)
        for f in minutes if self.incidents or self.maintenance else ():
            busy |= self._in_incident(f) | self._maintenance_mask(f)
        # Series not yet born at this tick (the tick closing minutes[-1] + lateness) wait.
        ok = ~busy[s.view("svc")] & (s.view("born") <= minutes[-1] + self.settings.lateness_min)
        if only is not None:  # the others learned in a quiet run (`_quiet_run`)
            ok &= np.isin(np.arange(n), only)
        x = s.ring_count[np.asarray(minutes) % s.ring, :n].T.astype(np.float64)
        self.baseline.learn(s, minutes, x, ok)
        self.learn_until = minutes[-1] + 1

    def _fold(self, inc: Incident, f: int) -> None:
        if inc.ended_min is not None and f >= inc.ended_min:
            inc.acc_until = max(inc.acc_until, inc.ended_min)
            return
        total, countries, problems = self._minute_breakdown(inc.service, f)
        inc.total += total
        inc.countries.update(countries)
        inc.problems.update(problems)
        inc.acc_until = f + 1
        self._changed.add(inc.id)

    def _unfold_after_end(self, inc: Incident) -> None:
        """Take back minutes folded in while the incident waited to resolve."""
        assert inc.ended_min is not None
        for f in range(inc.ended_min, inc.acc_until):
            total, countries, problems = self._minute_breakdown(inc.service, f)
            inc.total -= total
            inc.countries.subtract(countries)
            inc.problems.subtract(problems)
        inc.acc_until = min(inc.acc_until, inc.ended_min)

    def _minute_breakdown(self, service: str, f: int) -> tuple[float, Counter[str], Counter[str]]:
        s = self.series
        si = s.service_index[service]
        slot = f % s.ring
        countries: Counter[str] = Counter()
        problems: Counter[str] = Counter()
        row = s.ring_count[slot]
        for i in s.service_series[si]:
            v = int(row[i])
            if v <= 0:
                continue
            key = s.keys[i]
            if key.kind == "country":
                countries[key.key] += v
            elif key.kind == "problem":
                problems[key.key] += v
        return float(row[s.total_of[si]]), countries, problems

    # ================================================================ explanations
    def _explain(self, m: int, f: int) -> None:
        """Re-evaluate the causes, probe confirmation and cluster of every live incident."""
        horizon = (m - RECENT_MINUTES) * 60.0
        for iid, doc in list(self._recent.items()):
            if (IncidentView.from_doc(doc).end or 0.0) < horizon:
                del self._recent[iid]
        live = sorted(self.incidents.values(), key=lambda i: i.id)
        views = [_view(inc) for inc in live]
        # A suspected fake flood is no evidence about other incidents (nor in a cluster),
        # unless probes or the official status confirm it.
        trusted = [v for inc, v in zip(live, views, strict=True) if self._trusted(inc)]
        context = [IncidentView.from_doc(d) for _, d in sorted(self._recent.items()) if public(d)]
        everyone = trusted + context
        lo = min(v.start for v in views) // 60 - 15
        failing = failing_providers(self.catalog, self.evidence, int(lo), f)
        clusters = assign_clusters(everyone, self.catalog, failing_providers=failing)
        at = (m + 1) * 60.0
        for inc, view in zip(live, views, strict=True):
            cluster = clusters.get(inc.id)
            ex = explain(
                view,
                everyone if self._trusted(inc) else [view, *everyone],
                catalog=self.catalog,
                evidence=self.evidence,
                final_minute=f,
                cluster=cluster,
            )
            same = inc.state
            if _summary(ex.causes) != _summary(inc.causes) or (
                ex.probe_confirmed != inc.probe_confirmed
            ):
                self._transitions.append(
                    inc.move(
                        same,
                        at,
                        action="cause",
                        causes=[[c["kind"], c["confidence"]] for c in ex.causes],
                        probe_confirmed=ex.probe_confirmed,
                    )
                )
            if _cluster_key(cluster) != _cluster_key(inc.cluster):
                self._transitions.append(inc.move(same, at, action="cluster", cluster=cluster))
            if ex.causes != inc.causes or cluster != inc.cluster:
                self._changed.add(inc.id)
            inc.causes = ex.causes
            inc.probe_confirmed = ex.probe_confirmed
            inc.cluster = cluster
            self._check_public(inc, at)

    def _trusted(self, inc: Incident) -> bool:
        """Not a suspected flood, or confirmed by probes or by what the status page said
        during the incident (final minutes only: the same for any batching), or detected by
        them in the first place (incidents.verdicts)."""
        if not inc.suspected_abuse or set(inc.detected_by) - {"reports"}:
            return True
        end = self.final_until if inc.ended_min is None else min(inc.ended_min, self.final_until)
        official = self.evidence.official_during(inc.service, inc.started_min * 60.0, end * 60.0)
        return confirmed(inc.probe_confirmed, official)

    # ================================================================ outputs
    def drain_transitions(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def drain_incidents(self) -> list[dict[str, Any]]:
        """Docs of incidents that changed since the last drain (with provisional counts)."""
        out = self._finished
        self._finished = []
        for iid in sorted(self._changed):
            inc = self.incidents.get(iid)
            if inc is not None:
                out.append(self.incident_doc(inc))
        self._changed.clear()
        return out

    def incident_doc(self, inc: Incident) -> dict[str, Any]:
        """The incident with the minutes not yet final counted in provisionally."""
        end = self.closed_until if inc.ended_min is None else min(inc.ended_min, self.closed_until)
        total, countries, problems = inc.total, Counter(inc.countries), Counter(inc.problems)
        for f in range(max(inc.acc_until, self.final_until), end):
            t, c, p = self._minute_breakdown(inc.service, f)
            total += t
            countries.update(c)
            problems.update(p)
        doc = inc.doc(total, countries, problems)
        # What the service's own status page says (latest), e.g. major since 14:02.
        doc["official_status"] = self.official_status(inc.service)
        return doc

    def drain_counts(self) -> CountRows:
        """Counted reports since the last drain, summed per (minute, service, country, problem)."""
        pend, self._pending = self._pending, []
        services = list(self.series.services)
        if not any(len(p[0]) for p in pend):
            e = np.zeros(0, np.int64)
            return CountRows(
                e, e.astype(np.int32), e.astype(np.int32), e.astype(np.int32), e,
                services, list(self._countries.values), list(self._problems.values),
            )  # fmt: skip
        minute, svc, cidx, pidx, count = (np.concatenate(col) for col in zip(*pend, strict=True))
        nc = max(len(self._countries.values), 1)
        npb = max(len(self._problems.values), 1)
        ns = max(len(services), 1)
        key = ((minute * ns + svc) * nc + cidx) * npb + pidx
        # Summed per key: one sort and a reduction (np.unique's inverse costs a second sort).
        # A stable sort: the rows come in time order, batch after batch, so the keys are
        # nearly sorted already (a merge sort takes their runs; quicksort does not).
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        summed = np.add.reduceat(count[order], starts).astype(np.int64)
        first = order[starts]  # a row of each key: its columns, not divided out of the key
        mi, sv, c, p = minute[first], svc[first], cidx[first], pidx[first]
        return CountRows(
            mi, sv.astype(np.int32), c.astype(np.int32), p.astype(np.int32), summed,
            services, list(self._countries.values), list(self._problems.values),
        )  # fmt: skip

    def ongoing(self) -> list[dict[str, Any]]:
        return [self.incident_doc(inc) for inc in self.open_by_service.values()]

    # ================================================================ reads
    # What engine, replay, worker and web read of the core: nothing reaches into its arrays.
    def live_doc(self, incident_id: str) -> dict[str, Any] | None:
        """The live doc of an incident still changing (None: finished or unknown)."""
        inc = self.incidents.get(incident_id)
        return None if inc is None else self.incident_doc(inc)

    @property
    def open_count(self) -> int:
        """Incidents open now."""
        return len(self.open_by_service)

    @property
    def held_count(self) -> int:
        """Reports held ahead of the stream's time (pipeline.clock)."""
        return len(self.clock.held)

    def cap_time(self, t: float) -> None:
        """The stream's time may not pass `t` (the server's clock plus the allowed skew)."""
        self.clock.cap = t

    def typical(self, service: str, m0: int, m1: int) -> NDArray[np.float64]:
        """The typical reports per minute of `service` over [m0, m1) (the status page's
        band; nan when not learned)."""
        s = self.series
        si = s.service_index.get(service)
        if si is None or m1 <= m0 or int(s.nobs[s.total_of[si]]) == 0:
            return np.full(max(m1 - m0, 0), np.nan)
        return self.baseline.curve(s, s.total_of[si], np.arange(m0, m1))

    def recent_counts(self, service: str, m0: int, m1: int) -> tuple[int, NDArray[np.float64]]:
        """Reports per minute of `service` over the minutes of [m0, m1) still held (the
        ring): (first minute held, counts of [first, m1)); minutes not yet reached are 0."""
        s = self.series
        first = max(m0, self.closed_until - s.ring + 1)
        si = s.service_index.get(service)
        if si is None or m1 <= m0:
            return first, np.zeros(max(m1 - first, 0))
        minutes = np.arange(first, m1)
        valid = minutes <= self.closed_until
        counts = np.where(valid, s.ring_count[minutes % s.ring, s.total_of[si]], 0.0)
        return first, counts.astype(np.float64)

    def breakdown(self, service: str, span: int) -> tuple[dict[str, int], dict[str, int]]:
        """Reports of `service` by country and by problem over the last `span` minutes held
        (at most the ring), the current minute included."""
        countries: dict[str, int] = {}
        problems: dict[str, int] = {}
        s = self.series
        si = s.service_index.get(service)
        if si is None:
            return countries, problems
        last = self.closed_until  # the current minute: already counting
        first = max(last - span + 1, last - s.ring + 1)
        rows = np.arange(first, last + 1) % s.ring
        for i in s.service_series[si]:
            key = s.keys[i]
            if key.kind == "total":
                continue
            n = int(s.ring_count[rows, i].sum())
            if n > 0:
                (countries if key.kind == "country" else problems)[key.key] = n
        return countries, problems


def _view(inc: Incident) -> IncidentView:
    """The incident as explanations see it: its final minutes only (cheap, and what the
    evidence rests on too)."""
    return IncidentView(
        id=inc.id,
        service=inc.service,
        start=inc.started_min * 60.0,
        end=None if inc.ended_min is None else inc.ended_min * 60.0,
        total=round(inc.total),
        countries=tuple((c, round(n)) for c, n in sorted(inc.countries.items()) if n >= 0.5),
    )


def _summary(causes: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """What a `cause` transition records a change of: kinds and confidences (to 0.1)."""
    return [(c["kind"], round(c["confidence"], 1)) for c in causes]


def _cluster_key(cluster: dict[str, Any] | None) -> tuple[str, tuple[str, ...]] | None:
    return None if cluster is None else (cluster["id"], tuple(cluster["services"]))


# ==================================================================== persistence
_STATE_VERSION = 5  # 2: weekday level factors; 3: series birth minute; 4: evidence, causes;
# 5: report sources (a version 4 state loads with empty sources)


def dump_state(p: Pipeline) -> bytes:
    """Everything the pipeline needs to carry on after a restart, as bytes."""
    arrays, keys = p.series.dump()
    meta = {
        "version": _STATE_VERSION,
        "ring": p.series.ring,
        "keys": keys,
        "watermark": p.watermark,
        "closed_until": p.closed_until,
        "final_until": p.final_until,
        "learn_until": p.learn_until,
        "stats": p.stats.as_dict(),
        "dedup": p.dedup.dump(),
        "last_ended": p.last_ended,
        "incidents": [inc.state_dict() for inc in p.incidents.values()],
        "open": sorted(inc.id for inc in p.open_by_service.values()),
        "countries": p._countries.values,
        "problems": p._problems.values,
        "evidence": p.evidence.dump(),
        "sources": p.sources.dump(),
        "recent": p._recent,
        "clock": p.clock.dump(),
        "verdicts": p.verdicts.dump(),
        "maintenance": [list(w) for w in p.maintenance],
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    blob = buf.getvalue()
    head = msgspec.msgpack.encode(meta)
    return len(head).to_bytes(8, "little") + head + blob


def load_state(
    data: bytes, settings: PipelineSettings | None = None, *, catalog: Catalog | None = None
) -> Pipeline:
    p = Pipeline(settings, catalog=catalog)
    n = int.from_bytes(data[:8], "little")
    meta = msgspec.msgpack.decode(data[8 : 8 + n])
    if meta.get("version") not in (4, _STATE_VERSION):
        raise StoreError(f"pipeline state version {meta.get('version')!r} is not supported")
    with np.load(io.BytesIO(data[8 + n :])) as z:
        arrays = {k: z[k] for k in z.files}
    p.series = Series.load(meta["ring"], arrays, meta["keys"])
    p.watermark = meta["watermark"]
    p.closed_until = meta["closed_until"]
    p.final_until = meta["final_until"]
    p.learn_until = meta["learn_until"]
    if p.series.ring != p.settings.ring_minutes:  # saved by a replay, say (`Series.set_ring`)
        wm = p.watermark
        p.series.set_ring(p.settings.ring_minutes, max(p.closed_until, int((wm or 0) // 60)))
    p.stats = Stats(**meta["stats"])
    p.dedup.load(meta["dedup"])
    p.last_ended = dict(meta["last_ended"])
    for v in meta["countries"]:
        p._countries(v)
    for v in meta["problems"]:
        p._problems(v)
    p.evidence.load(meta["evidence"])
    if "sources" in meta:
        p.sources.load(meta["sources"])
    p._recent = dict(meta["recent"])
    if "clock" in meta:
        p.clock.load(meta["clock"])
    elif p.watermark is not None:  # a state from before the stream clock
        p.clock.wm = p.watermark
    if "verdicts" in meta:
        p.verdicts.load(meta["verdicts"])
    p.set_maintenance([tuple(w) for w in meta.get("maintenance", ())])
    for d in meta["incidents"]:
        inc = Incident.from_state(d)
        p.incidents[inc.id] = inc
        if inc.id in meta["open"]:
            p.open_by_service[inc.service] = inc
    return p

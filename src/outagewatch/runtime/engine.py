"""The live engine: the pure pipeline core driven by the wall clock and fed by the bus.

An adapter around the core, used by `serve` and `demo`. It restores the pipeline from the
store, folds in the journal batches the saved state has not seen (crash recovery), ingests
accepted batches, advances the pipeline to the time it is told, and builds commits. The
in-process bus's single writer thread is the only caller that changes it; readers (the
HTTP handlers) take `lock` for the moment they look.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.catalog import Catalog, Service
from outagewatch.events import Decoded, EventDecoder, OtherEvent, iso
from outagewatch.incidents.lifecycle import Transition
from outagewatch.incidents.verdicts import ServiceVerdict, service_verdict
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.settings import PipelineSettings
from outagewatch.store.base import Commit, Store

FUTURE_SKEW_S = 3600.0  # a live event may be this far ahead of the server's clock (default)
READ_WAIT_S = 0.05  # a reader waits at most this long for the writer, then uses what it has


def skew_means(skew_s: float) -> str:
    """What the latest accepted time stands for, in a rejection."""
    return f"{skew_s:g} s ahead of the server's clock, --clock-skew-s"


@dataclass(frozen=True)
class Committed:
    """What one commit changed, for alerts, the live pages and metrics."""

    transitions: list[Transition]
    incidents: list[dict[str, Any]]
    seconds: float


class Engine:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        settings: PipelineSettings,
        *,
        now: float,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.lock = threading.RLock()
        state = store.load_state()
        self.pipeline = (
            Pipeline(settings, catalog=catalog)
            if state is None
            else load_state(state, settings, catalog=catalog)
        )
        # The server's clock bounds the time: events at most `skew_s` ahead of it are taken
        # (a server whose clock is behind still takes its clients' true times), and a time
        # that ran further ahead (a server restarted after its clock was wrong) goes back.
        self.skew_s = float(settings.clock_skew_s)
        self.decoder = EventDecoder(
            catalog, max_ts=now + self.skew_s, max_ts_means=skew_means(self.skew_s)
        )
        self.pipeline.cap_time(now + self.skew_s)
        if (self.pipeline.watermark or 0.0) > now + self.skew_s:
            self.pipeline.rewind(now)
        self.journal_seq = store.journal_seq()
        self._others: list[OtherEvent] = []
        self._dirty = False
        self.uncommitted = 0  # events ingested since the last commit
        self._committed_until = self.pipeline.closed_until  # minutes closed at the last commit
        self.tick_seconds = 0.0
        self.recovered = 0
        self._last_ongoing: dict[str, dict[str, Any]] = {}
        self._busy_at = -math.inf  # when a reader last found the writer busy (monotonic)
        self._last_breakdown: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        self._last_verdicts: dict[str, ServiceVerdict] = {}
        for seq, batch in store.journal_after(self.journal_seq):
            self.ingest(seq, batch.split(b"\n"))
            self.recovered += 1

    # ---------------------------------------------------------------- writer side
    def ingest(self, seq: int, lines: Sequence[bytes], now: float | None = None) -> Decoded:
        """Count one journaled batch (already checked when it was accepted). `now`: the
        server's clock when it is counted (None while recovering the journal at start-up).
        The live time is the server's clock: reports it has reached are counted at once,
        not held until the stream of reports reaches them (pipeline/clock.py); the minutes
        are still closed by the ticks (`advance`)."""
        with self.lock:
            d = self.decoder.decode(list(lines), 1)
            if d.others:
                # Others first, as `replay` does: they wait for their minute to become
                # final, which the reports' ticks decide.
                self._others.extend(d.others)
                self.pipeline.ingest_others(d.others)
            self.pipeline.ingest(d.reports)
            if now is not None:
                self.pipeline.release_until(now)
            self.journal_seq = max(self.journal_seq, seq)
            self.uncommitted += len(lines)
            self._dirty = True
        return d

    def advance(self, now: float) -> bool:
        """Close the minutes that ended by `now`. True when a minute closed since the last
        commit — here or while ingesting, as events move the clock too."""
        with self.lock:
            self.decoder.max_ts = max(self.decoder.max_ts, now + self.skew_s)
            self.pipeline.cap_time(now + self.skew_s)
            before = self.pipeline.closed_until
            t0 = time.perf_counter()
            self.pipeline.advance_to(now)
            if self.pipeline.closed_until > before:
                self.tick_seconds += time.perf_counter() - t0
                self._dirty = True
            return self.pipeline.closed_until > self._committed_until

    def set_catalog(self, catalog: Catalog) -> None:
        """A changed catalog (PUT/DELETE /api/v1/services): decode and explain with it from
        the next batch on; the series of removed services stay (history is kept)."""
        with self.lock:
            self.catalog = catalog
            self.pipeline.set_catalog(catalog)
            self.decoder = EventDecoder(catalog, max_ts=self.decoder.max_ts)

    def set_maintenance(self, windows: Sequence[tuple[str, float, float]]) -> None:
        """Hand the pipeline the maintenance windows (service or group, start, end)."""
        with self.lock:
            self.pipeline.set_maintenance(windows)

    @property
    def ticks(self) -> int:
        """Minutes closed and scored (a fresh pipeline's first jump to now is none)."""
        return self.pipeline.stats.ticks

    def commit(self) -> Committed | None:
        """Write everything since the last commit in one transaction (None: nothing new)."""
        t0 = time.perf_counter()
        with self.lock:
            if not self._dirty:
                return None
            p = self.pipeline
            transitions = p.drain_transitions()
            docs = p.drain_incidents()
            counts = p.drain_counts()
            others, self._others = self._others, []
            journal_seq = self.journal_seq
            self._dirty = False
            self.uncommitted = 0
            self._committed_until = p.closed_until
        # The state is copied without the lock: only the caller (the writer) changes the
        # pipeline, and it is busy here, while readers (pages, /healthz) only read. Holding
        # the lock through the copy stalled every reader for its whole length (~0.4 s).
        c = Commit(
            state=dump_state(p),
            incidents=docs,
            transitions=transitions,
            counts=counts,
            others=others,
            journal_seq=journal_seq,
        )
        self.store.commit(c)
        return Committed(transitions, list(docs), time.perf_counter() - t0)

    # ---------------------------------------------------------------- reader side
    # Readers run on the event loop: they wait at most READ_WAIT_S for the writer (which
    # holds the lock while it ingests a group) and then answer from what they saw last, so
    # pages and /healthz keep answering while ingest is saturated.
    # One wait per busy spell, not per read: a page makes several reads, and once one of
    # them found the writer busy the others within READ_WAIT_S only try the lock, so a
    # page waits about READ_WAIT_S in all, however many reads it makes.
    @contextlib.contextmanager
    def _reading(self) -> Iterator[bool]:
        recently_busy = time.monotonic() - self._busy_at < READ_WAIT_S
        got = self.lock.acquire(timeout=0 if recently_busy else READ_WAIT_S)
        if not got:
            self._busy_at = time.monotonic()
        try:
            yield got
        finally:
            if got:
                self.lock.release()

    def ongoing(self) -> dict[str, dict[str, Any]]:
        """The live doc of every ongoing incident, by service (at most READ_WAIT_S old
        news while the writer is busy)."""
        with self._reading() as got:
            if got:
                self._last_ongoing = {d["service"]: d for d in self.pipeline.ongoing()}
        return dict(self._last_ongoing)

    def live_doc(self, incident_id: str) -> dict[str, Any] | None:
        with self._reading() as got:
            if got:
                return self.pipeline.live_doc(incident_id)
        return next((d for d in self._last_ongoing.values() if d["id"] == incident_id), None)

    def breakdown(self, service: str, span: int) -> tuple[dict[str, int], dict[str, int]]:
        """Reports by country and by problem over the last `span` minutes the pipeline still
        holds (at most its ring); while the writer is busy, what this service showed last."""
        with self._reading() as got:
            if not got:
                return self._last_breakdown.get(service, ({}, {}))
            countries, problems = self.pipeline.breakdown(service, span)
            self._last_breakdown[service] = (countries, problems)
            return countries, problems

    def recent(
        self, service: str, m0: int, m1: int
    ) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
        """Counts and typical level of `service`'s minutes [m0, m1) the pipeline still holds.

        Returns (first minute held, counts, baseline) where counts cover
        [max(m0, first), m1) and baseline covers all of [m0, m1) (nan when unknown).
        """
        with self._reading() as got:
            if not got:  # the writer is busy: the stored counts will do for now
                return m1, np.zeros(0), np.full(max(m1 - m0, 0), np.nan)
            first, counts = self.pipeline.recent_counts(service, m0, m1)
            return first, counts, self.pipeline.typical(service, m0, m1)

    def verdicts(self, services: Sequence[Service], now: float) -> dict[str, ServiceVerdict]:
        """Partial probe failures, silence and the probe sentence of each service
        (incidents.verdicts); while the writer is busy, what was seen last."""
        with self._reading() as got:
            if got:
                for svc in services:
                    self._last_verdicts[svc.id] = service_verdict(self.pipeline, svc, now)
        return {svc.id: v for svc in services if (v := self._last_verdicts.get(svc.id))}

    def official_status(self, service: str) -> dict[str, Any] | None:
        with self._reading() as got:
            return self.pipeline.official_status(service) if got else None

    def clock_label(self) -> str:
        wm = self.pipeline.watermark  # one attribute read: no lock needed
        return "-" if wm is None else iso(wm)

"""`replay`: feed NDJSON files through the pipeline in event time, as fast as it can.

An adapter around the pure core: it reads files, decodes, hands batches to the pipeline and
commits what the pipeline produced to the store. It resumes from the stored state, so two
calls on two halves of a file give the same incidents as one call on the whole; and it keeps
a ledger of how far it committed each input (replay_inputs), so the same file again, or a run
resumed after an interruption, counts each line once. SIGTERM or Ctrl-C stops it after the
batch it is in: what was fed is committed and the summary printed.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from outagewatch.catalog import Catalog
from outagewatch.errors import InputError
from outagewatch.events import Decoded, EventDecoder, OtherEvent, Rejection
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.runtime.replay_inputs import (
    Batch,
    InputReader,
    Ledger,
    StopFlag,
    StopRequestedError,
)
from outagewatch.settings import PipelineSettings
from outagewatch.store import Commit, Store
from outagewatch.store.base import InputMark
from outagewatch.store.rollup import Retention

COMMIT_LINES = 1_000_000  # commit at least this often


@dataclass
class Summary:
    files: int = 0
    lines: int = 0
    accepted: Counter[str] = field(default_factory=Counter)  # by event type
    rejected: list[tuple[str, Rejection]] = field(default_factory=list)
    rejected_count: Counter[str] = field(default_factory=Counter)
    counted: int = 0
    duplicates: int = 0
    late: int = 0
    opened: int = 0
    resolved: int = 0
    ongoing: int = 0
    seconds: float = 0.0
    skipped: int = 0  # lines already replayed before (the ledger), not counted again
    held: int = 0  # reports ahead of the stream's time at the end (counted once it gets there)
    interrupted: str | None = None  # the signal that stopped it
    newest_hour: int | None = None  # the newest hour of the counts committed (epoch hours)

    MAX_LISTED = 20

    def reject(self, name: str, r: Rejection) -> None:
        self.rejected_count[r.reason] += 1
        if len(self.rejected) < self.MAX_LISTED:
            self.rejected.append((name, r))

    def lines_text(self) -> list[str]:
        n_acc = sum(self.accepted.values())
        n_rej = sum(self.rejected_count.values())
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"replayed {self.files} file(s), {self.lines:,} lines in {self.seconds:.2f} s "
            f"({rate:,.0f} lines/s)",
            f"accepted: {n_acc:,} ("
            + ", ".join(
                f"{k} {self.accepted[k]:,}" for k in ("report", "probe", "status", "metric")
            )
            + ")",
            f"reports counted after dedup: {self.counted:,}; duplicates: {self.duplicates:,}; "
            f"late: {self.late:,}",
            f"skipped, counted by an earlier run: {self.skipped:,} lines",
            f"rejected: {n_rej:,}",
        ]
        for reason, n in sorted(self.rejected_count.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  {reason}: {n:,}")
        for name, r in self.rejected:
            out.append(f"  {name}:{r.line}: {r.reason}: {r.detail}")
        if n_rej > len(self.rejected):
            out.append(f"  ... and {n_rej - len(self.rejected):,} more")
        if self.held:
            out.append(
                f"held: {self.held:,} reports ahead of the stream's time (counted once the "
                "stream gets there)"
            )
        out.append(
            f"incidents: {self.opened} opened, {self.resolved} resolved, "
            f"{self.ongoing} ongoing at the end"
        )
        if self.interrupted:
            out.append(
                f"interrupted by {self.interrupted}: what was read is committed; the same "
                "command goes on from there"
            )
        return out


def open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return Path(name).open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _batches(reader: InputReader, name: str) -> Iterator[Batch]:
    try:
        yield from reader.batches()
    except OSError as exc:
        raise InputError(f"{name}: read failed: {exc.strerror or exc}") from None


REPLAY_RING_MINUTES = 512
"""The minutes a replay's pipeline holds (the server's 128, `PipelineSettings.ring_minutes`):
reports are counted a span of minutes at a time, a span being the ring less the minutes a
tick may look back (`Pipeline._ingest_spans`), and each span costs the same steps in
Python, so a longer ring takes the sparse benchmark's month in 120 spans, not 849. The
same counts, incidents and state; a state saved with it loads into the server's ring
(`Series.set_ring`)."""
REPLAY_RING_SERVICES = 2_000
"""A catalog of more services keeps the server's ring in a replay: the rings cost 8 bytes a
series and minute (~10 series a service: 80 MiB for 2,000 services at 512 minutes)."""


def replay_settings(settings: PipelineSettings, services: int) -> PipelineSettings:
    """The pipeline settings of a replay of a catalog of `services` services: the longer
    ring (`REPLAY_RING_MINUTES`) where the catalog is small enough."""
    if settings.ring_minutes < REPLAY_RING_MINUTES and services <= REPLAY_RING_SERVICES:
        return replace(settings, ring_minutes=REPLAY_RING_MINUTES)
    return settings


class Replayer:
    """Owns a pipeline restored from the store, and commits its output."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        settings: PipelineSettings,
        *,
        now: Callable[[], float] = time.time,
        state_key: str = "pipeline",
        fold: Retention | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.state_key = state_key  # which stored pipeline state (a worker: its partition)
        # `replay`: hours compaction would take at once go into day blocks as they are
        # committed (`Commit.fold`); a live worker's commits stay raw.
        self.fold = fold
        settings = replay_settings(settings, len(catalog.services))
        state = store.load_state(state_key)
        self.pipeline = (
            Pipeline(settings, catalog=catalog)
            if state is None
            else load_state(state, settings, catalog=catalog)
        )
        # An event from more than a day in the future is a mistake, not a clock skew.
        self.decoder = EventDecoder(
            catalog, max_ts=now() + 86_400, max_ts_means="a day ahead of this machine's clock"
        )
        self._others: list[OtherEvent] = []
        self._since_commit = 0
        self.ledger = Ledger(store.replay_inputs(state_key))
        self._reading: tuple[InputMark, InputReader, str] | None = None
        self._moved: dict[str, InputMark] = {}  # ledger marks to commit

    def feed(
        self,
        f: BinaryIO,
        name: str,
        summary: Summary,
        progress: Callable[[int], None] | None,
        stop: StopFlag | None = None,
    ) -> bool:
        """Feed the part of `f` the ledger has not seen; False when `stop` cut it short."""
        stop = stop or StopFlag()
        reader, mark = self.ledger.open(f, name, stop)
        summary.skipped += mark.lines
        self._reading = (mark, reader, name)
        try:
            for b in _batches(reader, name):
                for r in b.rejected:  # over-long lines (left empty in b.lines)
                    summary.reject(name, r)
                d = self.decoder.decode(b.lines, b.first_line, b.joined)
                self.ingest(d, name, summary)
                if self._since_commit >= COMMIT_LINES:
                    self.commit(summary)
                if progress is not None:
                    progress(b.nbytes)
                if stop.requested:
                    return False
        except StopRequestedError:
            return False
        finally:
            self._note_read()
            self._reading = None
        return True

    def _note_read(self) -> None:
        """The ledger mark of the input being read moves to what was fed of it."""
        if self._reading is not None:
            mark, reader, name = self._reading
            new = self.ledger.record(mark, reader, name)
            if new is not mark:
                self._moved[new.id] = new
                self._reading = (new, reader, name)

    def ingest(self, d: Decoded, name: str, summary: Summary) -> None:
        """Count one decoded batch of `name` (its rejected lines go to the summary)."""
        summary.lines += d.lines
        for r in d.rejected:
            summary.reject(name, r)
        summary.accepted["report"] += len(d.reports)
        for o in d.others:
            summary.accepted[o.type] += 1
        self._others.extend(d.others)
        # Others first: they wait for their minute to become final, which the reports'
        # ticks decide, so a batch gives what event-by-event feeding gives.
        self.pipeline.ingest_others(d.others)
        for r in self.pipeline.ingest(d.reports):  # too far ahead of the stream
            summary.accepted["report"] -= 1
            summary.reject(name, r)
        self._since_commit += d.lines

    def take_commit(self, summary: Summary) -> Commit:
        """Everything the pipeline produced since the last one, for `Store.commit`."""
        p = self.pipeline
        transitions = p.drain_transitions()
        for tr in transitions:
            if tr.action == "opened":
                summary.opened += 1
            elif tr.action == "resolved":
                summary.resolved += 1
        counts = p.drain_counts()
        if len(counts):
            newest = int(counts.minute.max()) // 60
            summary.newest_hour = max(newest, summary.newest_hour or newest)
        c = Commit(
            state=dump_state(p),
            incidents=p.drain_incidents(),
            transitions=transitions,
            counts=counts,
            others=self._others,
            state_key=self.state_key,
            inputs=self._take_marks(),
            fold=self.fold,
        )
        self._others = []
        self._since_commit = 0
        return c

    def _take_marks(self) -> list[InputMark]:
        self._note_read()
        out = list(self._moved.values())
        self._moved.clear()
        return out

    def commit(self, summary: Summary) -> None:
        self.store.commit(self.take_commit(summary))


@contextlib.contextmanager
def _stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """SIGTERM and SIGINT (Ctrl-C) ask replay to stop after its batch (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        stop.requested = signal.Signals(signum).name
        if stop.in_read:  # blocked reading (a pipe): nothing of this batch was handed out
            raise StopRequestedError

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def replay(
    store: Store,
    catalog: Catalog,
    settings: PipelineSettings,
    names: list[str],
    *,
    show_progress: bool = False,
    fold: Retention | None = None,
) -> Summary:
    """Replay the named files (`-` is stdin) in order; returns the summary. With `fold`
    (the store's retention), the hours before each commit's newest are written as day
    blocks (`Commit.fold`), as compaction after the replay would leave them."""
    summary = Summary()
    t0 = time.perf_counter()
    # Replay makes millions of short-lived objects and no reference cycles worth collecting
    # mid-run: the cyclic collector only costs time here (about 4%).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    stop = StopFlag()
    try:
        with _stop_on_signals(stop):
            rp = Replayer(store, catalog, settings, fold=fold)
            return _replay(rp, names, show_progress, summary, t0, stop)
    finally:
        if gc_was_enabled:
            gc.enable()


def _replay(
    rp: Replayer,
    names: list[str],
    show_progress: bool,
    summary: Summary,
    t0: float,
    stop: StopFlag,
) -> Summary:
    stats0 = rp.pipeline.stats.as_dict()
    for i, name in enumerate(names):
        f = open_input(name)
        bar = None
        if show_progress and name != "-":
            from tqdm import tqdm

            size = Path(name).stat().st_size
            bar = tqdm(total=size, unit="B", unit_scale=True, desc=name, file=sys.stderr)
        try:
            done = rp.feed(f, name, summary, None if bar is None else bar.update, stop)
        finally:
            if bar is not None:
                bar.close()
            if f is not sys.stdin.buffer:
                f.close()
        summary.files += 1
        if not done or stop.requested:
            summary.interrupted = stop.requested or "a signal"
            break
        if i < len(names) - 1:
            rp.commit(summary)  # each finished input is committed with its ledger mark
    rp.commit(summary)
    stats = rp.pipeline.stats.as_dict()
    summary.counted = stats["counted"] - stats0["counted"]
    summary.duplicates = stats["duplicates"] - stats0["duplicates"]
    summary.late = stats["late"] - stats0["late"]
    summary.ongoing = rp.pipeline.open_count
    summary.held = rp.pipeline.held_count
    summary.seconds = time.perf_counter() - t0
    return summary

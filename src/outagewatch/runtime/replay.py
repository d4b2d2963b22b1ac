"""`replay`: feed NDJSON files through the pipeline in event time, as fast as it can.

An adapter around the pure core: it reads files, decodes, hands batches to the pipeline and
commits what the pipeline produced to the store. It resumes from the stored state, so two
calls on two halves of a file give the same incidents as one call on the whole.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from outagewatch.catalog import Catalog
from outagewatch.errors import InputError
from outagewatch.events import Decoded, EventDecoder, OtherEvent, Rejection
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.settings import PipelineSettings
from outagewatch.store import Commit, Store

BATCH_BYTES = 4 << 20  # read about this much per batch
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
            f"rejected: {n_rej:,}",
        ]
        for reason, n in sorted(self.rejected_count.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  {reason}: {n:,}")
        for name, r in self.rejected:
            out.append(f"  {name}:{r.line}: {r.reason}: {r.detail}")
        if n_rej > len(self.rejected):
            out.append(f"  ... and {n_rej - len(self.rejected):,} more")
        out.append(
            f"incidents: {self.opened} opened, {self.resolved} resolved, "
            f"{self.ongoing} ongoing at the end"
        )
        return out


def open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return Path(name).open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _batches(f: BinaryIO, name: str) -> Iterator[list[bytes]]:
    try:
        while True:
            lines = f.readlines(BATCH_BYTES)
            if not lines:
                return
            yield lines
    except OSError as exc:
        raise InputError(f"{name}: read failed: {exc.strerror or exc}") from None


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
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.state_key = state_key  # which stored pipeline state (a worker: its partition)
        state = store.load_state(state_key)
        self.pipeline = (
            Pipeline(settings, catalog=catalog)
            if state is None
            else load_state(state, settings, catalog=catalog)
        )
        # An event from more than a day in the future is a mistake, not a clock skew.
        self.decoder = EventDecoder(catalog, max_ts=now() + 86_400)
        self._others: list[OtherEvent] = []
        self._since_commit = 0

    def feed(
        self, f: BinaryIO, name: str, summary: Summary, progress: Callable[[int], None] | None
    ) -> None:
        line_no = 1
        for lines in _batches(f, name):
            d = self.decoder.decode(lines, line_no)
            line_no += len(lines)
            self.ingest(d, name, summary)
            if self._since_commit >= COMMIT_LINES:
                self.commit(summary)
            if progress is not None:
                progress(sum(len(x) for x in lines))

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
        self.pipeline.ingest(d.reports)
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
        c = Commit(
            state=dump_state(p),
            incidents=p.drain_incidents(),
            transitions=transitions,
            counts=p.drain_counts(),
            others=self._others,
            state_key=self.state_key,
        )
        self._others = []
        self._since_commit = 0
        return c

    def commit(self, summary: Summary) -> None:
        self.store.commit(self.take_commit(summary))


def replay(
    store: Store,
    catalog: Catalog,
    settings: PipelineSettings,
    names: list[str],
    *,
    show_progress: bool = False,
) -> Summary:
    """Replay the named files (`-` is stdin) in order; returns the summary."""
    summary = Summary()
    t0 = time.perf_counter()
    # Replay makes millions of short-lived objects and no reference cycles worth collecting
    # mid-run: the cyclic collector only costs time here (about 4%).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(store, catalog, settings, names, show_progress, summary, t0)
    finally:
        if gc_was_enabled:
            gc.enable()


def _replay(
    store: Store,
    catalog: Catalog,
    settings: PipelineSettings,
    names: list[str],
    show_progress: bool,
    summary: Summary,
    t0: float,
) -> Summary:
    rp = Replayer(store, catalog, settings)
    stats0 = rp.pipeline.stats.as_dict()
    for name in names:
        f = open_input(name)
        bar = None
        if show_progress and name != "-":
            from tqdm import tqdm

            size = Path(name).stat().st_size
            bar = tqdm(total=size, unit="B", unit_scale=True, desc=name, file=sys.stderr)
        try:
            rp.feed(f, name, summary, None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
            if f is not sys.stdin.buffer:
                f.close()
        summary.files += 1
    rp.commit(summary)
    stats = rp.pipeline.stats.as_dict()
    summary.counted = stats["counted"] - stats0["counted"]
    summary.duplicates = stats["duplicates"] - stats0["duplicates"]
    summary.late = stats["late"] - stats0["late"]
    summary.ongoing = len(rp.pipeline.open_by_service)
    summary.seconds = time.perf_counter() - t0
    return summary

"""Rollups and retention: what `compact` does to stored minute counts, and when.

Counts arrive as raw per-hour chunks (`minute_counts`, written by every pipeline commit).
Compaction folds each complete hour into its service's block for that UTC day (`count_days`,
encoded by `history.codec`), and coarsens day blocks as they age:

- minute buckets for the last `minute_days` days (default 30),
- 15-minute buckets until `rollup_days` (default 395, about 13 months),
- hourly buckets after that, kept forever.

Every resolution keeps the per-country and per-problem breakdown. Compaction works in small
steps, each one short transaction of at most `budget` rows (so it never holds the writer
for long: ingest commits go between steps), and is idempotent: a late report for a day
already compacted lands in a new raw chunk that the next step folds in.

Detection never reads stored counts (the pipeline keeps its own state), so nothing detected
changes; charts of old minutes show the kept resolution spread evenly over its minutes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from outagewatch.store import codec
from outagewatch.store.base import CHUNK_DTYPE, unpack

DAY_S = 86_400
HOUR_S = 3_600

# (service, hour, packed chunk bytes) of a raw row; (service, day, res, total, data) of a block.
RawRow = tuple[str, int, bytes]
DayRow = tuple[str, int, int, int, bytes]


@dataclass(frozen=True)
class Retention:
    minute_days: int = 30
    rollup_days: int = 395

    def __post_init__(self) -> None:
        if not 1 <= self.minute_days <= self.rollup_days:
            raise ValueError("retention: expected 1 <= minute_days <= rollup_days")

    def resolution(self, day: int, today: int) -> int:
        """Minutes per bucket a block of `day` is kept at when it is `today`."""
        age = today - day
        if age < self.minute_days:
            return 1
        if age < self.rollup_days:
            return 15
        return 60

    def raw_limit(self, now: float) -> int:
        """Raw hours before this one are compacted: the current and the previous hour stay
        raw (they are still being written)."""
        return int(now // HOUR_S) - 1

    def coarse_limits(self, now: float) -> tuple[int, int]:
        """(days before which minute blocks become 15-minute ones, days before which
        15-minute blocks become hourly ones)."""
        today = int(now // DAY_S)
        return today - self.minute_days + 1, today - self.rollup_days + 1


def raw_rows_of_day(raw: Sequence[tuple[int, bytes]]) -> NDArray[np.void]:
    """The minute rows (minute of the day) of raw hour chunks of one day, summed."""
    chunks = [unpack(data) for _, data in raw]
    rows = np.empty(sum(len(c) for c in chunks), CHUNK_DTYPE)
    # Filled in place (np.concatenate of structured arrays re-derives their common dtype
    # field by field on every call: most of this function's time, for a day's 24 chunks).
    at = 0
    for (hour, _), chunk in zip(raw, chunks, strict=True):
        part = rows[at : at + len(chunk)]
        part[...] = chunk
        part["m"] += (hour % 24) * 60
        at += len(chunk)
    return codec.summed(rows)


def fold(
    raw: Sequence[RawRow],
    blocks: Sequence[DayRow],
    now: float,
    retention: Retention,
) -> list[DayRow]:
    """The day blocks to write: `blocks` (existing ones, and ones due for coarsening) with
    the `raw` hours folded in, each at the resolution its age asks for (never finer than
    it already is)."""
    today = int(now // DAY_S)
    by_day: dict[tuple[str, int], list[tuple[int, bytes]]] = defaultdict(list)
    for service, hour, data in raw:
        by_day[(service, hour // 24)].append((hour, data))
    existing = {(s, d): (res, data) for s, d, res, _, data in blocks}
    out: list[DayRow] = []
    for key in sorted(set(by_day) | set(existing)):
        service, day = key
        want = retention.resolution(day, today)
        rows, res = codec.empty(), 1
        if key in existing:
            res, data = existing[key]
            rows = codec.decode(data)
        want = max(want, res)
        rows = codec.coarsen(rows, res, want)
        if key in by_day:
            fresh = codec.coarsen(raw_rows_of_day(by_day[key]), 1, want)
            rows = codec.merge(rows, fresh)
        out.append((service, day, want, codec.total(rows), codec.encode(rows)))
    return out

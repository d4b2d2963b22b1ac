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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from outagewatch.store import codec
from outagewatch.store.base import CHUNK_DTYPE, code_tables

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import CountRows

DAY_S = 86_400
HOUR_S = 3_600
MINUTES_PER_DAY = 1_440

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


def _buckets(parts: Sequence[tuple[bytes, int, int]]) -> tuple[NDArray[np.void], NDArray[np.int64]]:
    """The packed rows of `parts` (packed rows, minute of the day of their `m` 0, minutes
    per bucket) in one array, `m` the bucket of the day each row falls in (not summed),
    and the index in `parts` of each row's part."""
    lengths = np.array([len(data) for data, _, _ in parts], np.int64)
    sizes, torn = np.divmod(lengths, CHUNK_DTYPE.itemsize)
    if torn.any():
        raise ValueError("packed count rows of a length that is not a whole number of rows")
    part = np.repeat(np.arange(len(parts)), sizes)
    # Joined into one writable buffer: one copy (np.concatenate of structured arrays also
    # re-derives their common dtype field by field on every call).
    rows = np.frombuffer(bytearray().join([data for data, _, _ in parts]), CHUNK_DTYPE)
    first = np.array([minute for _, minute, _ in parts], np.int64)[part]
    per = np.array([res for _, _, res in parts], np.int64)[part]
    rows["m"] = (rows["m"] + first) // per
    return rows, part


def raw_rows_of_day(raw: Sequence[tuple[int, bytes]]) -> NDArray[np.void]:
    """The minute rows (minute of the day) of raw hour chunks of one day, summed."""
    return codec.summed(_buckets([(data, hour % 24 * 60, 1) for hour, data in raw])[0])


@dataclass(frozen=True)
class Drained:
    """Rows drained from the pipeline, to fold as integer columns (`fold`): the rows, the
    distinct (service, day)s they fall in, and each row's index among those (computed once
    per commit: the store reads those days' blocks, then folds into them)."""

    counts: CountRows
    days: list[tuple[str, int]]
    day_of: NDArray[np.int64]

    @classmethod
    def of(cls, counts: CountRows) -> Drained:
        if len(counts) == 0:
            return cls(counts, [], np.zeros(0, np.int64))
        days = counts.minute // MINUTES_PER_DAY
        first = int(days.min())
        span = int(days.max()) - first + 1  # a commit's rows span a day or two: a table
        code = counts.service.astype(np.int64) * span + (days - first)
        size = len(counts.services) * span
        if size <= 4 * len(code) + (1 << 20):
            seen = np.bincount(code, minlength=size) > 0
            found, pair = np.flatnonzero(seen), (np.cumsum(seen) - 1)[code]
        else:  # rows spread over many days (a sparse file over years): sort them
            found, pair = np.unique(code, return_inverse=True)
        pairs = [(counts.services[c // span], first + c % span) for c in found.tolist()]
        return cls(counts, pairs, pair.ravel().astype(np.int64))


def fold(
    raw: Sequence[RawRow],
    blocks: Sequence[DayRow],
    now: float,
    retention: Retention,
    drained: Drained | None = None,
) -> list[DayRow]:
    """The day blocks to write: `blocks` (existing ones, and ones due for coarsening) with
    the `raw` hours and the `drained` rows (from the pipeline, not packed) folded in, each
    at the resolution its age asks for (never finer than it already is)."""
    today = int(now // DAY_S)
    existing = {(s, d): (res, data) for s, d, res, _, data in blocks}
    fresh = [] if drained is None else drained.days
    keys = sorted({(s, h // 24) for s, h, _ in raw} | set(existing) | set(fresh))
    index = {key: i for i, key in enumerate(keys)}
    want = [
        max(retention.resolution(day, today), existing.get((s, day), (1, b""))[0])
        for s, day in keys
    ]
    # Every row of the step in one array, at its block's resolution (the raw hours'
    # minutes, the existing blocks' buckets); encode_blocks sums and encodes them.
    raw_of = [index[(s, h // 24)] for s, h, _ in raw]
    old_of = [index[key] for key in existing]
    parts = [(data, h % 24 * 60, want[i]) for (_, h, data), i in zip(raw, raw_of, strict=True)]
    parts += [
        (codec.decode(data).tobytes(), 0, codec.factor(res, want[i]))
        for (res, data), i in zip(existing.values(), old_of, strict=True)
    ]
    rows, part = _buckets(parts)
    block = np.array(raw_of + old_of, np.int64)[part]
    if drained is None or len(drained.counts) == 0:
        encoded = codec.encode_blocks(rows, block, len(keys))
    else:
        counts = drained.counts
        of_pair = np.array([index[key] for key in fresh], np.int64)[drained.day_of]
        per = np.array(want, np.int64)[of_pair]
        countries, problems = code_tables(counts)
        coded = (
            counts.minute % MINUTES_PER_DAY // per,
            counts.count.astype(np.int64),
            counts.country.astype(np.int64),
            counts.problem.astype(np.int64),
            of_pair,
            countries,
            problems,
        )
        encoded = codec.encode_mixed(rows, block, coded, len(keys))
    return [
        (service, day, res, total, data)
        for (service, day), res, (total, data) in zip(keys, want, encoded, strict=True)
    ]

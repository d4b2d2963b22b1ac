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

import numpy as np
from numpy.typing import NDArray

from outagewatch.store import codec
from outagewatch.store.base import CHUNK_DTYPE

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
    existing = {(s, d): (res, data) for s, d, res, _, data in blocks}
    keys = sorted({(s, h // 24) for s, h, _ in raw} | set(existing))
    index = {key: i for i, key in enumerate(keys)}
    want = [
        max(retention.resolution(day, today), existing.get((s, day), (1, b""))[0])
        for s, day in keys
    ]
    # Every row of the step in one array, at its block's resolution (the raw hours'
    # minutes, the existing blocks' buckets); encode_blocks sums and encodes them.
    raw_of = [index[(s, h // 24)] for s, h, _ in raw]
    old_of = [index[key] for key in existing]
    rows, part = _buckets(
        [(data, h % 24 * 60, want[i]) for (_, h, data), i in zip(raw, raw_of, strict=True)]
        + [
            (codec.decode(data).tobytes(), 0, codec.factor(res, want[i]))
            for (res, data), i in zip(existing.values(), old_of, strict=True)
        ]
    )
    encoded = codec.encode_blocks(rows, np.array(raw_of + old_of, np.int64)[part], len(keys))
    return [
        (service, day, res, total, data)
        for (service, day), res, (total, data) in zip(keys, want, encoded, strict=True)
    ]

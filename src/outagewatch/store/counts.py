"""Reading stored counts across the raw hours and the compacted day blocks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from numpy.typing import NDArray

from outagewatch.store import codec
from outagewatch.store.base import Block, CountReader, unpack
from outagewatch.store.rollup import DAY_S, raw_rows_of_day


def add_day_blocks(out: NDArray[np.int64], m0: int, blocks: Iterable[Block]) -> None:
    """Add the blocks' counts to `out` (one cell per minute from minute `m0`); coarse
    buckets are spread evenly over their minutes."""
    m1 = m0 + len(out)
    for day, res, _, data in blocks:
        minute, n = codec.per_minute(codec.decode(data), res)
        minute = minute + day * codec.DAY_MIN
        sel = (minute >= m0) & (minute < m1)
        np.add.at(out, minute[sel] - m0, n[sel])


def daily_reports(store: CountReader, service: str, day0: int, day1: int) -> NDArray[np.int64]:
    """Counted reports per UTC day of [day0, day1)."""
    out = np.zeros(max(day1 - day0, 0), np.int64)
    if day1 <= day0:
        return out
    stored = store.stored_counts(service, day0 * 24, day1 * 24 - 1)
    for day, _, n, _ in stored.blocks:
        out[day - day0] += n
    for hour, data in stored.raw:
        out[hour // 24 - day0] += int(unpack(data)["n"].sum())
    return out


def iter_days(
    store: CountReader, service: str, day0: int, day1: int, span: int = 31
) -> Iterator[tuple[int, int, NDArray[np.void]]]:
    """(day, res, rows) of every stored day of [day0, day1), oldest first, raw hours merged
    into their day's block (at its resolution). Reads `span` days at a time."""
    for lo in range(day0, day1, span):
        hi = min(lo + span, day1)
        stored = store.stored_counts(service, lo * 24, hi * 24 - 1)
        blocks = {d: (res, data) for d, res, _, data in stored.blocks}
        raw: dict[int, list[tuple[int, bytes]]] = {}
        for hour, data in stored.raw:
            raw.setdefault(hour // 24, []).append((hour, data))
        for day in sorted(set(blocks) | set(raw)):
            res, rows = 1, codec.empty()
            if day in blocks:
                res, data = blocks[day]
                rows = codec.decode(data)
            if day in raw:
                rows = codec.merge(rows, codec.coarsen(raw_rows_of_day(raw[day]), 1, res))
            if len(rows):
                yield day, res, rows


def day_of(ts: float) -> int:
    return int(ts // DAY_S)

"""Deduplication of single reports: one person counts once per service per window."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_KEEP = 4  # counted times kept per person: enough to judge reports up to a few windows late


class Dedup:
    """Remembers, per (service, person), when that person's report last counted.

    A report counts when the person has no counted report for the service within
    `window_s` of its time (either side, so out-of-order arrivals are judged the same).
    Reports without a person and pre-aggregated counts (`count` > 1) always count.

    Memory is two generations of a window each: `rotate(now)` drops the older generation
    once the newer one is a window old, so forgetting costs nothing per report.
    """

    def __init__(self, window_s: float, lateness_s: float = 0.0) -> None:
        self.window_s = float(window_s)
        # A generation is kept until no on-time report can fall within a window of it.
        self.period_s = self.window_s + float(lateness_s) + 120.0
        # (service, person) -> the person's recent counted report times, oldest first
        # Keys are (service, person); person is never None in a stored key.
        self._cur: dict[tuple[str, str | None], tuple[float, ...]] = {}
        self._prev: dict[tuple[str, str | None], tuple[float, ...]] = {}
        self._cur_start: float | None = None

    def __len__(self) -> int:
        return len(self._cur) + len(self._prev)

    def filter(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float],
        counts: Sequence[int],
    ) -> list[bool]:
        """Which of these reports count, in order; remembers the ones that do."""
        if self.window_s <= 0:
            return [True] * len(ts)
        if counts.count(1) != len(counts):
            return self._filter_mixed(services, persons, ts, counts)
        cur = self._cur
        cur_get = cur.get
        prev_get = self._prev.get
        window = self.window_s
        keep: list[bool] = []
        append = keep.append
        for key, t in zip(zip(services, persons, strict=True), ts, strict=True):
            if key[1] is None:
                append(True)
                continue
            times = cur_get(key) or prev_get(key)
            if times is None:
                cur[key] = (t,)
                append(True)
            elif all(abs(t - x) >= window for x in times):
                cur[key] = tuple(sorted((*times, t)))[-_KEEP:]
                append(True)
            else:
                append(False)
        return keep

    def _filter_mixed(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float],
        counts: Sequence[int],
    ) -> list[bool]:
        """Pre-aggregated counts (`count` > 1) always count and are not remembered."""
        keep = [True] * len(ts)
        single = [i for i, c in enumerate(counts) if c == 1]
        sub = self.filter(
            [services[i] for i in single],
            [persons[i] for i in single],
            [ts[i] for i in single],
            [1] * len(single),
        )
        for i, k in zip(single, sub, strict=True):
            keep[i] = k
        return keep

    def rotate(self, now: float) -> None:
        """Forget reports that no on-time report can be a duplicate of (call as time passes)."""
        if self._cur_start is None:
            self._cur_start = now
        elif now - self._cur_start >= self.period_s:
            self._prev = self._cur
            self._cur = {}
            self._cur_start = now

    def dump(self) -> list[list[Any]]:
        start: list[list[Any]] = [] if self._cur_start is None else [[self._cur_start]]
        return [
            *start,
            *([s, p, list(t), 0] for (s, p), t in self._prev.items()),
            *([s, p, list(t), 1] for (s, p), t in self._cur.items()),
        ]

    def load(self, rows: Sequence[Sequence[object]]) -> None:
        self._cur, self._prev, self._cur_start = {}, {}, None
        for row in rows:
            if len(row) == 1:
                self._cur_start = float(row[0])  # type: ignore[arg-type]
                continue
            s, p, t, gen = row
            times = tuple(float(x) for x in t)  # type: ignore[attr-defined]
            (self._cur if gen else self._prev)[(str(s), str(p))] = times

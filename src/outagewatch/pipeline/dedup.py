"""Deduplication of single reports: one person counts once per service per window."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

SEP = "\x1f"  # between service id and person in a key (ids are [a-z0-9-])
_KEEP = 4  # counted times kept per person: enough to judge reports up to a few windows late
# People remembered per generation at most (~150 bytes each): a flood of fresh ids from many
# addresses must not grow memory without bound. Past it, the generation turns early, so
# under such a flood a person may count twice within the window; normal traffic (even a
# record outage, ~500 reports/s) stays below it.
MAX_KEYS = 1_500_000


def _times(value: float | tuple[float, ...]) -> list[float]:
    return list(value) if isinstance(value, tuple) else [value]


class Dedup:
    """Remembers, per (service, person), when that person's report last counted.

    A report counts when the person has no counted report for the service within
    `window_s` of its time (either side, so out-of-order arrivals are judged the same).
    Reports without a person (None or "") and pre-aggregated counts (`count` > 1) always
    count.

    Memory is two generations: `rotate(now)` drops the older one once the newer one is
    `period_s` (window + lateness + 2 minutes) old, so forgetting costs nothing per report;
    a generation that reaches `MAX_KEYS` people turns early (bounded memory).
    """

    def __init__(self, window_s: float, lateness_s: float = 0.0) -> None:
        self.window_s = float(window_s)
        # A generation is kept until no on-time report can fall within a window of it.
        self.period_s = self.window_s + float(lateness_s) + 120.0
        # "service<SEP>person" -> when the person's reports counted: one time (a float, the
        # common case) or the few latest times (a tuple).
        self._cur: dict[str, float | tuple[float, ...]] = {}
        self._prev: dict[str, float | tuple[float, ...]] = {}
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
        n = len(ts)
        if counts.count(1) != n or None in persons or "" in persons:
            # Reports without a person and pre-aggregated counts always count, unremembered.
            keep = [True] * n
            pairs = enumerate(zip(counts, persons, strict=True))
            single = [i for i, (c, p) in pairs if c == 1 and p]
            sub = self.filter(
                [services[i] for i in single],
                [persons[i] for i in single],
                [ts[i] for i in single],
                [1] * len(single),
            )
            for i, k in zip(single, sub, strict=True):
                keep[i] = k
            return keep
        cur = self._cur
        prev = self._prev
        # One string per (service, person): its hash is computed once and cached, where a
        # tuple's would be recomputed by every look-up below. Service ids never contain SEP.
        keys = [f"{s}{SEP}{p}" for s, p in zip(services, persons, strict=True)]
        # Most reports come from people not seen lately: they count, in one C-level update.
        # Only repeats (seen before, or more than once in this batch) need the ordered loop.
        twice = Counter(keys)
        if len(twice) == n:
            special = [i for i, k in enumerate(keys) if k in cur or k in prev]
        else:
            special = [i for i, k in enumerate(keys) if k in cur or k in prev or twice[k] > 1]
        if not special:
            cur.update(zip(keys, ts, strict=True))
            return [True] * n
        keep = [True] * n
        window = self.window_s
        fix: dict[str, float | tuple[float, ...]] = {}
        fix_get, cur_get, prev_get = fix.get, cur.get, prev.get
        for i in special:
            key = keys[i]
            t = ts[i]
            got = fix_get(key)
            if got is None:
                got = cur_get(key)
                if got is None:
                    got = prev_get(key)
                    if got is None:
                        fix[key] = t
                        continue
            if not isinstance(got, tuple):  # the common case: one counted time remembered
                if abs(t - got) >= window:
                    fix[key] = (got, t) if got < t else (t, got)
                else:
                    fix[key] = got
                    keep[i] = False
            elif all(abs(t - x) >= window for x in got):
                fix[key] = tuple(sorted((*got, t)))[-_KEEP:]
            else:
                fix[key] = got
                keep[i] = False
        cur.update(zip(keys, ts, strict=True))
        cur.update(fix)
        return keep

    def rotate(self, now: float) -> None:
        """Forget reports that no on-time report can be a duplicate of (call as time passes)."""
        if self._cur_start is None:
            self._cur_start = now
        elif now - self._cur_start >= self.period_s:
            self._prev = self._cur
            self._cur = {}
            self._cur_start = now

    def filter_stream(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float],
        counts: Sequence[int],
        watermark: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """`filter`, rotating generations as the watermark (latest time seen so far, per
        report) passes each rotation time: exact, and independent of how a stream is split."""
        n = len(ts)
        keep = np.empty(n, np.bool_)
        a = 0
        while a < n:
            if self._cur_start is None:
                self.rotate(float(watermark[a]))
            due = (self._cur_start or 0.0) + self.period_s
            b = int(np.searchsorted(watermark, due, side="left"))
            if b <= a:
                self.rotate(float(watermark[a]))
                continue
            b = min(b, n)
            keep[a:b] = self.filter(services[a:b], persons[a:b], ts[a:b], counts[a:b])
            if len(self._cur) > MAX_KEYS:
                self._prev = self._cur
                self._cur = {}
                self._cur_start = float(watermark[b - 1])
            a = b
        return keep

    def dump(self) -> list[list[Any]]:
        start: list[list[Any]] = [] if self._cur_start is None else [[self._cur_start]]
        return [
            *start,
            *([*k.split(SEP, 1), _times(t), 0] for k, t in self._prev.items()),
            *([*k.split(SEP, 1), _times(t), 1] for k, t in self._cur.items()),
        ]

    def load(self, rows: Sequence[Sequence[object]]) -> None:
        self._cur, self._prev, self._cur_start = {}, {}, None
        for row in rows:
            if len(row) == 1:
                self._cur_start = float(row[0])  # type: ignore[arg-type]
                continue
            s, p, t, gen = row
            times = tuple(float(x) for x in t)  # type: ignore[attr-defined]
            (self._cur if gen else self._prev)[f"{s}{SEP}{p}"] = times

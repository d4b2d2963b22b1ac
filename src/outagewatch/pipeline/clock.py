"""The event-time clock in front of the pipeline: a watermark one bad clock cannot move.

Pure: no I/O, no wall clock. Reports arrive with their event times; the *stream time* W is
the largest time that `agree` consecutive arrivals have all reached (the running maximum of
the minimum of every `agree` consecutive event times), bounded above by `cap` (the server's
wall clock plus the allowed skew; infinite in replay). So one line stamped ahead, or a few
lines a minute each stamped a few minutes ahead, cannot move W: only the stream as a whole
does. A real jump (a gap in the data) moves it as soon as `agree` arrivals in a row agree.

A report is handed to the pipeline once W has reached its time, in arrival order among
those released at the same arrival; until then it is *held* (kept, with the pipeline state).
A report more than `max_ahead_s` ahead of W when the `agree - 1` arrivals after it have been
seen (they could have confirmed a jump) is rejected with that reason.

Everything depends only on the sequence of arrivals, so any batching gives the same
released sequence, and the pipeline (batch-independent itself) the same results.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.events import Rejection, ReportColumns, iso

_COLUMNS = ("keys", "ts", "person", "ip", "count", "line", "kid")
_ARRAYS = ("ts", "count", "line", "kid")  # numpy columns; the others are lists
_KEPT = _COLUMNS[:-1]  # in a dump: `kid` indexes a decoder's table, which is not kept


def _take(rep: ReportColumns, idx: NDArray[np.int64]) -> ReportColumns:
    n = len(idx)
    if n == 0:
        return ReportColumns()
    a = int(idx[0])
    if int(idx[-1]) - a == n - 1 and bool((np.diff(idx) == 1).all()):
        # A run of consecutive reports (the common case: all but the last few, held).
        if n == len(rep):
            return rep
        out = ReportColumns(table=rep.table)
        for name in _COLUMNS:
            col = getattr(rep, name)
            if len(col) == len(rep):  # (not when e.g. there are no line numbers)
                setattr(out, name, col[a : a + n])
        return out
    pick = itemgetter(*idx.tolist())
    out = ReportColumns(table=rep.table)
    for name in _COLUMNS:
        col = getattr(rep, name)
        if len(col) != len(rep):  # e.g. no line numbers
            continue
        if name in _ARRAYS:
            setattr(out, name, col[idx])
            continue
        got = pick(col)
        setattr(out, name, list(got) if n > 1 else [got])
    return out


def _concat(a: ReportColumns, b: ReportColumns) -> ReportColumns:
    if len(a) == 0:
        return b
    same = a.table is b.table  # else the key indices of one are not the other's
    out = ReportColumns(table=a.table if same else None)
    for name in _COLUMNS:
        if name == "kid" and not same:
            continue
        ca, cb = getattr(a, name), getattr(b, name)
        if len(ca) == len(a) and len(cb) == len(b):
            setattr(out, name, np.concatenate((ca, cb)) if name in _ARRAYS else ca + cb)
    return out


class StreamClock:
    def __init__(self, *, agree: int = 3, max_ahead_s: float = 900.0) -> None:
        if agree < 1:
            raise ValueError("agree must be at least 1")
        self.agree = agree
        self.max_ahead_s = max_ahead_s
        self.wm = -math.inf  # W: the stream time (-inf until `agree` arrivals)
        self.cap = math.inf  # W never passes this (the wall clock + skew, live)
        self.tail = np.zeros(0)  # the last agree - 1 arrivals' event times
        self.seen = 0  # arrivals so far
        self.held = ReportColumns()  # reports not yet reached by W, in arrival order
        self.held_seq = np.zeros(0, np.int64)  # their arrival numbers

    @property
    def time(self) -> float | None:
        return None if self.wm == -math.inf else self.wm

    def admit(self, rep: ReportColumns) -> tuple[ReportColumns, list[Rejection]]:
        """Take a batch of arrivals; return the reports W has reached (held ones first where
        they were released earlier) and the rejected ones."""
        n = len(rep)
        if n == 0:
            return rep, []
        k = self.agree
        ts = rep.ts
        ext = np.concatenate((self.tail, ts))
        w = np.full(n, -math.inf)
        if len(ext) >= k:
            # The minimum of each window of k arrivals, ending at ext[j + k - 1]: k - 1
            # element-wise minima of shifted views (a reduction over a strided window view
            # costs ~5x more).
            size = len(ext) - k + 1
            mins = ext[:size].copy()
            for j in range(1, k):
                np.minimum(mins, ext[j : j + size], out=mins)
            first = len(ext) - len(mins)  # ext index of the first full window's end
            w[first - len(self.tail) :] = mins
        w = np.maximum(np.maximum.accumulate(np.minimum(w, self.cap)), self.wm)
        pool = _concat(self.held, rep)
        pool_ts = np.concatenate((self.held.ts, ts))
        seq = np.concatenate((self.held_seq, self.seen + np.arange(n, dtype=np.int64)))
        arrived = np.maximum(seq - self.seen, 0)  # batch step at which each is in the pool
        step = np.maximum(np.searchsorted(w, pool_ts, side="left"), arrived)
        released = step < n
        decide = seq + k - 1 - self.seen  # batch step at which a far-ahead one is judged
        judged = (decide >= 0) & (decide < n) & (step > decide)  # not released by then
        dj = np.clip(decide, 0, n - 1)
        rejected = judged & (pool_ts > w[dj] + self.max_ahead_s)
        released &= ~rejected  # judged before W could reach it
        order = np.flatnonzero(released)  # in arrival order (seq increases along the pool)
        steps = step[order]
        if len(steps) > 1 and (steps[1:] < steps[:-1]).any():  # else already in step order
            order = order[np.lexsort((seq[order], steps))]
        out = _take(pool, order)
        refused: list[Rejection] = []
        if rejected.any():
            lines = pool.line if len(pool.line) == len(pool) else [0] * len(pool)
            limit = f"{self.max_ahead_s / 60:g} minutes"
            for i in np.flatnonzero(rejected).tolist():
                refused.append(
                    Rejection(
                        int(lines[i]),
                        "too far ahead",
                        f"`ts` {iso(pool_ts[i])} is more than {limit} ahead of the stream "
                        f"(at {iso(w[dj[i]])})",
                    )
                )
        keep = np.flatnonzero(~released & ~rejected)
        self.held = _take(pool, keep)
        self.held_seq = seq[keep]
        self.wm = float(w[-1])
        self.tail = ext[-(k - 1) :] if k > 1 else np.zeros(0)
        self.seen += n
        return out, refused

    def advance(self, t: float) -> ReportColumns:
        """The wall clock says it is `t` (live): W is at least `t` (within `cap`); returns the
        held reports it reaches, in arrival order."""
        self.wm = max(self.wm, min(t, self.cap))
        if len(self.held) == 0:
            return ReportColumns()
        go = self.held.ts <= self.wm
        if not go.any():
            return ReportColumns()
        out = _take(self.held, np.flatnonzero(go))
        keep = np.flatnonzero(~go)
        self.held = _take(self.held, keep)
        self.held_seq = self.held_seq[keep]
        return out

    def rewind(self, t: float) -> None:
        """The stream time goes back to `t` (a server restarted after its clock ran ahead)."""
        self.wm = t
        self.tail = np.minimum(self.tail, t)

    # ------------------------------------------------------------ persistence
    def dump(self) -> dict[str, Any]:
        return {
            "wm": None if self.wm == -math.inf else self.wm,
            "tail": self.tail.tolist(),
            "seen": self.seen,
            "held": {
                name: getattr(self.held, name).tolist()
                if name in _ARRAYS
                else list(getattr(self.held, name))  # (reporters may be joined: `Texts`)
                for name in _KEPT
            },
            "held_seq": self.held_seq.tolist(),
        }

    def load(self, d: dict[str, Any]) -> None:
        self.wm = -math.inf if d["wm"] is None else float(d["wm"])
        self.tail = np.asarray(d["tail"], np.float64)
        self.seen = int(d["seen"])
        h = d["held"]
        self.held = ReportColumns(
            [tuple(k) for k in h["keys"]],
            h["ts"], list(h["person"]), list(h["ip"]), h["count"], h["line"],
        )  # fmt: skip
        self.held_seq = np.asarray(d["held_seq"], np.int64)

"""Deduplication of single reports: one person counts once per service per window.

Each (service, person) is a 64-bit key: SipHash-1-3 (the keyed hash CPython gives strings)
of the person, XOR that of the service, under a 128-bit key drawn at random when a
pipeline starts and kept in its state (so that no one can craft a reporter id that takes
another's place: two ids share a key with probability 2^-64 otherwise). The persons of a
batch are hashed in one compiled pass over their joined text (`linescan.person_keys`), and
the judging is a compiled loop over the batch (`_judge`) on two generations of
open-addressing tables held in numpy arrays: no Python object per report.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.events import Texts
from outagewatch.jit import njit
from outagewatch.linescan import joined, person_keys, siphash
from outagewatch.pipeline.sources import person_buckets

KEEP = 4  # counted times kept per person: enough to judge reports up to a few windows late
# People remembered per generation at most (~50 bytes each in the tables): a flood of fresh
# ids from many addresses must not grow memory without bound. Past it, the generation turns
# early, so under such a flood a person may count twice within the window; normal traffic
# (even a record outage, ~500 reports/s) stays below it.
MAX_KEYS = 1_500_000
MIN_CAPACITY = 1024  # slots per table at least (a power of two)

U64 = NDArray[np.uint64]
Tables = tuple[
    NDArray[np.uint64], NDArray[np.float64], NDArray[np.int8], NDArray[np.int64], NDArray[np.int64]
]
"""The two generations, (keys, times, held, sizes, order): keys (2, capacity), 0 for an
empty slot; each key's counted times (2, capacity, KEEP), ascending, `held` of them (2,
capacity); the number of keys of each generation (2,); and the slots they fill, in the
order they were filled (2, capacity): a generation is dropped in time of its size, not of
the tables'."""


def _tables(capacity: int) -> Tables:
    return (
        np.zeros((2, capacity), np.uint64),
        np.zeros((2, capacity, KEEP), np.float64),
        np.zeros((2, capacity), np.int8),
        np.zeros(2, np.int64),
        np.zeros((2, capacity), np.int64),
    )


@njit(cache=True, nogil=True, inline="always")
def _slot(keys: NDArray[np.uint64], g: int, k: np.uint64) -> np.int64:
    """Where key `k` is in generation `g`, or the empty slot where it would go (linear
    probing; the keys are hashes, so their low bits are as good as any)."""
    mask = keys.shape[1] - 1
    i = np.int64(k & np.uint64(mask))
    while keys[g, i] != np.uint64(0) and keys[g, i] != k:
        i = (i + 1) & mask
    return i


@njit(cache=True, nogil=True)
def _rehash(old: Tables, new: Tables) -> None:
    """Every key of `old` into the (empty, larger or smaller) `new`."""
    ok, ot, oh, on, oo = old
    nk, nt, nh, nn, no = new
    for g in range(2):
        for q in range(on[g]):
            i = oo[g, q]
            k = ok[g, i]
            s = _slot(nk, g, k)
            nk[g, s] = k
            nh[g, s] = oh[g, i]
            no[g, q] = s
            for j in range(KEEP):
                nt[g, s, j] = ot[g, i, j]
        nn[g] = on[g]


@njit(cache=True, nogil=True)
def _insert(
    tables: Tables, g: int, k: NDArray[np.uint64], t: NDArray[np.float64], h: NDArray[np.int8]
) -> None:
    """Keys `k` (new to generation `g`) with their times and counts of times."""
    keys, times, held, sizes, order = tables
    for i in range(k.shape[0]):
        s = _slot(keys, g, k[i])
        keys[g, s] = k[i]
        held[g, s] = h[i]
        order[g, sizes[g]] = s
        sizes[g] += 1
        for j in range(KEEP):
            times[g, s, j] = t[i, j]


@njit(cache=True, nogil=True)
def _turn(tables: Tables, cur: int) -> int:
    """The older generation is dropped and becomes the (empty) new one; returns its index."""
    keys, _, held, sizes, order = tables
    new = 1 - cur
    for q in range(sizes[new]):
        s = order[new, q]
        keys[new, s] = np.uint64(0)
        held[new, s] = 0
    sizes[new] = 0
    return new


@njit(cache=True, nogil=True)
def _judge(
    keys: NDArray[np.uint64],
    ts: NDArray[np.float64],
    watermark: NDArray[np.float64],
    tables: Tables,
    clock: NDArray[np.float64],
    cur: int,
    max_keys: int,
) -> tuple[NDArray[np.bool_], int]:
    """Which reports count, in order (key 0: always, unremembered); returns them and the
    current generation. `clock` is (window, period, start of the current generation: NaN
    before the first report). With a `watermark` (one per report; empty: none), the
    generations turn as it passes each turning time, and early past `max_keys` keys."""
    tk, tt, th, tn, to = tables
    window, period = clock[0], clock[1]
    stream = watermark.shape[0] > 0
    n = keys.shape[0]
    keep = np.ones(n, np.bool_)
    for r in range(n):
        if stream:
            w = watermark[r]
            if math.isnan(clock[2]):
                clock[2] = w
            elif w - clock[2] >= period:
                cur = _turn(tables, cur)
                clock[2] = w
        k = keys[r]
        if k == np.uint64(0):
            continue
        t = ts[r]
        s = _slot(tk, cur, k)
        if tk[cur, s] != k:
            old = 1 - cur
            p = _slot(tk, old, k)
            tk[cur, s] = k
            to[cur, tn[cur]] = s
            tn[cur] += 1
            if tk[old, p] == k:  # remembered by the older generation: carried over
                th[cur, s] = th[old, p]
                for j in range(KEEP):
                    tt[cur, s, j] = tt[old, p, j]
            else:  # not seen lately: counts
                th[cur, s] = 1
                tt[cur, s, 0] = t
                if stream and tn[cur] > max_keys:
                    cur = _turn(tables, cur)
                    clock[2] = watermark[r]
                continue
        h = th[cur, s]
        dup = False
        for j in range(h):
            if abs(t - tt[cur, s, j]) < window:
                dup = True
                break
        if dup:
            keep[r] = False
            continue
        # Counted: its time joins the kept ones (ascending; the latest KEEP).
        if h < KEEP:
            j = h
            th[cur, s] = h + 1
        else:
            if t <= tt[cur, s, 0]:
                continue  # older than every kept time: it would be dropped at once
            for q in range(KEEP - 1):
                tt[cur, s, q] = tt[cur, s, q + 1]
            j = KEEP - 1
        while j > 0 and tt[cur, s, j - 1] > t:
            tt[cur, s, j] = tt[cur, s, j - 1]
            j -= 1
        tt[cur, s, j] = t
    return keep, cur


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

    def __init__(
        self, window_s: float, lateness_s: float = 0.0, seed: tuple[int, int] | None = None
    ) -> None:
        self.window_s = float(window_s)
        # A generation is kept until no on-time report can fall within a window of it.
        self.period_s = self.window_s + float(lateness_s) + 120.0
        self.seed = seed or (secrets.randbits(64), secrets.randbits(64))
        self._service_hash: dict[str, int] = {}  # service id -> its hash under the seed
        self._tables = _tables(MIN_CAPACITY)
        self._cur = 0
        # (window, period, start of the current generation: NaN before the first report)
        self._clock = np.array([self.window_s, self.period_s, math.nan])

    def __len__(self) -> int:
        return int(self._tables[3].sum())

    @property
    def _cur_start(self) -> float | None:
        start = float(self._clock[2])
        return None if math.isnan(start) else start

    # ---------------------------------------------------------------- keys
    def person_hashes(
        self, persons: Sequence[str | None], buckets: int = 1
    ) -> tuple[U64, NDArray[np.int64]]:
        """Each person's (or any text's) hash under the seed (0: none or empty) and, from
        the same pass over their text, zlib.crc32 of it mod `buckets` (-1: none; the flood
        sketches' bucket): one compiled pass over the texts joined, or one text at a time
        where some holds a newline."""
        k0, k1 = np.uint64(self.seed[0]), np.uint64(self.seed[1])
        texts: Sequence[str]
        buf: NDArray[np.uint8] | None
        if isinstance(persons, Texts) and len(persons):  # joined already: their bytes
            texts, buf = persons, np.frombuffer(persons.data, np.uint8)
        else:
            texts = persons if None not in persons else [p or "" for p in persons]  # type: ignore[assignment]
            buf = joined(texts)
        if buf is not None:
            hp, pb = person_keys(buf, len(texts), k0, k1, buckets)
            return hp, pb
        hp = np.zeros(len(texts), np.uint64)
        for i, t in enumerate(texts):
            raw = np.frombuffer(t.encode("utf-8", "surrogatepass"), np.uint8)
            hp[i] = siphash(raw, k0, k1)  # the whole text, newlines and all
        return hp, person_buckets(texts, buckets)

    def keys(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        counts: Sequence[int] | NDArray[np.int64],
    ) -> U64:
        """The key of each report's (service, person); 0 where it is not deduplicated (no
        person, or a pre-aggregated count)."""
        if not len(services) == len(persons) == len(counts):
            raise ValueError("services, persons and counts must have the same length")
        return self._keys(self._service_hashes(services), persons, counts)

    def _service_hashes(self, names: Sequence[str]) -> U64:
        """The hash of each of `names` (service ids), each id hashed once per Dedup."""
        known = self._service_hash
        if not known.keys() >= set(names):
            new = sorted(set(names) - known.keys())
            known.update(zip(new, self.person_hashes(new)[0].tolist(), strict=True))
        return np.fromiter(map(known.__getitem__, names), np.uint64, len(names))

    def _keys(
        self,
        hs: U64,
        persons: Sequence[str | None],
        counts: Sequence[int] | NDArray[np.int64],
        hp: U64 | None = None,
    ) -> U64:
        """`keys`, from each report's service hash (and person hash, when given)."""
        if hp is None:
            hp = self.person_hashes(persons)[0]
        key = hp ^ hs
        key[key == 0] = 1  # (0 marks "not deduplicated")
        key[(hp == 0) | (np.asarray(counts) != 1)] = 0
        return key

    # ---------------------------------------------------------------- judging
    def _fit(self, incoming: int) -> None:
        """Tables large enough for `incoming` more keys at most half full (and not far
        larger than that once a flood has passed)."""
        keys = self._tables[0]
        need = 2 * (int(self._tables[3].max()) + incoming)
        want = max(MIN_CAPACITY, 1 << max(need - 1, 1).bit_length())
        cap = keys.shape[1]
        if cap < need or (cap > 8 * want and cap > MIN_CAPACITY):
            new = _tables(want)
            if self._tables[3].any():  # (empty tables: nothing to move)
                _rehash(self._tables, new)
            self._tables = new

    def _judge(
        self, key: U64, ts: Sequence[float] | NDArray[np.float64], watermark: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        if self.window_s <= 0:
            return np.ones(len(key), np.bool_)
        self._fit(len(key))
        keep, self._cur = _judge(
            key,
            np.asarray(ts, np.float64),
            watermark,
            self._tables,
            self._clock,
            self._cur,
            MAX_KEYS,
        )
        return keep

    def filter(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float] | NDArray[np.float64],
        counts: Sequence[int] | NDArray[np.int64],
    ) -> list[bool]:
        """Which of these reports count, in order; remembers the ones that do."""
        if len(ts) != len(services):
            raise ValueError("services and ts must have the same length")
        key = self.keys(services, persons, counts)
        out: list[bool] = self._judge(key, ts, np.empty(0)).tolist()
        return out

    def rotate(self, now: float) -> None:
        """Forget reports that no on-time report can be a duplicate of (call as time passes)."""
        start = self._cur_start
        if start is None:
            self._clock[2] = now
        elif now - start >= self.period_s:
            self._cur = _turn(self._tables, self._cur)
            self._clock[2] = now

    def filter_stream(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float] | NDArray[np.float64],
        counts: Sequence[int] | NDArray[np.int64],
        watermark: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """`filter`, rotating generations as the watermark (latest time seen so far, per
        report) passes each rotation time: exact, and independent of how a stream is split."""
        if len(watermark) != len(ts):
            raise ValueError("one watermark per report")
        key = self.keys(services, persons, counts)
        return self._judge(key, ts, np.asarray(watermark, np.float64))

    def filter_indexed(
        self,
        service: NDArray[np.int64],
        names: Sequence[str],
        persons: Sequence[str | None],
        ts: NDArray[np.float64],
        counts: NDArray[np.int64],
        watermark: NDArray[np.float64],
        hp: U64 | None = None,
    ) -> NDArray[np.bool_]:
        """`filter_stream` of reports whose services are given as indices into `names` (the
        pipeline's services): the same decisions. `hp`: the persons' hashes when the caller
        has them (`person_hashes`)."""
        if not len(service) == len(ts) == len(watermark):
            raise ValueError("one service and one watermark per report")
        key = self._keys(self._service_hashes(names)[service], persons, counts, hp)
        return self._judge(key, ts, np.asarray(watermark, np.float64))

    # ---------------------------------------------------------------- state
    def dump(self) -> dict[str, Any]:
        keys, times, held, sizes, order = self._tables
        gens = []
        for g in (1 - self._cur, self._cur):  # older first
            at = order[g, : sizes[g]]
            gens.append([keys[g, at].tobytes(), times[g, at].tobytes(), held[g, at].tobytes()])
        return {
            "seed": list(self.seed),
            "start": self._cur_start,
            "older": gens[0],
            "newer": gens[1],
        }

    def load(self, state: dict[str, Any] | Sequence[Sequence[object]]) -> None:
        if not isinstance(state, dict):  # a state from before keys were hashed
            self._load_rows(state)
            return
        self.seed = (int(state["seed"][0]), int(state["seed"][1]))
        self._service_hash = {}
        start = state["start"]
        self._clock[2] = math.nan if start is None else float(start)
        gens = []
        for name in ("older", "newer"):
            k, t, h = state[name]
            gens.append(
                (
                    np.frombuffer(k, np.uint64),
                    np.frombuffer(t, np.float64).reshape(-1, KEEP),
                    np.frombuffer(h, np.int8),
                )
            )
        self._fill(gens)

    def _fill(self, gens: list[tuple[U64, NDArray[np.float64], NDArray[np.int8]]]) -> None:
        """The tables hold generations (older, newer) of (keys, times, held)."""
        size = max(len(g[0]) for g in gens)
        self._tables = _tables(MIN_CAPACITY)
        self._cur = 1
        self._fit(size)
        for g, (k, t, h) in enumerate(gens):
            _insert(self._tables, g, k, t, h)

    def _load_rows(self, rows: Sequence[Sequence[object]]) -> None:
        """The dump of the version before hashed keys: [start], then rows [service,
        person, times, generation (0 older, 1 newer)]."""
        start = math.nan
        by_gen: list[dict[int, list[float]]] = [{}, {}]
        entries = [r for r in rows if len(r) != 1]
        for row in rows:
            if len(row) == 1:
                start = float(row[0])  # type: ignore[arg-type]
        key = self.keys(
            [str(r[0]) for r in entries], [str(r[1]) for r in entries], [1] * len(entries)
        ).tolist()
        for k, (_, _, t, gen) in zip(key, entries, strict=True):
            times = sorted(float(x) for x in t)[-KEEP:]  # type: ignore[attr-defined]
            by_gen[1 if gen else 0][k] = times
        self._clock[2] = start
        gens = []
        for d in by_gen:
            k = np.array(list(d), np.uint64)
            t = np.zeros((len(d), KEEP))
            h = np.zeros(len(d), np.int8)
            for i, times in enumerate(d.values()):
                t[i, : len(times)] = times
                h[i] = len(times)
            gens.append((k, t, h))
        self._fill(gens)

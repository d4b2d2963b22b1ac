"""Synthetic report traffic: deterministic, vectorised NDJSON generation.

Used by tests, benchmarks and the demo. Normal traffic per (service, country, minute) is
Poisson with a rate shaped by each country's local time of day, weekends, public holidays,
growth and organic bumps; outages are surges of extra reports on top. Every report gets a
second within its minute, a problem and a person; a share of the lines are repeats by
someone who already reported the same service a few minutes earlier, which a 15-minute
dedup drops (so `truth` never counts them).

All randomness comes from a seeded numpy Generator, one independent stream per service and
per surge (keyed by name), so adding a surge or a service leaves the others' draws alone and
`jitter_s`, `with_ip` and `aggregate` change only the presentation of the same reports.

    python -m outagewatch.sim.simulate benchmark --lines 2000000 --days 8 --services 120 --out F
    python -m outagewatch.sim.simulate demo --days 7 --out F
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import math
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from outagewatch import geo
from outagewatch.catalog import Catalog
from outagewatch.events import iso, parse_time

__all__ = [
    "Bump",
    "ServiceTraffic",
    "Simulation",
    "Surge",
    "SurgeTruth",
    "benchmark_traffic",
    "demo_scenario",
    "demo_traffic",
    "expected_reports",
    "main",
    "outage_profile",
    "simulate",
]

MINUTE_S = 60
DAY_S = 86_400
DEDUP_WINDOW_S = 900  # repeats always fall inside the same aligned 15-minute window
REPEAT_MAX_S = 600  # a repeat comes at most ~10 minutes after the person's counted report
_CHUNK = 65_536  # events formatted per batch (bounds the temporary Python objects)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Strs = npt.NDArray[np.bytes_]

# Relative report activity by local hour (value at the start of each hour, linearly
# interpolated): lowest around 4am, highest in the evening. Normalised to mean 1, so a
# day of the curve averages exactly 1.
_HOURLY_RAW = np.array(
    [0.60, 0.42, 0.30, 0.24, 0.22, 0.26, 0.40, 0.62, 0.85, 1.00, 1.08, 1.12,
     1.15, 1.13, 1.12, 1.13, 1.17, 1.24, 1.33, 1.42, 1.47, 1.40, 1.18, 0.88],
)  # fmt: skip
_HOURLY: Floats = _HOURLY_RAW / _HOURLY_RAW.mean()
_HOURS: Floats = np.arange(24, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Public data types


@dataclass
class ServiceTraffic:
    """Normal (non-outage) report traffic of one service."""

    service: str
    rate_per_min: float  # mean reports/min of normal traffic over a day at t0, all countries
    countries: dict[str, float]  # country -> share (normalised to sum 1)
    problems: dict[str, float]  # problem -> share (normalised)
    growth_per_day: float = 0.0  # rate multiplied by (1+g)**days_since_t0
    country_growth_per_day: dict[str, float] = field(default_factory=dict)
    diurnal: float = 0.6  # 0 = flat .. 1 = full daily cycle in each country's local time
    weekend_factor: float = 1.0  # rate multiplier on Saturday/Sunday local time
    weekend_shift_h: float = 2.0  # weekend/holiday daily curve peaks this much later
    holidays: bool = True  # a public holiday in a country looks like a Sunday there


@dataclass
class Surge:
    """Extra reports on top of normal traffic (an outage)."""

    service: str
    start: float  # epoch seconds (UTC)
    per_minute: Sequence[float]  # extra reports/min, one entry per minute from start
    countries: dict[str, float] | None = None  # default: the service's normal country mix
    problems: dict[str, float] | None = None  # default: the service's normal problem mix
    name: str = ""  # key in Simulation.truth; default f"{service}#{index}"


@dataclass
class Bump:
    """Organic multiplicative change of a service's normal traffic (not an outage)."""

    service: str
    start: float
    minutes: int
    factor: float  # e.g. 1.5 = 50% more ordinary traffic


@dataclass
class SurgeTruth:
    """What a surge put into the stream, counted the way a 15-minute dedup counts."""

    reports: int  # unique (post-dedup) reports
    countries: dict[str, int]
    problems: dict[str, int]
    first_minute: float  # epoch seconds of the first minute with surge reports (nan: none)
    last_minute: float  # epoch seconds of the last minute with surge reports (nan: none)
    service: str = ""
    planned: float = 0.0  # expected reports: sum of per_minute inside the simulated window


@dataclass
class Simulation:
    lines: list[bytes]  # NDJSON lines (no trailing newline), sorted by ts unless jitter
    truth: dict[str, SurgeTruth]  # per surge name
    start: float = 0.0  # first simulated minute (start rounded down to a whole minute)
    minutes: int = 0
    counted: int = 0  # reports a dedup counts (pre-aggregated: the sum of counts)
    repeats: int = 0  # repeat lines a dedup drops


def outage_profile(
    peak: float,
    ramp_min: int = 2,
    plateau_min: int = 10,
    decay_min: int = 10,
    tail: Sequence[tuple[int, float]] = (),
) -> list[float]:
    """Extra reports/min of an outage: a linear ramp up to `peak`, `plateau_min` minutes at
    `peak`, a linear decay, then `tail` segments of (minutes, level) appended in order."""
    if peak < 0 or min(ramp_min, plateau_min, decay_min) < 0:
        raise ValueError("outage_profile: peak and durations must be >= 0")
    out = [peak * (i + 1) / (ramp_min + 1) for i in range(ramp_min)]
    out += [float(peak)] * plateau_min
    out += [peak * (decay_min - i) / (decay_min + 1) for i in range(decay_min)]
    for minutes, level in tail:
        if minutes < 0 or level < 0:
            raise ValueError("outage_profile: tail minutes and levels must be >= 0")
        out += [float(level)] * minutes
    return out


# --------------------------------------------------------------------------------------
# Planning: per-stream rate grids


@dataclass
class _Stream:
    service: str
    countries: list[str]
    problems: list[str]
    cum: Floats  # cumulative problem probabilities, last == 1.0
    lam: Floats  # (countries, window minutes) expected reports per minute
    m0: int  # grid minute of lam[:, 0]
    key: tuple[int, ...]  # seed spawn key
    surge: str | None = None  # surge name, None for normal traffic
    planned: float = 0.0


@dataclass
class _Local:
    hours: Floats  # local hour of day at each minute's midpoint
    weekend: Bools
    holiday: Bools


def _shares(what: str, mix: dict[str, float], countries: bool) -> tuple[list[str], Floats]:
    if not mix:
        raise ValueError(f"{what}: empty mix")
    names = list(mix)
    w = np.array([float(mix[n]) for n in names], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{what}: shares must be finite, >= 0 and not all 0")
    if countries:
        bad = [c for c in names if c not in geo.COUNTRIES]
        if bad:
            raise ValueError(f"{what}: not ISO 3166-1 alpha-2 countries: {bad}")
    return names, w / w.sum()


def _cum(what: str, mix: dict[str, float]) -> tuple[list[str], Floats]:
    names, p = _shares(what, mix, countries=False)
    cum = np.cumsum(p)
    cum[-1] = 1.0
    return names, cum


def _key(kind: int, name: str) -> tuple[int, ...]:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return (kind, int.from_bytes(digest, "big"))


class _Planner:
    def __init__(self, t0: int, minutes: int, start: float) -> None:
        self.t0 = t0
        self.minutes = minutes
        self.start = start
        self._local: dict[str, _Local] = {}
        grid = t0 + MINUTE_S * np.arange(minutes, dtype=np.int64)
        self.days: Floats = (grid - start) / DAY_S

    def local(self, country: str) -> _Local:
        info = self._local.get(country)
        if info is None:
            local = self.t0 + geo.utc_offset_s(country) + MINUTE_S * np.arange(self.minutes)
            day = local // DAY_S
            hours = np.asarray(((local % DAY_S) + MINUTE_S / 2) / 3600.0, dtype=np.float64)
            weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday (weekday 3)
            epoch = dt.date(1970, 1, 1)
            special = [
                int(d)
                for d in np.unique(day)
                if geo.is_holiday(country, epoch + dt.timedelta(days=int(d)))
            ]
            holiday = np.isin(day, np.array(special, dtype=np.int64))
            info = _Local(hours=hours, weekend=weekend, holiday=holiday)
            self._local[country] = info
        return info

    def curves(self, country: str, diurnal: float, shift_h: float) -> tuple[Floats, Floats]:
        """(weekday, weekend) daily shapes for a country's minutes, each averaging 1."""
        hours = self.local(country).hours
        weekday = 1.0 + diurnal * (np.interp(hours, _HOURS, _HOURLY, period=24) - 1.0)
        shifted = np.interp(hours - shift_h, _HOURS, _HOURLY, period=24)
        return weekday, 1.0 + diurnal * (shifted - 1.0)

    def minute_of(self, t: float) -> int:
        return math.floor((t - self.t0) / MINUTE_S)

    def normal(self, svc: ServiceTraffic, bumps: Sequence[Bump]) -> _Stream:
        what = f"traffic {svc.service!r}"
        if not math.isfinite(svc.rate_per_min) or svc.rate_per_min < 0:
            raise ValueError(f"{what}: rate_per_min must be finite and >= 0")
        if not 0.0 <= svc.diurnal <= 1.0:
            raise ValueError(f"{what}: diurnal must be within [0, 1]")
        if svc.weekend_factor < 0 or svc.growth_per_day <= -1:
            raise ValueError(f"{what}: weekend_factor must be >= 0 and growth_per_day > -1")
        countries, shares = _shares(f"{what} countries", svc.countries, countries=True)
        problems, cum = _cum(f"{what} problems", svc.problems)
        for c, g in svc.country_growth_per_day.items():
            if c not in svc.countries or g <= -1:
                raise ValueError(f"{what}: country growth {c!r}: unknown country or <= -1")

        base = svc.rate_per_min * (1.0 + svc.growth_per_day) ** self.days
        for b in bumps:
            if b.factor < 0 or b.minutes < 0:
                raise ValueError(f"bump on {b.service!r}: factor and minutes must be >= 0")
            i0 = self.minute_of(b.start)
            lo, hi = max(i0, 0), min(i0 + b.minutes, self.minutes)
            if lo < hi:
                base[lo:hi] *= b.factor

        lam = np.empty((len(countries), self.minutes), dtype=np.float64)
        for j, country in enumerate(countries):
            info = self.local(country)
            weekday, weekend = self.curves(country, svc.diurnal, svc.weekend_shift_h)
            special = info.weekend | info.holiday if svc.holidays else info.weekend
            shape = np.where(special, svc.weekend_factor * weekend, weekday)
            row = shares[j] * base * shape
            g = svc.country_growth_per_day.get(country, 0.0)
            if g:
                row *= (1.0 + g) ** self.days
            lam[j] = row
        return _Stream(
            service=svc.service,
            countries=countries,
            problems=problems,
            cum=cum,
            lam=lam,
            m0=0,
            key=_key(0, svc.service),
            planned=float(lam.sum()),
        )

    def surge(self, s: Surge, name: str, normal: ServiceTraffic | None) -> _Stream:
        what = f"surge {name!r}"
        cmix = s.countries if s.countries is not None else (normal and normal.countries)
        pmix = s.problems if s.problems is not None else (normal and normal.problems)
        if not cmix or not pmix:
            raise ValueError(
                f"{what}: service {s.service!r} has no normal traffic; give countries and problems"
            )
        countries, shares = _shares(f"{what} countries", cmix, countries=True)
        problems, cum = _cum(f"{what} problems", pmix)
        per = np.asarray(s.per_minute, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(per)) or np.any(per < 0):
            raise ValueError(f"{what}: per_minute must be finite and >= 0")
        i0 = self.minute_of(s.start)
        lo, hi = max(i0, 0), min(i0 + len(per), self.minutes)
        window = per[lo - i0 : hi - i0] if lo < hi else per[:0]
        lam = shares[:, None] * window[None, :]
        return _Stream(
            service=s.service,
            countries=countries,
            problems=problems,
            cum=cum,
            lam=lam,
            m0=lo,
            key=_key(1, name),
            surge=name,
            planned=float(window.sum()),
        )


def _surge_names(surges: Sequence[Surge]) -> list[str]:
    names = [s.name or f"{s.service}#{i}" for i, s in enumerate(surges)]
    if len(set(names)) != len(names):
        raise ValueError("surges: names must be unique")
    return names


def _plan(
    traffic: Sequence[ServiceTraffic],
    start: float,
    minutes: int,
    surges: Sequence[Surge],
    bumps: Sequence[Bump],
) -> tuple[_Planner, list[Callable[[], _Stream]]]:
    """The streams to draw (normal traffic per service, then surges), built on demand."""
    if not math.isfinite(start) or minutes < 0:
        raise ValueError("simulate: start must be finite and minutes >= 0")
    t0 = math.floor(start / MINUTE_S) * MINUTE_S
    planner = _Planner(t0, minutes, start)
    by_name: dict[str, ServiceTraffic] = {}
    for svc in traffic:
        if svc.service in by_name:
            raise ValueError(f"traffic: service {svc.service!r} appears twice")
        by_name[svc.service] = svc
    for b in bumps:
        if b.service not in by_name:
            raise ValueError(f"bump: service {b.service!r} has no normal traffic")
    streams: list[Callable[[], _Stream]] = [
        partial(planner.normal, svc, [b for b in bumps if b.service == svc.service])
        for svc in traffic
    ]
    for s, name in zip(surges, _surge_names(surges), strict=True):
        streams.append(partial(planner.surge, s, name, by_name.get(s.service)))
    return planner, streams


def expected_reports(
    traffic: Sequence[ServiceTraffic],
    start: float,
    minutes: int,
    surges: Sequence[Surge] = (),
    bumps: Sequence[Bump] = (),
) -> tuple[float, float]:
    """Expected counted reports (normal traffic, surges) that `simulate` would generate.

    Lines in report mode are about (normal + surges) / (1 - repeat_share)."""
    _, builders = _plan(traffic, start, minutes, surges, bumps)
    normal = extra = 0.0
    for build in builders:
        st = build()
        if st.surge is None:
            normal += st.planned
        else:
            extra += st.planned
    return normal, extra


# --------------------------------------------------------------------------------------
# Generation


class _Codes:
    """Interns (service, country, problem) triples: the JSON middle of a line."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str, str], int] = {}

    def __call__(self, service: str, country: str, problem: str) -> int:
        return self.index.setdefault((service, country, problem), len(self.index))

    def table(self, suffix: bytes) -> Strs:
        js = orjson.dumps
        rows = [
            b'"service":%b,"country":%b,"problem":%b,%b' % (js(s), js(c), js(p), suffix)
            for (s, c, p) in self.index
        ]
        return np.array(rows or [b""], dtype=np.bytes_)


@dataclass
class _Drawn:
    t: Ints  # seconds since t0
    code: Ints
    src: Ints  # repeats: index of the original within this stream's unique events
    rt: Ints  # repeats: seconds since t0
    truth: SurgeTruth | None


def _draw_stream(
    st: _Stream,
    *,
    seed: int,
    codes: _Codes,
    t0: int,
    minutes: int,
    repeat_share: float,
    repeats: bool,
) -> _Drawn:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=st.key)))
    counts = rng.poisson(st.lam)
    ci, mi = np.nonzero(counts)
    n = counts[ci, mi]
    ci = np.repeat(ci, n)
    minute = np.repeat(mi.astype(np.int64) + st.m0, n)
    size = len(minute)
    t = minute * MINUTE_S + rng.integers(0, MINUTE_S, size=size, dtype=np.int64)
    pi = np.searchsorted(st.cum, rng.random(size), side="right")
    ptab = np.array(
        [codes(st.service, c, p) for c in st.countries for p in st.problems], dtype=np.int64
    )
    code = ptab[ci * len(st.problems) + pi]

    src: Ints = np.zeros(0, dtype=np.int64)
    rt: Ints = np.zeros(0, dtype=np.int64)
    if repeats and repeat_share > 0 and size:
        # Poisson(q) repeats per counted report make repeats a `repeat_share` of all lines.
        k = rng.poisson(repeat_share / (1.0 - repeat_share), size=size)
        window_end = ((t0 + t) // DEDUP_WINDOW_S + 1) * DEDUP_WINDOW_S - t0
        room = np.minimum(np.minimum(window_end, minutes * MINUTE_S) - t - 1, REPEAT_MAX_S)
        k[room < 1] = 0
        src = np.repeat(np.arange(size, dtype=np.int64), k)
        delay = 1 + np.floor(rng.random(len(src)) * room[src]).astype(np.int64)
        rt = t[src] + delay

    truth = None
    if st.surge is not None:
        cn = np.bincount(ci, minlength=len(st.countries))
        pn = np.bincount(pi, minlength=len(st.problems))
        truth = SurgeTruth(
            reports=size,
            countries={c: int(x) for c, x in zip(st.countries, cn, strict=True) if x},
            problems={p: int(x) for p, x in zip(st.problems, pn, strict=True) if x},
            first_minute=float(t0 + MINUTE_S * minute.min()) if size else math.nan,
            last_minute=float(t0 + MINUTE_S * minute.max()) if size else math.nan,
            service=st.service,
            planned=st.planned,
        )
    return _Drawn(t=t, code=code, src=src, rt=rt, truth=truth)


def _base36_ids(count: int) -> Strs:
    """b"p0", b"p1", ... b"pz", b"p10", ...: `count` distinct person ids, vectorised."""
    alphabet = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    width = 1
    while 36**width < count:
        width += 1
    out = np.zeros((count, width + 1), dtype=np.uint8)
    out[:, 0] = ord("p")
    lo = 0
    for digits in range(1, width + 1):  # ids with the same number of digits are contiguous
        hi = min(count, 36**digits)
        rest = np.arange(lo, hi, dtype=np.int64)
        for col in range(digits, 0, -1):
            out[lo:hi, col] = alphabet[rest % 36]
            rest //= 36
        lo = hi
    return out.view(f"S{width + 1}").reshape(count)


def _ipv4(rng: np.random.Generator, count: int) -> Strs:
    """`count` random public-looking IPv4 addresses as text."""
    firsts = np.array(
        [o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192, 198, 203)]
    )
    octets = np.array([str(i).encode() for i in range(256)], dtype=np.bytes_)
    a = octets[firsts[rng.integers(0, len(firsts), count)]]
    b = octets[rng.integers(0, 256, count)]
    c = octets[rng.integers(0, 256, count)]
    d = octets[rng.integers(1, 255, count)]
    add = np.strings.add
    result: Strs = add(add(add(add(add(add(a, b"."), b), b"."), c), b"."), d)
    return result


@dataclass
class _Rendered:
    """Rows to print, in output order: line = pre[t//60] + sec[t%60] + mid[code] + tail[tix]."""

    t: Ints
    code: Ints
    tix: Ints
    pre: Strs
    mid: Strs
    tail: Strs

    def __len__(self) -> int:
        return len(self.t)

    def chunks(self, limit: int | None = None) -> Iterator[list[bytes]]:
        sec = np.array([b'%02dZ",' % s for s in range(60)], dtype=np.bytes_)
        n = len(self.t) if limit is None else min(limit, len(self.t))
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            t = self.t[a:b]
            parts = zip(
                self.pre[t // MINUTE_S].tolist(),
                sec[t % MINUTE_S].tolist(),
                self.mid[self.code[a:b]].tolist(),
                self.tail[self.tix[a:b]].tolist(),
                strict=True,
            )
            yield [b"".join(p) for p in parts]


@dataclass
class _Generated:
    rendered: _Rendered
    truth: dict[str, SurgeTruth]
    t0: int
    minutes: int
    counted: int
    repeats: int


def _generate(
    traffic: Sequence[ServiceTraffic],
    start: float,
    minutes: int,
    surges: Sequence[Surge],
    bumps: Sequence[Bump],
    *,
    seed: int,
    repeat_share: float,
    jitter_s: float,
    with_ip: bool,
    aggregate: bool,
    max_lines: int | None = None,
) -> _Generated:
    if seed < 0:
        raise ValueError("simulate: seed must be >= 0")
    if not 0.0 <= repeat_share < 1.0:
        raise ValueError("simulate: repeat_share must be within [0, 1)")
    if not (math.isfinite(jitter_s) and jitter_s >= 0):
        raise ValueError("simulate: jitter_s must be finite and >= 0")
    planner, builders = _plan(traffic, start, minutes, surges, bumps)
    t0 = planner.t0
    codes = _Codes()
    drawn: list[_Drawn] = []
    truth: dict[str, SurgeTruth] = {}
    for build in builders:
        st = build()  # one stream's rate grid at a time keeps memory flat
        d = _draw_stream(
            st,
            seed=seed,
            codes=codes,
            t0=t0,
            minutes=minutes,
            repeat_share=repeat_share,
            repeats=not aggregate,
        )
        drawn.append(d)
        if st.surge is not None and d.truth is not None:
            truth[st.surge] = d.truth
    empty = [np.zeros(0, dtype=np.int64)]
    offsets = np.cumsum([0] + [len(d.t) for d in drawn])
    ut = np.concatenate([d.t for d in drawn] + empty)
    ucode = np.concatenate([d.code for d in drawn] + empty)
    src = np.concatenate([d.src + off for d, off in zip(drawn, offsets, strict=False)] + empty)
    rt = np.concatenate([d.rt for d in drawn] + empty)
    del drawn
    counted = len(ut)

    grid = (t0 // MINUTE_S + np.arange(minutes, dtype=np.int64)).astype("datetime64[m]")
    stamps = np.datetime_as_string(grid, unit="m").astype(np.bytes_)
    pre = np.strings.add(np.strings.add(b'{"type":"report","ts":"', stamps), b":")
    if not minutes:
        pre = np.array([b""], dtype=np.bytes_)

    out_seeds = np.random.SeedSequence(seed, spawn_key=(2,)).spawn(3)
    nrep = 0
    if aggregate:
        # one row per (minute, service, country, problem) with its count
        ncode = max(len(codes.index), 1)
        keys, n = np.unique((ut // MINUTE_S) * ncode + ucode, return_counts=True)
        t = (keys // ncode) * MINUTE_S
        code = keys % ncode
        tix = n.astype(np.int64)
        tail = np.strings.add(np.arange(int(tix.max(initial=1)) + 1).astype(np.bytes_), b"}")
        mid = codes.table(b'"count":')
    else:
        # persons are numbered in time order of their counted report
        person = np.empty(counted, dtype=np.int64)
        person[np.argsort(ut, kind="stable")] = np.arange(counted, dtype=np.int64)
        if max_lines is not None and len(rt) and counted + len(rt) > max_lines:
            # over budget: drop surplus repeat lines at random (counted reports stay intact)
            cut_rng = np.random.Generator(np.random.PCG64(out_seeds[2]))
            surplus = min(counted + len(rt) - max_lines, len(rt))
            keep = np.ones(len(rt), dtype=np.bool_)
            keep[cut_rng.choice(len(rt), size=surplus, replace=False)] = False
            src, rt = src[keep], rt[keep]
        nrep = len(rt)
        t = np.concatenate([ut, rt])
        code = np.concatenate([ucode, ucode[src]])
        tix = np.concatenate([person, person[src]])
        del person, src, rt
        tail = _base36_ids(max(counted, 1))
        if with_ip:
            ips = _ipv4(np.random.Generator(np.random.PCG64(out_seeds[0])), len(tail))
            tail = np.strings.add(np.strings.add(tail, b'","ip":"'), ips)
        tail = np.strings.add(tail, b'"}')
        mid = codes.table(b'"reporter":"')
    del ut, ucode

    if jitter_s > 0:
        jit_rng = np.random.Generator(np.random.PCG64(out_seeds[1]))
        order = np.argsort(t + jit_rng.random(len(t)) * jitter_s, kind="stable")
    else:
        order = np.argsort(t, kind="stable")
    rendered = _Rendered(t=t[order], code=code[order], tix=tix[order], pre=pre, mid=mid, tail=tail)
    return _Generated(rendered, truth, t0, minutes, counted, nrep)


def simulate(
    traffic: Sequence[ServiceTraffic],
    start: float,
    minutes: int,
    surges: Sequence[Surge] = (),
    bumps: Sequence[Bump] = (),
    *,
    seed: int = 0,
    repeat_share: float = 0.1,
    jitter_s: float = 0.0,
    with_ip: bool = False,
    aggregate: bool = False,
) -> Simulation:
    """Generate `minutes` of report traffic from `start` (rounded down to a whole minute).

    `rate_per_min` and `per_minute` are counted (deduplicated) reports; in report mode
    repeats come on top, making up `repeat_share` of the lines on average. With
    `aggregate=True` lines are per (service, country, problem, minute) counts instead.
    """
    gen = _generate(
        traffic,
        start,
        minutes,
        surges,
        bumps,
        seed=seed,
        repeat_share=repeat_share,
        jitter_s=jitter_s,
        with_ip=with_ip,
        aggregate=aggregate,
    )
    lines: list[bytes] = []
    for chunk in gen.rendered.chunks():
        lines += chunk
    return Simulation(
        lines=lines,
        truth=gen.truth,
        start=float(gen.t0),
        minutes=gen.minutes,
        counted=gen.counted,
        repeats=gen.repeats,
    )


# --------------------------------------------------------------------------------------
# Ready-made traffic

_BIG_COUNTRIES = (
    "US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "MX", "IT",
    "ES", "AU", "NL", "PL", "TR", "ID", "PH", "KR",
)  # fmt: skip
_BENCH_PROBLEMS = ("app", "website", "login", "other")


def benchmark_traffic(n_services: int = 120, seed: int = 0) -> list[ServiceTraffic]:
    """Services "svc-000".. with rates log-uniform in 0.05..40 reports/min, 1-8 big countries
    and the problems app/website/login/other."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    width = max(3, len(str(n_services - 1)))
    out: list[ServiceTraffic] = []
    for i in range(n_services):
        rate = float(np.exp(rng.uniform(math.log(0.05), math.log(40.0))))
        k = int(rng.integers(1, 9))
        idx = rng.choice(len(_BIG_COUNTRIES), size=k, replace=False)
        cshare = rng.dirichlet(np.full(k, 1.5))
        pshare = rng.dirichlet(np.full(len(_BENCH_PROBLEMS), 3.0))
        out.append(
            ServiceTraffic(
                service=f"svc-{i:0{width}d}",
                rate_per_min=round(rate, 4),
                countries={
                    _BIG_COUNTRIES[j]: round(float(s), 4) + 1e-4
                    for j, s in zip(idx, cshare, strict=True)
                },
                problems={
                    p: round(float(s), 4) + 1e-4
                    for p, s in zip(_BENCH_PROBLEMS, pshare, strict=True)
                },
                growth_per_day=round(float(rng.uniform(-0.002, 0.004)), 5),
                diurnal=round(float(rng.uniform(0.4, 0.8)), 2),
                weekend_factor=round(float(rng.uniform(0.7, 1.2)), 2),
            )
        )
    return out


def benchmark_surges(
    traffic: Sequence[ServiceTraffic], start: float, minutes: int, seed: int = 0
) -> list[Surge]:
    """A few outages (one per 20 services) at random times, for detection benchmarks."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4,)))
    out: list[Surge] = []
    if minutes < 120 or not traffic:
        return out
    for i in range(max(1, len(traffic) // 20)):
        svc = traffic[int(rng.integers(0, len(traffic)))]
        peak = 20.0 + 10.0 * svc.rate_per_min * float(rng.uniform(0.5, 2.0))
        plateau = int(rng.integers(5, 45))
        at = start + MINUTE_S * int(rng.integers(0, minutes - 100))
        out.append(
            Surge(svc.service, at, outage_profile(peak, 3, plateau, 10), name=f"bench-{i:03d}")
        )
    return out


def demo_traffic() -> list[ServiceTraffic]:
    """Normal traffic for every service of the built-in demo catalog (problems from it; rates
    and mixes from `data/demo_traffic.toml`)."""
    text = resources.files("outagewatch").joinpath("data/demo_traffic.toml").read_text("utf-8")
    table: dict[str, dict[str, Any]] = tomllib.loads(text)
    out: list[ServiceTraffic] = []
    for sid, svc in Catalog.demo().services.items():
        shape = dict(table.get(sid, {"rate_per_min": 0.5, "countries": {"US": 0.7, "GB": 0.3}}))
        rate, countries = shape.pop("rate_per_min"), shape.pop("countries")
        weights = shape.pop("problems", {})
        problems = {p: weights.get(p, 0.05) for p in svc.all_problems}
        out.append(ServiceTraffic(sid, rate, dict(countries), problems, **shape))
    return out


def _scaled(profile: list[float], total: float) -> list[float]:
    s = sum(profile)
    return [v * total / s for v in profile] if s > 0 else profile


def demo_scenario(start: float) -> tuple[list[Surge], list[Bump]]:
    """Outages modelled on real cases, placed in the week from `start` (a Monday is best).

    - day 1, 08:30-09:30 UTC (1:30-2:30am US Pacific): X down for US and GB users at night,
      ~16,000 reports in total;
    - day 2, 15:00-17:00 UTC: Facebook, Instagram, Messenger and Threads down together for
      ~2 hours; WhatsApp fine, X gets 25% more ordinary traffic meanwhile;
    - day 3, 19:20 UTC: Shopify, ~12 reports/min for 15 minutes;
    - the first Saturday after start: X down peaking ~8:30 ET (12:30 UTC), tail until noon ET.
    """
    day0 = math.floor(start / DAY_S) * DAY_S

    def at(day: int, hh: int, mm: int) -> float:
        return float(day0 + day * DAY_S + hh * 3600 + mm * MINUTE_S)

    weekday = dt.datetime.fromtimestamp(day0, dt.UTC).weekday()
    saturday = (5 - weekday) % 7 or 7
    meta_start = at(2, 15, 0)
    meta_len = 125
    meta_problems = {"login": 0.45, "app": 0.3, "website": 0.15, "feed": 0.1}
    surges = [
        Surge(
            "x",
            at(1, 8, 25),
            _scaled(outage_profile(1.0, 5, 50, 10), 16_000),
            countries={"US": 0.75, "GB": 0.25},
            problems={"app": 0.55, "website": 0.25, "login": 0.2},
            name="x-night-outage",
        ),
        *(
            Surge(
                sid,
                meta_start + delay,
                outage_profile(peak, 5, minutes, 20),
                problems=problems,
                name=f"meta-{sid}",
            )
            for sid, delay, peak, minutes, problems in (
                ("facebook", 0, 650, 100, meta_problems),
                ("instagram", 60, 420, 100, meta_problems),
                ("messenger", 120, 140, 95, {"messages": 0.5, "login": 0.3, "app": 0.2}),
                ("threads", 120, 70, 95, {"login": 0.4, "app": 0.4, "website": 0.2}),
            )
        ),
        Surge(
            "shopify",
            at(3, 19, 20),
            [12.0] * 15,
            problems={"checkout": 0.6, "website": 0.3, "admin": 0.1},
            name="shopify-checkout",
        ),
        Surge(
            "x",
            at(saturday, 12, 20),
            outage_profile(380, 10, 15, 20, tail=[(60, 60.0), (115, 25.0)]),
            name="x-saturday-outage",
        ),
    ]
    bumps = [Bump("x", meta_start, meta_len, 1.25)]
    return surges, bumps


# --------------------------------------------------------------------------------------
# Command line


def _write(gen: _Generated, out: IO[bytes], limit: int | None) -> int:
    n = 0
    for chunk in gen.rendered.chunks(limit):
        if chunk:
            out.write(b"\n".join(chunk))
            out.write(b"\n")
            n += len(chunk)
    return n


def surge_labels(surges: Sequence[Surge]) -> list[bytes]:
    """The surges as labelled true outages for `evaluate` (docs/contract.md §7, NDJSON lines
    without newline): the service, the surge's first minute and the end of its last one."""
    return [
        orjson.dumps(
            {
                "service": s.service,
                "start": iso(s.start),
                "end": iso(s.start + MINUTE_S * max(len(s.per_minute), 1)),
            }
        )
        for s in surges
    ]


def _truth_json(truth: dict[str, SurgeTruth]) -> bytes:
    def iso_or_none(t: float) -> str | None:
        return None if math.isnan(t) else iso(t)

    doc = {
        name: {
            **dataclasses.asdict(tr),
            "first_minute": iso_or_none(tr.first_minute),
            "last_minute": iso_or_none(tr.last_minute),
        }
        for name, tr in truth.items()
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m outagewatch.sim.simulate", description="Write synthetic report NDJSON."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("benchmark", help="many services, a target number of lines")
    bench.add_argument("--lines", type=int, default=2_000_000, help="report lines to write")
    bench.add_argument("--days", type=float, default=8.0)
    bench.add_argument("--services", type=int, default=120)
    bench.add_argument("--start", default="2025-03-03T00:00:00Z")
    bench.add_argument("--no-surges", action="store_true", help="normal traffic only")
    demo = sub.add_parser("demo", help="the demo catalog with outages modelled on real cases")
    demo.add_argument("--days", type=float, default=7.0)
    demo.add_argument("--start", default="2025-03-10T00:00:00Z", help="best a Monday")
    demo.add_argument("--aggregate", action="store_true", help="per-minute counts instead")
    for p in (bench, demo):
        p.add_argument("--out", default="-", help="output file, - for stdout")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--repeat-share", type=float, default=0.1)
        p.add_argument("--jitter", type=float, default=0.0, help="out-of-order seconds")
        p.add_argument("--with-ip", action="store_true")
        p.add_argument("--truth", default=None, help="also write surge truth as JSON here")
        p.add_argument(
            "--labels", default=None, help="also write the surges as labels for `evaluate` here"
        )
    args = ap.parse_args(argv)

    began = time.perf_counter()
    start = parse_time(args.start, forms="iso8601", naive_utc=True)
    minutes = round(args.days * 1440)
    limit: int | None = None
    aggregate = bool(getattr(args, "aggregate", False))
    if args.command == "benchmark":
        traffic = benchmark_traffic(args.services, args.seed)
        surges = [] if args.no_surges else benchmark_surges(traffic, start, minutes, args.seed)
        bumps: list[Bump] = []
        normal, extra = expected_reports(traffic, start, minutes, surges)
        want = args.lines * (1.0 - args.repeat_share)
        # aim a little high (about 4 sigma), then drop surplus repeats to hit --lines exactly
        want *= 1.0 + 4.0 / math.sqrt(max(args.lines, 1)) * (1.0 + args.repeat_share)
        factor = max(want - extra, 0.0) / normal if normal > 0 else 0.0
        traffic = [dataclasses.replace(t, rate_per_min=t.rate_per_min * factor) for t in traffic]
        limit = args.lines
    else:
        traffic = demo_traffic()
        surges, bumps = demo_scenario(start)

    gen = _generate(
        traffic,
        start,
        minutes,
        surges,
        bumps,
        seed=args.seed,
        repeat_share=args.repeat_share,
        jitter_s=args.jitter,
        with_ip=args.with_ip,
        aggregate=aggregate,
        max_lines=limit,
    )
    if args.out == "-":
        try:
            written = _write(gen, sys.stdout.buffer, limit)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # e.g. piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    else:
        with open(args.out, "wb") as fh:
            written = _write(gen, fh, limit)
    if args.truth:
        with open(args.truth, "wb") as fh:
            fh.write(_truth_json(gen.truth))
    if args.labels:
        with open(args.labels, "wb") as fh:
            fh.writelines(line + b"\n" for line in surge_labels(surges))
    secs = time.perf_counter() - began
    day = dt.datetime.fromtimestamp(gen.t0, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    print(
        f"simulate {args.command}: {written} lines ({gen.counted} counted reports, "
        f"{gen.repeats} repeats, {len(gen.truth)} surges), {len(traffic)} services, "
        f"{minutes} min from {day} -> {args.out} in {secs:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

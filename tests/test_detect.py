"""The detector's parts: compiled kernels against plain references, baseline and surge test."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from outagewatch.detect.baseline import Baseline
from outagewatch.detect.kernels import learn_block, tail_sides, window_scan
from outagewatch.detect.scorer import candidates, nb_tail_below, nb_upper_tail, score
from outagewatch.detect.series import SLOTS_PER_DAY, Series, SeriesKey
from outagewatch.settings import PipelineSettings

CFG = PipelineSettings()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(0, 10_000), seed=st.integers(0, 2**32 - 1))
def test_window_scan_matches_numpy(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ring = CFG.ring_minutes
    counts = rng.poisson(rng.uniform(0, 20), (ring, n + 3)).astype(np.float32)
    exp_ring = rng.uniform(0, 10, (ring, n + 3)).astype(np.float32)
    mu = rng.uniform(0, 10, n)
    eligible = rng.random(n) < 0.8
    rows = (m - np.arange(max(CFG.windows))) % ring
    windows = np.asarray(CFG.windows, np.int64)
    sums = np.empty((n, len(windows)))
    expected = np.empty((n, len(windows)))
    cand = np.empty((n, len(windows)), np.bool_)
    ref_ring = exp_ring.copy()
    disp = rng.uniform(0.005, 0.5, n).astype(np.float32)
    x = counts[rows[0], :n]
    limits = (CFG.min_ratio, CFG.min_excess, math.log(CFG.alpha))
    minute = (x, mu, disp, eligible)
    found = window_scan((counts, exp_ring), rows, windows, minute, limits, (sums, expected, cand))
    ref_ring[rows[0], :n] = mu
    np.testing.assert_allclose(exp_ring[rows[0], :n], mu, rtol=1e-6)
    ref_sums = np.cumsum(counts[rows, :n].astype(np.float64), axis=0)[windows - 1].T
    ref_exp = np.cumsum(ref_ring[rows, :n].astype(np.float64), axis=0)[windows - 1].T
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-9)
    np.testing.assert_allclose(expected, ref_exp, rtol=1e-6)
    guards = candidates(sums, expected, eligible, CFG)
    assert not (cand & ~guards).any()  # a candidate always passes the cheap guards
    # ...and no window the exact test calls significant is pruned:
    rows_, cols_ = np.nonzero(guards)
    p = nb_upper_tail(
        sums[rows_, cols_], np.maximum(expected[rows_, cols_], 1e-3), disp[rows_].astype(np.float64)
    )
    significant = np.zeros_like(guards)
    significant[rows_[p < CFG.alpha], cols_[p < CFG.alpha]] = True
    assert not (significant & ~cand).any()
    assert found == bool(cand.any())


def _learn_reference(
    level: float,
    nobs: int,
    disp: float,
    season: NDArray[np.float64],
    dow: NDArray[np.float64],
    seen: bool,
    factor: NDArray[np.float64],
    x: NDArray[np.float64],
    s0: int,
    s1: int,
    frac: float,
    weekday: int,
    normalise: bool,
    alphas: tuple[float, float, float, float],
) -> tuple[float, int, float, NDArray[np.float64], NDArray[np.float64], bool]:
    """The learning rule written out plainly for one series."""
    la, sa, wa, da = alphas
    b = len(x)
    mu = level * factor
    xc = np.minimum(x, np.maximum(2 * mu, mu + 4 * np.sqrt(mu) + 2)) if nobs >= 60 else x
    a = max(1 - (1 - la) ** b, b / (nobs + b))
    new_level = level + a * ((xc / factor).mean() - level)
    season, dow = season.copy(), dow.copy()
    if nobs >= 120 and level > 1e-6:
        if s0 >= SLOTS_PER_DAY and not seen:
            season[SLOTS_PER_DAY:] = season[:SLOTS_PER_DAY]
            seen = True
        d = dow[weekday]
        ratio = min(max(xc.mean() / (level * max(d, 0.05)), 0.0), 20.0)
        w = 1 - (1 - sa) ** b
        season[s0] += w * (1 - frac) * (ratio - season[s0])
        season[s1] += w * frac * (ratio - season[s1])
        dratio = min(max(d * (xc / factor).mean() / level, 0.0), 20.0)
        dow[weekday] += (1 - (1 - wa) ** b) * (dratio - d)
        if normalise:
            work = max(season[:SLOTS_PER_DAY].mean(), 1e-3)
            rest = max(season[SLOTS_PER_DAY:].mean(), 1e-3)
            season[:SLOTS_PER_DAY] /= work
            season[SLOTS_PER_DAY:] /= rest
            dow[:5] *= work
            dow[5:] *= rest
            mean = max(dow.mean(), 1e-3)
            dow /= mean
            new_level *= mean
    if nobs >= 60 and mu.mean() > 0.5:
        m = np.maximum(mu, 1e-6)
        r = (((xc - m) ** 2 - m) / (m * m)).mean()
        wd = 1 - (1 - da) ** b
        disp = min(max(disp + wd * (min(max(r, -0.5), 2.0) - disp), 0.005), 0.5)
    return new_level, nobs + b, disp, season, dow, seen


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), normalise=st.booleans(), b=st.integers(1, 15))
@pytest.mark.slow
def test_learn_block_matches_the_plain_rule(seed: int, normalise: bool, b: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    level = rng.uniform(0, 20, n)
    nobs = rng.choice([0, 59, 60, 119, 120, 5000], n).astype(np.int32)
    disp = rng.uniform(0.005, 0.5, n).astype(np.float32)
    season = rng.uniform(0.2, 3, (n, 2 * SLOTS_PER_DAY)).astype(np.float32)
    dow = rng.uniform(0.5, 2, (n, 7)).astype(np.float32)
    seen = rng.random(n) < 0.5
    factor = rng.uniform(0.05, 3, (n, b))
    x = rng.poisson(level[:, None] * factor * rng.uniform(0.5, 4, (n, 1))).astype(np.float64)
    ok = rng.random(n) < 0.8
    s0 = rng.integers(0, 2 * SLOTS_PER_DAY, n)
    s1 = np.where(s0 % SLOTS_PER_DAY == SLOTS_PER_DAY - 1, s0 - SLOTS_PER_DAY + 1, s0 + 1)
    frac = rng.random(n)
    weekday = rng.integers(0, 7, n)
    alphas = (0.002, 0.004, 0.0003, 0.0007)
    before = (level.copy(), nobs.copy(), disp.copy(), season.copy(), dow.copy(), seen.copy())
    model = (level, nobs, disp, season, dow, seen)
    learn_block(model, (factor, x, ok), (s0, s1, frac, weekday), alphas, normalise, SLOTS_PER_DAY)
    for i in range(n):
        if not ok[i]:
            assert level[i] == before[0][i] and nobs[i] == before[1][i]
            assert (season[i] == before[3][i]).all() and (dow[i] == before[4][i]).all()
            continue
        want = _learn_reference(
            float(before[0][i]), int(before[1][i]), float(before[2][i]),
            before[3][i].astype(np.float64), before[4][i].astype(np.float64), bool(before[5][i]),
            factor[i], x[i], int(s0[i]), int(s1[i]), float(frac[i]), int(weekday[i]),
            normalise, alphas,
        )  # fmt: skip
        assert level[i] == pytest.approx(want[0], rel=1e-5)
        assert nobs[i] == want[1]
        assert disp[i] == pytest.approx(want[2], rel=1e-5)
        np.testing.assert_allclose(season[i], want[3], rtol=1e-5)
        np.testing.assert_allclose(dow[i], want[4], rtol=1e-5)
        assert bool(seen[i]) == want[5]


def test_nb_tail_is_poisson_when_dispersion_vanishes() -> None:
    s = np.array([1.0, 5.0, 12.0])
    mean = np.array([0.15, 2.0, 0.15])
    got = nb_upper_tail(s, mean, np.full(3, 1e-9))
    # The Poisson upper tail summed directly (no 1 - cdf cancellation).
    want = [
        sum(
            math.exp(-m + k * math.log(m) - math.lgamma(k + 1)) for k in range(int(v), int(v) + 200)
        )
        for v, m in zip(s, mean, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-300)


def test_surge_guards_ratio_and_excess() -> None:
    """A 1.6x bump on a big service is significant but not a surge; 12/min on 0.15/min is."""
    sums = np.array([[160.0], [12.0], [3.0]])
    expected = np.array([[100.0], [0.15], [0.15]])
    one = PipelineSettings(windows=(1,), ring_minutes=128)
    sc = score(
        sums, expected, sums[:, 0], expected[:, 0], np.full(3, 0.01), np.ones(3, np.bool_), one
    )
    assert sc.fired.tolist() == [False, True, False]


def _series_with(keys: list[SeriesKey]) -> Series:
    s = Series(CFG.ring_minutes)
    for k in keys:
        s.get(k)
    return s


def test_holiday_is_a_weekend_day_in_local_time() -> None:
    s = _series_with([SeriesKey("a", "country", "US"), SeriesKey("a", "country", "DE")])
    b = Baseline(CFG)
    july4 = dt.datetime(2025, 7, 4, 18, 0, tzinfo=dt.UTC)  # Friday; a US holiday only
    daytype = b.day_type(s, int(july4.timestamp() // 60))
    us, de = s.index[SeriesKey("a", "country", "US")], s.index[SeriesKey("a", "country", "DE")]
    assert daytype[us] == 1 and daytype[de] == 0
    total = s.index[SeriesKey("a", "total")]
    assert daytype[total] == 0
    saturday = dt.datetime(2025, 7, 5, 12, 0, tzinfo=dt.UTC)
    assert b.day_type(s, int(saturday.timestamp() // 60))[de] == 1


@pytest.mark.slow
def test_level_follows_growth_and_learns_the_daily_shape() -> None:
    s = _series_with([SeriesKey("a", "total")])
    b = Baseline(CFG)
    rng = np.random.default_rng(0)
    start = int(dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp() // 60)
    block = 15
    minutes = 14 * 1440
    for m0 in range(start, start + minutes, block):
        mins = list(range(m0, m0 + block))
        days = (m0 - start) / 1440
        rate = 10 * (1.05**days) * (1 + 0.6 * math.sin(2 * math.pi * ((m0 % 1440) / 1440)))
        x = rng.poisson(rate, (1, block)).astype(np.float64)
        b.learn(s, mins, x, np.ones(1, np.bool_))
    end = start + minutes
    for minute, phase in ((end + 360, 0.25), (end + 1080, 0.75)):
        want = 10 * 1.05**14 * (1 + 0.6 * math.sin(2 * math.pi * phase))
        assert b.expected(s, minute)[0] == pytest.approx(want, rel=0.2)


@pytest.mark.slow
def test_weekday_levels_are_learned() -> None:
    """Mondays 1.6x busier than other working days: the baseline learns it."""
    s = _series_with([SeriesKey("a", "total")])
    b = Baseline(CFG)
    rng = np.random.default_rng(1)
    start = int(dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp() // 60)  # a Monday
    for m0 in range(start, start + 28 * 1440, 15):
        weekday = ((m0 - start) // 1440) % 7
        rate = 8.0 * (1.6 if weekday == 0 else 1.0)
        b.learn(
            s,
            list(range(m0, m0 + 15)),
            rng.poisson(rate, (1, 15)).astype(np.float64),
            np.ones(1, np.bool_),
        )
    monday, wednesday = start + 28 * 1440 + 720, start + 30 * 1440 + 720
    ratio = b.expected(s, monday)[0] / b.expected(s, wednesday)[0]
    assert ratio == pytest.approx(1.6, rel=0.15)
    assert b.expected(s, wednesday)[0] == pytest.approx(8.0, rel=0.15)


def test_no_learning_in_an_incident() -> None:
    s = _series_with([SeriesKey("a", "total")])
    s.level[0] = 5.0
    s.nobs[0] = 10_000
    b = Baseline(CFG)
    b.learn(s, list(range(1000, 1015)), np.full((1, 15), 500.0), np.zeros(1, np.bool_))
    assert s.level[0] == 5.0 and s.nobs[0] == 10_000


def test_the_typical_curve_is_the_expectation_minute_by_minute() -> None:
    """`Baseline.curve` (the band on the service chart) equals `expected` on ordinary days."""
    rng = np.random.default_rng(4)
    s = Series(32)
    keys = [
        SeriesKey("a", "total"),
        SeriesKey("a", "country", "JP"),
        SeriesKey("a", "country", "IN"),
    ]
    for k in keys:
        s.get(k)
    n = len(s)
    s.level[:n] = rng.uniform(0.5, 20, n)
    s.season[:n] = rng.uniform(0.2, 2.0, (n, s.season.shape[1])).astype(np.float32)
    s.dow[:n] = rng.uniform(0.7, 1.3, (n, 7)).astype(np.float32)
    b = Baseline(PipelineSettings())
    m0 = int(dt.datetime(2025, 10, 6, tzinfo=dt.UTC).timestamp()) // 60  # a Monday, no holiday
    minutes = np.arange(m0, m0 + 3 * 1440, 7, dtype=np.int64)
    for i in range(n):
        got = b.curve(s, i, minutes)
        want = np.array([b.expected(s, int(m))[i] for m in minutes])
        np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1e-2, 1e-4, 1e-9, 1e-12])
def test_the_tail_test_by_bounds_decides_as_the_exact_tail(alpha: float) -> None:
    """`nb_tail_below` (bounds of the tail, the exact one only between them) says what
    `nb_upper_tail < alpha` says: on random series and counts, and on the counts next to
    each one's alpha quantile, where the bounds cannot decide."""
    rng = np.random.default_rng(7)
    n = 5_000
    mean = np.exp(rng.uniform(math.log(1e-3), math.log(500.0), n))
    disp = np.where(rng.random(n) < 0.2, 1e-9, np.exp(rng.uniform(math.log(1e-4), 1.0, n)))
    s = np.round(mean * np.exp(rng.uniform(0.0, 3.0, n)) + rng.integers(0, 20, n))
    # The smallest count whose tail is below alpha, and the count before it.
    grid = np.arange(1.0, 3_000.0)
    edge = np.array(
        [grid[np.argmax(nb_upper_tail(grid, np.full(len(grid), m), np.full(len(grid), d)) < alpha)]
         for m, d in zip(mean[:300], disp[:300], strict=True)]
    )  # fmt: skip
    counts: NDArray[np.float64] = np.concatenate([s, edge, edge - 1.0, [0.0]]).astype(np.float64)
    mean = np.concatenate([mean, mean[:300], mean[:300], [1.0]])
    disp = np.concatenate([disp, disp[:300], disp[:300], [0.1]])
    got = nb_tail_below(counts, mean, disp, alpha)
    want = nb_upper_tail(counts, mean, disp) < alpha
    assert got.dtype == np.bool_ and np.array_equal(got, want)
    assert 0 < int(want.sum()) < len(want)
    # The bounds (`kernels.tail_sides`) decide nearly all of them, and never wrongly.
    at = np.flatnonzero(counts > 0)
    r = 1.0 / np.maximum(disp[at], 1e-9)
    sides = np.empty(len(at), np.int8)
    tail_sides(counts[at], r, mean[at] / (r + mean[at]), math.log(alpha), sides)
    decided = sides >= 0
    assert decided.mean() > 0.9
    assert np.array_equal(sides[decided] == 1, want[at][decided])

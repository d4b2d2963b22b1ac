"""Quiet minutes in one compiled step: what a run of ordinary ticks does, minute after minute,
while nothing can happen.

A tick with no open or recent incident and no surge candidate only writes the minute's
expectation into the ring (`ring_expected`), steps the sequential test and, when the
baseline's learning block ends, learns. `quiet_scan` does all of it for a run of minutes
(across half hours and learning blocks: the seasonal factors are gathered once per half
hour and after each learning step, from a calendar computed once per half hour), and stops
at the first minute where some window is a surge candidate or the sequential test fires:
the pipeline gives that minute an ordinary tick. The arithmetic is the tick's own
(`Baseline.season_factor`, `window_scan`, `Baseline.learn`), in the same order, so a quiet
run leaves exactly the state the ticks would have (tests/test_quiet.py).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.cusum import (
    Columns,
    Sequential,
    alarms_of,
    from_columns,
    scratch,
    step_columns,
    to_columns,
)
from outagewatch.detect.kernels import (
    F32,
    F64,
    I64,
    Guards,
    Mask,
    Model,
    Rates,
    Ring,
    is_candidate,
    learn_block,
)
from outagewatch.detect.series import SLOTS_PER_DAY
from outagewatch.jit import njit

Run = tuple[int, int, Mask, bool]
"""(m0, m1, hot, zero_next): the minutes [m0, m1) to scan, the series left out (`hot`), and
whether each next minute's ring row is cleared (`quiet_scan`)."""
Calendar = tuple[int, I64, I64, I64, Mask]
"""(h_first, slot0, slot1, weekday, half): the profile slots and local weekday of every
series in the half hours h_first, h_first + 1, ... (minute // 30; (half hours, series)
each), and which series live on a half-hour offset (`Baseline.run_calendar`)."""
Tests = tuple[I64, int, Guards, Sequential]
"""(windows, warmup, guards, sequential): the window test's windows, the minutes a series
learns before it is tested, the guards, and the sequential test (off when h <= 0)."""
Learning = tuple[int, int, int, int, NDArray[np.bool_], I64, Rates]
"""(lateness, learn_len, final_until, learn_until, busy, born, rates): minutes a count may
come late, the learning block, the minutes already final and learned, the series that
must not learn in each of the run's blocks (maintenance), each series' first tick minute,
and the baseline's learning rates."""


@njit(cache=True, nogil=True)
def quiet_scan(
    run: Run, ring: Ring, model: Model, calendar: Calendar, tests: Tests, learning: Learning
) -> tuple[int, int, int]:
    """Scan minutes m0, m0+1, ... < m1 as ticks without incidents would; returns (k, new
    learn_until, learning steps): minutes < k are done, minute k (< m1) has a surge
    candidate or a sequential alarm and needs a full tick (`_scan`).

    A minute where the sequential test fires must be left as it was before it (the tick
    fires it). Rather than keep a copy of the test's state before every minute, the state
    a scan changes is copied once, at the start: the sequential test's by columns, which
    the scan steps (`cusum.to_columns`: its rows stay as they were until the run is done),
    and the baseline's. When a scan stops at an alarm at minute k, both are taken from
    before it again and the minutes before k are scanned again, which repeats the same
    arithmetic on the same inputs (rare: an alarm opens an incident)."""
    m0, _, hot, zero_next = run
    sequential = tests[3]
    n = model[0].shape[0]
    saved_model = (
        model[0].copy(), model[1].copy(), model[2].copy(), model[3].copy(), model[4].copy(),
        model[5].copy(),
    )  # fmt: skip
    cols = to_columns(sequential, n)
    k, learn_until, blocks, alarm = _scan(run, ring, model, calendar, tests, learning, cols)
    if alarm:
        model[0][:] = saved_model[0]
        model[1][:] = saved_model[1]
        model[2][:] = saved_model[2]
        model[3][:] = saved_model[3]
        model[4][:] = saved_model[4]
        model[5][:] = saved_model[5]
        cols = to_columns(sequential, n)
        k, learn_until, blocks, alarm = _scan(
            (m0, k, hot, zero_next), ring, model, calendar, tests, learning, cols
        )
    from_columns(cols, sequential, n)
    return k, learn_until, blocks


@njit(cache=True, nogil=True, error_model="numpy")  # as step_columns, inlined here
def _scan(
    run: Run,
    ring: Ring,
    model: Model,
    calendar: Calendar,
    tests: Tests,
    learning: Learning,
    cols: Columns,
) -> tuple[int, int, int, bool]:
    """`quiet_scan`'s minutes; returns (k, new learn_until, learning steps, alarm): minute
    k (< m1) has a surge candidate, or (`alarm`) the sequential test fires in it and the
    test has stepped it (the caller takes that back). The sequential test is stepped in
    `cols`, its state by columns (`cusum.to_columns`), not in its rows.

    A minute's tick, in the tick's order and arithmetic:

    - mu = level * max(f0 + (f1 - f0) * frac, 0.05) (`Baseline.season_factor`: f0, f1 the
      profile x weekday factors of the two slots of the minute's half hour, `frac` the
      minute's place between them) goes into the ring;
    - the windows ending at it are tested as `window_scan` does. A window can only be a
      candidate when its reports pass the guards (at least `min_ratio` times and
      `min_excess` more than expected), so each series keeps running sums of every window
      (`_sums`: its reports, exact in any order since counts are whole numbers, and its
      expectation, to within rounding, recomputed every half hour), and only series where
      some window passes the guards by them, with a margin far above the rounding
      (`_may_pass`), have their windows summed and tested exactly (`_candidate`): a quiet
      minute costs O(series x windows), not O(series x window length), and a busy series
      running at its forecast is not summed at all;
    - the sequential test (detect.cusum; off when `h` <= 0; `first`: each series' first
      surge size, `first_sizes`; its own ratio guard, and `recent` its forecast-bias
      EWMAs) steps with the same mu; a minute where it fires ends the scan (`alarm`);
    - minute m - lateness becomes final; at the end of a learning block the baseline
      learns from it (`Baseline.learn` / `kernels.learn_block`, `busy[b]` the series
      that must not learn in the run's b-th block: maintenance), and the factors are
      gathered again.

    Series marked `hot` (those of services with an incident: the pipeline ticks them
    minute by minute itself, `Pipeline._quiet_run`) are not tested and do not learn; their
    sequential test is held at 0 here (the caller keeps and restores it) and the
    expectation written for them is overwritten by their ticks.

    The `calendar` covers the run and the learning blocks that reach back before m0. With
    `zero_next`, the next minute's ring row is cleared once a minute is done, as
    `Pipeline._advance_minute` does between ticks.
    """
    m0, m1, hot, zero_next = run
    ring_count, ring_expected = ring
    level, nobs, disp = model[0], model[1], model[2]
    half = calendar[4]
    windows, warmup, guards, sequential = tests
    h = sequential[6]
    lateness, learn_len, final_until, learn_until, busy, born, rates = learning
    size = ring_count.shape[0]
    n = level.shape[0]
    width = windows.max()
    mu = np.empty(n)
    f0 = np.empty(n)
    f1 = np.empty(n)
    eligible = np.empty(n, np.bool_)
    for i in range(n):
        eligible[i] = nobs[i] >= warmup and not hot[i]
    ok = np.empty(n, np.bool_)
    fired = np.zeros(n, np.bool_)  # set only on a minute that is taken back (the tick's)
    ratio = np.zeros(n)
    nw = windows.shape[0]
    # Each window's reports and expectation ending at the minute before m0, less its
    # oldest minute: the minute scanned adds its row (`_sums`).
    counts = np.zeros((nw, n))
    expected = np.zeros((nw, n))
    may = np.empty(n, np.bool_)  # some window may pass the guards (`_may_pass`)
    min_ratio, min_excess = guards[0], guards[1]
    gathered = -1  # the half hour whose factors are in f0, f1 (-1: none, or stale)
    blocks = 0
    work = scratch(n)  # `step_columns`' working arrays
    for m in range(m0, m1):
        newest = m % size
        if m // 30 != gathered:
            gathered = m // 30
            _gather(gathered, model, calendar, f0, f1)
            _sums(ring, m, windows, counts, expected)
        frac_whole, frac_half = _fracs(m)
        for i in range(n):
            frac = frac_half if half[i] else frac_whole
            mu[i] = level[i] * max(f0[i] + (f1[i] - f0[i]) * frac, 0.05)
            ring_expected[newest, i] = mu[i]
        for i in range(n):
            may[i] = False
        for w in range(nw):
            for i in range(n):
                counts[w, i] += ring_count[newest, i]
                expected[w, i] += ring_expected[newest, i]
                may[i] |= _may_pass(counts[w, i], expected[w, i], min_ratio, min_excess)
        for i in range(n):
            if not may[i] or not eligible[i]:
                continue
            if _candidate(ring, m, i, windows, width, disp[i], guards):
                return m, learn_until, blocks, False
        if h > 0.0:
            # Stepped at once (one pass of the statistic, not a would-it-fire pass and a
            # step); `quiet_scan` takes back a minute where some series fires.
            minute = (ring_count[newest], mu, disp, eligible)
            if step_columns(cols, minute, sequential, work) and alarms_of(
                cols, sequential, guards, (fired, ratio)
            ):
                return m, learn_until, blocks, True
        f = m - lateness
        if f >= final_until:
            if (f + 1) % learn_len == 0:
                lo = max(learn_until, f + 1 - learn_len)
                for i in range(n):
                    ok[i] = not busy[blocks, i] and not hot[i] and born[i] <= m
                _learn(lo, f + 1, ring_count, model, calendar, ok, rates)
                learn_until = f + 1
                blocks += 1
                gathered = -1  # the factors changed
                for i in range(n):
                    eligible[i] = nobs[i] >= warmup and not hot[i]
            final_until = f + 1
        for w in range(nw):
            oldest = (m - windows[w] + 1) % size  # leaves the window of the next minute
            for i in range(n):
                counts[w, i] -= ring_count[oldest, i]
                expected[w, i] -= ring_expected[oldest, i]
        if zero_next:
            ring_count[(m + 1) % size, :] = 0.0
    return m1, learn_until, blocks, False


@njit(cache=True, nogil=True)
def _sums(ring: Ring, m: int, windows: I64, counts: F64, expected: F64) -> None:
    """Each window's reports and expectation over the minutes before `m` that its window
    ending at `m` holds (the newest first: no rounding carried over from earlier sums)."""
    ring_count, ring_expected = ring
    size = ring_count.shape[0]
    n = counts.shape[1]
    for w in range(windows.shape[0]):
        for i in range(n):
            counts[w, i] = 0.0
            expected[w, i] = 0.0
        for j in range(1, windows[w]):
            row = (m - j) % size
            for i in range(n):
                counts[w, i] += ring_count[row, i]
                expected[w, i] += ring_expected[row, i]


# The running expectation sums of `_scan` differ from the newest-first ones of the exact
# test by rounding only (~1e-14 relative over a half hour of additions and subtractions).
SUM_SLACK = 1e-9


@njit(cache=True, nogil=True, inline="always")
def _may_pass(c: float, e: float, min_ratio: float, min_excess: float) -> bool:
    """Whether a window of `c` reports against `e` expected by the running sums may pass the
    guards of `is_candidate` (at least `min_ratio` times and `min_excess` more than
    expected): with the expectation lowered by far more than their rounding, so a window
    that passes by its exact sums always passes here."""
    low = e - SUM_SLACK * (1.0 + abs(e))
    return c >= min_ratio * low and c - low >= min_excess


@njit(cache=True, nogil=True, inline="always")
def _fracs(m: int) -> tuple[float, float]:
    """Minute m's place between two profile slots, for series on whole-hour and on
    half-hour UTC offsets (the weight of `Baseline._slots`)."""
    whole = ((m % 60) * 60 + 30) / 3600.0 - 0.5
    return whole % 1.0, (whole + 0.5) % 1.0


@njit(cache=True, nogil=True)
def _gather(hh: int, model: Model, calendar: Calendar, f0: F64, f1: F64) -> None:
    """`Baseline.factors` of half hour `hh` (minute // 30) for every series, into `f0`,
    `f1`: the profile x weekday level of the two slots its minutes fall between."""
    season, dow = model[3], model[4]
    h_first, slot0, slot1, weekday = calendar[0], calendar[1], calendar[2], calendar[3]
    s0, s1, wd = slot0[hh - h_first], slot1[hh - h_first], weekday[hh - h_first]
    for i in range(f0.shape[0]):
        day = np.float64(dow[i, wd[i]])
        f0[i] = np.float64(season[i, s0[i]]) * day
        f1[i] = np.float64(season[i, s1[i]]) * day


@njit(cache=True, nogil=True)
def _learn(
    first: int, end: int, count: F32, model: Model, calendar: Calendar, ok: Mask, rates: Rates
) -> None:
    """`Pipeline._learn` of the final minutes [first, end), the series `ok`:
    `Baseline.learn`'s factors (`_block_factors`), counts and middle-minute calendar,
    then `learn_block`."""
    size = count.shape[0]
    n = ok.shape[0]
    b = end - first
    factor = np.empty((n, b))
    x = np.empty((n, b))
    f0 = np.empty(n)
    f1 = np.empty(n)
    half = calendar[4]
    gathered = -1
    normalise = False
    for j in range(b):
        mj = first + j
        if mj % 60 == 0:
            normalise = True
        if mj // 30 != gathered:
            gathered = mj // 30
            _gather(gathered, model, calendar, f0, f1)
        frac_whole, frac_half = _fracs(mj)
        row = mj % size
        for i in range(n):
            frac = frac_half if half[i] else frac_whole
            factor[i, j] = max(f0[i] + (f1[i] - f0[i]) * frac, 0.05)
            x[i, j] = np.float64(count[row, i])
    h_first, slot0, slot1, weekday = calendar[0], calendar[1], calendar[2], calendar[3]
    mid = first + b // 2
    k = mid // 30 - h_first
    frac_whole, frac_half = _fracs(mid)
    fracs = np.empty(n)
    for i in range(n):
        fracs[i] = frac_half if half[i] else frac_whole
    middle = (slot0[k], slot1[k], fracs, weekday[k])
    learn_block(model, (factor, x, ok), middle, rates, normalise, SLOTS_PER_DAY)


@njit(cache=True, nogil=True)
def _candidate(
    ring: Ring, m: int, i: int, windows: I64, width: int, disp: float, guards: Guards
) -> bool:
    """Whether some window of series `i` ending at minute `m` is a surge candidate: the sums
    and the test of `window_scan` (newest minute first, the same order of additions)."""
    ring_count, ring_expected = ring
    size = ring_count.shape[0]
    nw = windows.shape[0]
    r = 1.0 / max(disp, 1e-9)
    acc_c = 0.0
    acc_e = 0.0
    k = 0
    for j in range(width):
        row = (m - j) % size
        acc_c += ring_count[row, i]
        acc_e += ring_expected[row, i]
        if j + 1 == windows[k]:
            if is_candidate(acc_c, acc_e, True, r, guards):
                return True
            k += 1
            if k == nw:
                break
    return False

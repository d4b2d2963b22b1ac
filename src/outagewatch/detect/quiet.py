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
from numba import njit
from numpy.typing import NDArray

from outagewatch.detect.cusum import cusum_step
from outagewatch.detect.kernels import is_candidate, learn_block
from outagewatch.detect.series import SLOTS_PER_DAY


@njit(cache=True, nogil=True)
def quiet_scan(
    m0: int,
    m1: int,
    ring_count: NDArray[np.float32],
    ring_expected: NDArray[np.float32],
    n: int,
    windows: NDArray[np.int64],
    level: NDArray[np.float64],
    nobs: NDArray[np.int32],
    disp: NDArray[np.float32],
    season: NDArray[np.float32],
    dow: NDArray[np.float32],
    weekend_seen: NDArray[np.bool_],
    born: NDArray[np.int64],
    h_first: int,
    slot0: NDArray[np.int64],
    slot1: NDArray[np.int64],
    weekday: NDArray[np.int64],
    half: NDArray[np.bool_],
    warmup: int,
    min_ratio: float,
    min_excess: float,
    log_alpha: float,
    zero_next: bool,
    stat: NDArray[np.float64],
    run_x: NDArray[np.float64],
    run_mu: NDArray[np.float64],
    ks: NDArray[np.float64],
    first: NDArray[np.int8],
    h: float,
    lateness: int,
    learn_len: int,
    final_until: int,
    learn_until: int,
    busy: NDArray[np.bool_],
    hot: NDArray[np.bool_],
    level_alpha: float,
    season_alpha: float,
    dow_alpha: float,
    disp_alpha: float,
) -> tuple[int, int, int]:
    """Scan minutes m0, m0+1, ... < m1 as ticks without incidents would; returns (k, new
    learn_until, learning steps): minutes < k are done, minute k (< m1) has a surge
    candidate and needs a full tick.

    A minute's tick, in the tick's order and arithmetic:

    - mu = level * max(f0 + (f1 - f0) * frac, 0.05) (`Baseline.season_factor`: f0, f1 the
      profile x weekday factors of the two slots of the minute's half hour, `frac` the
      minute's place between them) goes into the ring;
    - the windows ending at it are tested as `window_scan` does. A window can only be a
      candidate with at least `min_excess` reports in it, so only series with that many in
      their longest window (a running sum of whole counts: exact in any order) have their
      windows summed and tested (`_candidate`): a quiet minute costs O(series), not
      O(series x window);
    - the sequential test (detect.cusum; off when `h` <= 0; `first`: each series' first
      surge size, `first_sizes`) steps with the same mu; a minute where it fires is taken
      back and not done either (the tick fires it);
    - minute m - lateness becomes final; at the end of a learning block the baseline
      learns from it (`Baseline.learn` / `kernels.learn_block`, `busy[b]` the series
      that must not learn in the run's b-th block: maintenance), and the factors are
      gathered again.

    Series marked `hot` (those of services with an incident: the pipeline ticks them
    minute by minute itself, `Pipeline._quiet_run`) are not tested and do not learn; their
    sequential test is held at 0 here (the caller keeps and restores it) and the
    expectation written for them is overwritten by their ticks.

    `slot0`, `slot1`, `weekday` hold the calendar (the profile slots and the local weekday
    of every series) of the half hours h_first, h_first + 1, ... (minute // 30): they
    cover the run and the learning blocks that reach back before m0. With `zero_next`, the
    next minute's ring row is cleared once a minute is done, as `Pipeline._advance_minute`
    does between ticks.
    """
    ring = ring_count.shape[0]
    nw = windows.shape[0]
    width = windows.max()
    mu = np.empty(n)
    f0 = np.empty(n)
    f1 = np.empty(n)
    eligible = np.empty(n, np.bool_)
    for i in range(n):
        eligible[i] = nobs[i] >= warmup and not hot[i]
    fired = np.zeros(n, np.bool_)  # set only on a minute that is taken back (the tick's)
    ratio = np.zeros(n)
    saved_stat = np.empty((n, ks.shape[0]))
    saved_x = np.empty((n, ks.shape[0]))
    saved_mu = np.empty((n, ks.shape[0]))
    # Reports in the longest window ending at the minute before m0, per series.
    wsum = np.zeros(n)
    for k in range(1, width):
        row = (m0 - k) % ring
        for i in range(n):
            wsum[i] += ring_count[row, i]
    # Counts are whole numbers: below this no window of the series can pass the guards
    # (the margin only sends a few more series to the exact test).
    floor = min_excess - 0.5
    gathered = -1  # the half hour whose factors are in f0, f1 (-1: none, or stale)
    blocks = 0
    for m in range(m0, m1):
        hh = m // 30
        if hh != gathered:
            _gather(season, dow, slot0[hh - h_first], slot1[hh - h_first],
                    weekday[hh - h_first], n, f0, f1)  # fmt: skip
            gathered = hh
        whole = ((m % 60) * 60 + 30) / 3600.0 - 0.5
        frac_whole = whole % 1.0
        frac_half = (whole + 0.5) % 1.0
        newest = m % ring
        for i in range(n):
            frac = frac_half if half[i] else frac_whole
            mu[i] = level[i] * max(f0[i] + (f1[i] - f0[i]) * frac, 0.05)
            ring_expected[newest, i] = mu[i]
            wsum[i] += ring_count[newest, i]
        for i in range(n):
            if wsum[i] < floor or not eligible[i]:
                continue
            if _candidate(
                ring_count, ring_expected, m, i, windows, nw, width, disp[i], min_ratio,
                min_excess, log_alpha,
            ):  # fmt: skip
                return m, learn_until, blocks
        if h > 0.0:
            # Stepped at once (one pass of the statistic, not a would-it-fire pass and a
            # step); a minute where some series fires is taken back and left to the tick.
            saved_stat[:] = stat[:n]
            saved_x[:] = run_x[:n]
            saved_mu[:] = run_mu[:n]
            test = (stat, run_x, run_mu, ks, first, h)
            minute = (ring_count[newest], mu, disp, eligible)
            if cusum_step(test, minute, (min_ratio, min_excess, log_alpha), (fired, ratio)):
                stat[:n] = saved_stat
                run_x[:n] = saved_x
                run_mu[:n] = saved_mu
                return m, learn_until, blocks
        f = m - lateness
        if f >= final_until:
            if (f + 1) % learn_len == 0:
                lo = max(learn_until, f + 1 - learn_len)
                _learn(
                    lo, f + 1, m, ring_count, n, level, nobs, disp, season, dow,
                    weekend_seen, born, busy[blocks], hot, h_first, slot0, slot1, weekday, half,
                    level_alpha, season_alpha, dow_alpha, disp_alpha,
                )  # fmt: skip
                learn_until = f + 1
                blocks += 1
                gathered = -1  # the factors changed
                for i in range(n):
                    eligible[i] = nobs[i] >= warmup and not hot[i]
            final_until = f + 1
        oldest = (m - width + 1) % ring  # leaves the window of the next minute
        for i in range(n):
            wsum[i] -= ring_count[oldest, i]
        if zero_next:
            ring_count[(m + 1) % ring, :] = 0.0
    return m1, learn_until, blocks


@njit(cache=True, nogil=True)
def _gather(
    season: NDArray[np.float32],
    dow: NDArray[np.float32],
    s0: NDArray[np.int64],
    s1: NDArray[np.int64],
    wd: NDArray[np.int64],
    n: int,
    f0: NDArray[np.float64],
    f1: NDArray[np.float64],
) -> None:
    """`Baseline.factors`: profile x weekday level of the two slots, for every series."""
    for i in range(n):
        day = np.float64(dow[i, wd[i]])
        f0[i] = np.float64(season[i, s0[i]]) * day
        f1[i] = np.float64(season[i, s1[i]]) * day


@njit(cache=True, nogil=True)
def _learn(
    first: int,
    end: int,
    m: int,
    ring_count: NDArray[np.float32],
    n: int,
    level: NDArray[np.float64],
    nobs: NDArray[np.int32],
    disp: NDArray[np.float32],
    season: NDArray[np.float32],
    dow: NDArray[np.float32],
    weekend_seen: NDArray[np.bool_],
    born: NDArray[np.int64],
    busy: NDArray[np.bool_],
    hot: NDArray[np.bool_],
    h_first: int,
    slot0: NDArray[np.int64],
    slot1: NDArray[np.int64],
    weekday: NDArray[np.int64],
    half: NDArray[np.bool_],
    level_alpha: float,
    season_alpha: float,
    dow_alpha: float,
    disp_alpha: float,
) -> None:
    """`Pipeline._learn` of the final minutes [first, end) at the tick of minute m:
    `Baseline.learn`'s factors (`_block_factors`), counts and middle-minute calendar,
    then `learn_block`."""
    ring = ring_count.shape[0]
    b = end - first
    factor = np.empty((n, b))
    x = np.empty((n, b))
    f0 = np.empty(n)
    f1 = np.empty(n)
    gathered = -1
    normalise = False
    for j in range(b):
        mj = first + j
        if mj % 60 == 0:
            normalise = True
        hh = mj // 30
        if hh != gathered:
            _gather(season, dow, slot0[hh - h_first], slot1[hh - h_first],
                    weekday[hh - h_first], n, f0, f1)  # fmt: skip
            gathered = hh
        whole = ((mj % 60) * 60 + 30) / 3600.0 - 0.5
        fw = whole % 1.0
        fh = (whole + 0.5) % 1.0
        row = mj % ring
        for i in range(n):
            frac = fh if half[i] else fw
            factor[i, j] = max(f0[i] + (f1[i] - f0[i]) * frac, 0.05)
            x[i, j] = np.float64(ring_count[row, i])
    mid = first + b // 2
    k = mid // 30 - h_first
    whole = ((mid % 60) * 60 + 30) / 3600.0 - 0.5
    fracs = np.empty(n)
    ok = np.empty(n, np.bool_)
    for i in range(n):
        fracs[i] = (whole + 0.5) % 1.0 if half[i] else whole % 1.0
        ok[i] = not busy[i] and not hot[i] and born[i] <= m
    learn_block(
        (level, nobs, disp, season, dow, weekend_seen), (factor, x, ok),
        (slot0[k], slot1[k], fracs, weekday[k]),
        (level_alpha, season_alpha, dow_alpha, disp_alpha), normalise, SLOTS_PER_DAY,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def _candidate(
    ring_count: NDArray[np.float32],
    ring_expected: NDArray[np.float32],
    m: int,
    i: int,
    windows: NDArray[np.int64],
    nw: int,
    width: int,
    disp: float,
    min_ratio: float,
    min_excess: float,
    log_alpha: float,
) -> bool:
    """Whether some window of series `i` ending at minute `m` is a surge candidate: the sums
    and the test of `window_scan` (newest minute first, the same order of additions)."""
    ring = ring_count.shape[0]
    r = 1.0 / max(disp, 1e-9)
    acc_c = 0.0
    acc_e = 0.0
    k = 0
    for j in range(width):
        row = (m - j) % ring
        acc_c += ring_count[row, i]
        acc_e += ring_expected[row, i]
        if j + 1 == windows[k]:
            if is_candidate(acc_c, acc_e, True, r, (min_ratio, min_excess, log_alpha)):
                return True
            k += 1
            if k == nw:
                break
    return False

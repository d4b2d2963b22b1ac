"""Quiet minutes in one compiled step: what a run of ordinary ticks does, minute after minute,
while nothing can happen.

A tick with no open or recent incident and no surge candidate only writes the minute's
expectation into the ring (`ring_expected`) and, when the baseline's learning block ends,
learns. `quiet_scan` does the first part for a run of minutes inside one half hour and one
learning block (the factors of the baseline do not change within it), and stops at the
first minute where some window is a surge candidate: the pipeline gives that minute an
ordinary tick. The arithmetic is the tick's own (`Baseline.season_factor`, `window_scan`),
in the same order, so a quiet run leaves exactly the state the ticks would have.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from outagewatch.detect.cusum import cusum_fires, cusum_step
from outagewatch.detect.kernels import window_scan


@njit(cache=True, nogil=True)
def quiet_scan(
    m0: int,
    m1: int,
    ring_count: NDArray[np.float32],
    ring_expected: NDArray[np.float32],
    n: int,
    windows: NDArray[np.int64],
    level: NDArray[np.float64],
    f0: NDArray[np.float64],
    f1: NDArray[np.float64],
    half: NDArray[np.bool_],
    eligible: NDArray[np.bool_],
    min_ratio: float,
    min_excess: float,
    disp: NDArray[np.float32],
    log_alpha: float,
    zero_next: bool,
    stat: NDArray[np.float64],
    run_x: NDArray[np.float64],
    run_mu: NDArray[np.float64],
    ks: NDArray[np.float64],
    first: NDArray[np.int8],
    h: float,
) -> int:
    """Scan minutes m0, m0+1, ... < m1 as ticks would; returns the first minute with a surge
    candidate (not done: it needs a full tick), or m1.

    For each minute: mu = level * max(f0 + (f1 - f0) * frac, 0.05) (the baseline's
    expectation, `frac` the minute's place between the two profile slots) goes into the
    ring, and the windows ending at it are scanned. With `zero_next`, the next minute's ring
    row is cleared once a minute is done, as `Pipeline._advance_minute` does between ticks.

    The sequential test (detect.cusum; off when `h` <= 0) steps with the same `mu` as the
    tick's; a minute where it would fire is not done either (the tick fires it).
    """
    ring = ring_count.shape[0]
    nw = windows.shape[0]
    width = windows.max()
    sums = np.empty((n, nw))
    expected = np.empty((n, nw))
    candidate = np.empty((n, nw), np.bool_)
    mu = np.empty(n)
    rows = np.empty(width, np.int64)
    fired = np.zeros(n, np.bool_)  # never set: a minute that would fire is left to the tick
    ratio = np.zeros(n)
    for m in range(m0, m1):
        whole = ((m % 60) * 60 + 30) / 3600.0 - 0.5
        frac_whole = whole % 1.0
        frac_half = (whole + 0.5) % 1.0
        for i in range(n):
            frac = frac_half if half[i] else frac_whole
            mu[i] = level[i] * max(f0[i] + (f1[i] - f0[i]) * frac, 0.05)
        for k in range(width):
            rows[k] = (m - k) % ring
        found = window_scan(
            ring_count, ring_expected, rows, n, windows, mu, eligible,
            min_ratio, min_excess, disp, log_alpha, sums, expected, candidate,
        )  # fmt: skip
        if found:
            return m
        if h > 0.0:
            x = ring_count[m % ring]
            if cusum_fires(
                stat, run_x, run_mu, n, x, mu, disp, eligible, ks, first, h, min_ratio, min_excess
            ):
                return m
            cusum_step(
                stat, run_x, run_mu, n, x, mu, disp, eligible, ks, first, h, min_ratio, min_excess,
                fired, ratio,
            )  # fmt: skip
        if zero_next:
            ring_count[(m + 1) % ring, :] = 0.0
    return m1

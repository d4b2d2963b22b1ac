"""The count-aware surge test, vectorised over all series and several windows.

For every series and window w (minutes), S = reports in the last w minutes and E = what the
baseline expected for them. Under the baseline S is negative-binomial with mean E and
variance E + disp * E^2 (Poisson when disp -> 0): a small count on a quiet service is judged
by the Poisson tail, not by a z-score. A window is a *surge* when

    P(X >= S) < alpha,   S >= min_ratio * E,   S - E >= min_excess

The ratio guard keeps organic bumps (1.4-1.6x for an hour) out, however many reports they
bring; the excess guard keeps a handful of reports on a near-silent service out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.kernels import tail_sides
from outagewatch.settings import PipelineSettings


@dataclass(frozen=True, slots=True)
class Scores:
    fired: NDArray[np.bool_]  # a significant surge in at least one window
    ratio: NDArray[np.float64]  # observed / expected in the most significant window (fired)
    sums: NDArray[np.float64]  # (n, windows) reports in each window
    expected: NDArray[np.float64]  # (n, windows) what the baseline expected
    x: NDArray[np.floating[Any]]  # this minute's reports
    mu: NDArray[np.float64]  # this minute's expectation
    disp: NDArray[np.float64]
    w5: int  # column of the 5-minute window

    def elevated(self, idx: list[int]) -> NDArray[np.bool_]:
        """Whether the last 5 minutes of these series are clearly above normal (soft)."""
        i = np.asarray(idx, np.int64)
        s5 = self.sums[i, self.w5]
        e5 = self.expected[i, self.w5]
        high: NDArray[np.bool_] = s5 > np.maximum(1.5 * e5, e5 + 3.0 * sd_of(e5, self.disp[i]))
        out: NDArray[np.bool_] = high & (s5 - e5 >= 3.0)
        return out

    def hot(self, idx: list[int]) -> NDArray[np.bool_]:
        """Whether this minute of these series is clearly above normal (soft)."""
        i = np.asarray(idx, np.int64)
        return is_hot(self.x[i], self.mu[i], self.disp[i])


def nb_upper_tail(
    s: NDArray[np.float64], mean: NDArray[np.float64], disp: NDArray[np.float64]
) -> NDArray[np.float64]:
    """P(X >= s) for X ~ NB with the given mean and variance mean + disp * mean^2."""
    r = 1.0 / np.maximum(disp, 1e-9)
    q = mean / (r + mean)  # 1 - p
    out = np.ones_like(s, dtype=np.float64)
    pos = s > 0
    if pos.any():
        # Imported on first use: most replays and every quiet minute never get here.
        from scipy.special import betainc

        out[pos] = betainc(s[pos], r[pos], q[pos])
    return out


def nb_tail_below(
    s: NDArray[np.float64], mean: NDArray[np.float64], disp: NDArray[np.float64], alpha: float
) -> NDArray[np.bool_]:
    """Whether P(X >= s) < alpha for X ~ NB (mean, variance mean + disp * mean^2): what
    `nb_upper_tail(s, mean, disp) < alpha` says, decided where it can be by bounds of the
    tail (`kernels.tail_sides`, compiled), the exact tail (scipy's incomplete beta)
    computed only where they cannot decide. A window with a surge is far below alpha and an
    ordinary one far above, so the exact tail, and scipy's import (~0.3 s of a fresh
    process), are rarely needed."""
    s = np.asarray(s, np.float64)
    if not 0.0 < alpha < 1.0:
        exact_only: NDArray[np.bool_] = nb_upper_tail(s, mean, disp) < alpha
        return exact_only
    out = np.zeros(s.shape, np.bool_)
    at = np.flatnonzero(s > 0)
    mean = np.asarray(mean, np.float64)
    disp = np.asarray(disp, np.float64)
    r = 1.0 / np.maximum(disp[at], 1e-9)
    q = mean[at] / (r + mean[at])
    sides = np.empty(len(at), np.int8)
    tail_sides(np.ascontiguousarray(s[at]), r, q, math.log(alpha), sides)
    out[at[sides == 1]] = True
    exact = at[sides < 0]
    if len(exact):
        out[exact] = nb_upper_tail(s[exact], mean[exact], disp[exact]) < alpha
    return out


def sd_of(mean: NDArray[np.float64], disp: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sqrt(mean + disp * mean * mean)


def score(
    sums: NDArray[np.float64],
    expected: NDArray[np.float64],
    x: NDArray[np.floating[Any]],
    mu: NDArray[np.float64],
    disp: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    settings: PipelineSettings,
    *,
    candidate: NDArray[np.bool_] | None = None,
) -> Scores:
    """Score every series: which have a significant surge in some window.

    `sums` and `expected` are (n, len(settings.windows)); `x` and `mu` the last minute's
    count and expectation; `eligible` marks series warm enough to fire. The soft tests
    (`Scores.elevated`, `Scores.hot`) are computed only for the series that need them.
    `candidate` (windows passing the cheap guards) may be given when already computed.
    """
    n = len(x)
    if candidate is None:
        candidate = candidates(sums, expected, eligible, settings)
    fired = np.zeros(n, np.bool_)
    ratio = np.zeros(n, np.float64)
    if candidate.any():
        rows, cols = np.nonzero(candidate)
        e = np.maximum(expected[rows, cols], 1e-3)
        sig = nb_tail_below(sums[rows, cols], e, disp[rows], settings.alpha)
        fired[rows[sig]] = True
        np.maximum.at(ratio, rows[sig], sums[rows[sig], cols[sig]] / e[sig])
    w5 = settings.windows.index(5) if 5 in settings.windows else len(settings.windows) // 2
    return Scores(fired, ratio, sums, expected, x, mu, disp, w5)


def candidates(
    sums: NDArray[np.float64],
    expected: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    settings: PipelineSettings,
) -> NDArray[np.bool_]:
    """Windows that pass the cheap guards of a surge (ratio and excess) on eligible series."""
    out: NDArray[np.bool_] = (
        (sums >= settings.min_ratio * expected)
        & (sums - expected >= settings.min_excess)
        & eligible[:, None]
    )
    return out


def is_hot(
    x: NDArray[np.floating[Any]],
    mu: NDArray[np.float64],
    disp: NDArray[np.float64],
    z: float = 2.0,
) -> NDArray[np.bool_]:
    """One minute clearly above its expectation (used to find where a surge began and ended):
    more than 1.5x, more than z standard deviations and at least 1.5 reports above it."""
    return (x > np.maximum(1.5 * mu, mu + z * sd_of(mu, disp))) & (x - mu >= 1.5)

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

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import betainc

from outagewatch.settings import PipelineSettings


@dataclass(frozen=True, slots=True)
class Scores:
    fired: NDArray[np.bool_]  # a significant surge in at least one window
    elevated: NDArray[np.bool_]  # the last 5 minutes are clearly above normal (soft)
    hot: NDArray[np.bool_]  # this minute is clearly above normal (soft)
    ratio: NDArray[np.float64]  # observed / expected in the most significant window (fired)


def nb_upper_tail(
    s: NDArray[np.float64], mean: NDArray[np.float64], disp: NDArray[np.float64]
) -> NDArray[np.float64]:
    """P(X >= s) for X ~ NB with the given mean and variance mean + disp * mean^2."""
    r = 1.0 / np.maximum(disp, 1e-9)
    q = mean / (r + mean)  # 1 - p
    out = np.ones_like(s, dtype=np.float64)
    pos = s > 0
    if pos.any():
        out[pos] = betainc(s[pos], r[pos], q[pos])
    return out


def sd_of(mean: NDArray[np.float64], disp: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sqrt(mean + disp * mean * mean)


def score(
    sums: NDArray[np.float64],
    expected: NDArray[np.float64],
    x: NDArray[np.float64],
    mu: NDArray[np.float64],
    disp: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    settings: PipelineSettings,
) -> Scores:
    """Score every series.

    `sums` and `expected` are (n, len(settings.windows)); `x` and `mu` the last minute's
    count and expectation; `eligible` marks series warm enough to fire.
    """
    n = len(x)
    d = disp[:, None]
    candidate = (
        (sums >= settings.min_ratio * expected)
        & (sums - expected >= settings.min_excess)
        & eligible[:, None]
    )
    fired = np.zeros(n, np.bool_)
    ratio = np.zeros(n, np.float64)
    if candidate.any():
        rows, cols = np.nonzero(candidate)
        e = np.maximum(expected[rows, cols], 1e-3)
        p = nb_upper_tail(sums[rows, cols], e, np.broadcast_to(d, sums.shape)[rows, cols])
        sig = p < settings.alpha
        fired[rows[sig]] = True
        np.maximum.at(ratio, rows[sig], sums[rows[sig], cols[sig]] / e[sig])
    w5 = settings.windows.index(5) if 5 in settings.windows else len(settings.windows) // 2
    s5 = sums[:, w5]
    e5 = expected[:, w5]
    elevated = (s5 > np.maximum(1.5 * e5, e5 + 3.0 * sd_of(e5, disp))) & (s5 - e5 >= 3.0) & eligible
    hot = is_hot(x, mu, disp) & eligible
    return Scores(fired=fired, elevated=elevated, hot=hot, ratio=ratio)


def is_hot(
    x: NDArray[np.float64], mu: NDArray[np.float64], disp: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """One minute clearly above its expectation (used to find where a surge began and ended)."""
    return (x > np.maximum(1.5 * mu, mu + 2.0 * sd_of(mu, disp))) & (x - mu >= 1.5)

"""The sequential surge test: a CUSUM per series and per surge size, on the seasonal forecast.

For a series whose count X this minute is negative-binomial with mean mu (the baseline's
forecast) and dispersion r = 1 / disp (variance mu + mu^2 / r), the log-likelihood ratio of
"the rate is k times the forecast" against "it is the forecast" is

    l_k(x) = x * ln[k (mu + r) / (k mu + r)] + r * ln[(mu + r) / (k mu + r)]

(Poisson, r -> inf: x ln k - (k - 1) mu). Page's CUSUM S_k <- max(0, S_k + l_k(x)), one per
surge size k in `SURGE_SIZES`, alarms when S_k > h: for a given false-alarm rate it has the
least worst-case delay of any test of a k-fold rise (Lorden, Moustakides), and the set of
k covers 2x to 100x surges (each S_k is near-optimal for sizes near its k). Sizes below 3x
(S_2) are tested on a service's total series only (`first_sizes`): a country's or a
problem's forecast errs by more, for many minutes at a time (its own time zone, weekday and
growth), while the per-minute model treats errors as independent, so S_2 of a part climbs
on an organic 1.5x bump the forecast lags behind; the total averages those errors out, and
a 2x outage of a part alone is S_3's and the window test's.

The threshold h comes from a false-alarm budget, not from cases: `threshold(budget)` gives
h = ln(ARL) where ARL is the in-control run length (minutes) each CUSUM needs so that the
whole catalog opens at most `budget` false incidents per 1,000 service-days (a union bound
over SERIES_PER_SERVICE series and the surge sizes; ARL >= e^h for a CUSUM of likelihood
ratios, so h = ln(ARL) is on the safe side).

The guards of the window test apply to the run of the CUSUM (the minutes since S_k last
left 0): an alarm also needs the run's reports at least `min_ratio` times and `min_excess`
above what the forecast expected, so an organic bump of 1.5x, however long, never alarms.
After an alarm every S_k of the series restarts from 0.

A minute with no reports only lowers S_k (l_k(0) < 0), so a run of such minutes has a
closed form: `cusum_skip` (S_k <- max(0, S_k + sum of l_k(0)) and the run sums with it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from outagewatch.detect.kernels import F64, Guards, Mask, Minute

SURGE_SIZES: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
WHOLE_SERVICE_BELOW = 3.0  # surge sizes below this are tested on total series only
SERIES_PER_SERVICE = 8  # series a service typically has (total, countries, problems)
MINUTES_PER_DAY = 1440


def threshold(budget_per_1000_service_days: float, sizes: int = len(SURGE_SIZES)) -> float:
    """h for at most `budget` false alarms per 1,000 service-days (see the module doc)."""
    arl = 1000.0 * MINUTES_PER_DAY / budget_per_1000_service_days
    return math.log(arl * SERIES_PER_SERVICE * sizes)


def zero_increment(
    mu: NDArray[np.float64], disp: NDArray[np.floating], ks: NDArray[np.float64]
) -> NDArray[np.float64]:
    """l_k(0) = r ln[(mu + r) / (k mu + r)] for every series (rows) and surge size (columns)."""
    r = 1.0 / np.maximum(np.asarray(disp, np.float64), 1e-9)[:, None]
    m = np.maximum(mu, 1e-3)[:, None]
    out: NDArray[np.float64] = r * np.log((m + r) / (ks[None, :] * m + r))
    return out


def cusum_skip(
    stat: NDArray[np.float64],
    run_x: NDArray[np.float64],
    run_mu: NDArray[np.float64],
    rows: NDArray[np.int64],
    zero_sum: NDArray[np.float64],
    mu_sum: NDArray[np.float64],
) -> None:
    """A run of minutes without reports for the series `rows`, in closed form.

    `zero_sum` is (len(rows), len(SURGE_SIZES)): the sum over the run of `zero_increment`
    of each minute's forecast; `mu_sum` (len(rows),) the sum of the forecasts. Exactly
    what stepping minute by minute with x = 0 gives (no alarm can happen in such a run).
    """
    s = stat[rows] + zero_sum
    ended = s <= 0.0
    stat[rows] = np.where(ended, 0.0, s)
    run_x[rows] = np.where(ended, 0.0, run_x[rows])
    run_mu[rows] = np.where(ended, 0.0, run_mu[rows] + mu_sum[:, None])


def first_sizes(kind: NDArray[np.int8], sizes: tuple[float, ...] = SURGE_SIZES) -> NDArray[np.int8]:
    """Per series, the index in `sizes` of the first size its CUSUMs test: every size on a
    service's total series (kind 0), from WHOLE_SERVICE_BELOW up on its parts (module doc)."""
    skip = sum(1 for k in sizes if k < WHOLE_SERVICE_BELOW)
    out: NDArray[np.int8] = np.where(kind == 0, 0, skip).astype(np.int8)
    return out


@njit(cache=True, nogil=True, inline="always")
def _llr(x: float, mu: float, r: float, log_base: float, k: float) -> float:
    """l_k(x) of the module doc, given log_base = ln(mu + r)."""
    d = log_base - math.log(k * mu + r)  # ln[(mu + r) / (k mu + r)]
    return x * (math.log(k) + d) + r * d


@njit(cache=True, nogil=True, inline="always")
def _alarm(s: float, x: float, mu: float, h: float, min_ratio: float, min_excess: float) -> bool:
    """S_k past h, and the run's reports past the window test's guards (module doc)."""
    return s > h and x >= min_ratio * mu and x - mu >= min_excess


Sequential = tuple[F64, F64, F64, F64, NDArray[np.int8], float]
"""The sequential test of every series, (stat, run_x, run_mu, ks, first, h): its state (S_k
and the run's reports and expectation: (series, sizes)), the surge sizes k, each series'
first size (`first_sizes`) and the threshold (`Pipeline._sequential_test`)."""
Alarms = tuple[Mask, F64]
"""(fired, ratio): which series fired, and the run's observed/expected ratio where so."""


@njit(cache=True, nogil=True)
def cusum_step(test: Sequential, minute: Minute, guards: Guards, alarms: Alarms) -> bool:
    """One minute of every series' CUSUMs (in place). Marks `fired` (and the run's
    observed/expected `ratio`) where an alarm passes the guards, and restarts those series.
    Series not `eligible` (not warm) are held at 0. Returns whether any fired."""
    stat, run_x, run_mu, ks, first, h = test
    x, mu, disp, eligible = minute
    min_ratio, min_excess, _ = guards
    fired, ratio = alarms
    n = mu.shape[0]
    any_fired = False
    nk = ks.shape[0]
    log_k = np.empty(nk)  # ln k once per call, not per series-minute (the same values)
    for j in range(nk):
        log_k[j] = math.log(ks[j])
    for i in range(n):
        if not eligible[i]:
            for j in range(nk):
                stat[i, j] = 0.0
                run_x[i, j] = 0.0
                run_mu[i, j] = 0.0
            continue
        xi = x[i]
        if xi == 0.0:
            idle = True
            for j in range(nk):
                if stat[i, j] != 0.0:
                    idle = False
                    break
            if idle:
                continue  # S stays 0 (a quiet minute only lowers it): the common case
        r = 1.0 / max(disp[i], 1e-9)
        m = max(mu[i], 1e-3)
        log_base = math.log(m + r)
        alarm = False
        best = 0.0
        for j in range(first[i], nk):
            d = log_base - math.log(ks[j] * m + r)  # `_llr`, with ln k computed above
            s = stat[i, j] + (xi * (log_k[j] + d) + r * d)
            if s <= 0.0:
                stat[i, j] = 0.0
                run_x[i, j] = 0.0
                run_mu[i, j] = 0.0
                continue
            stat[i, j] = s
            run_x[i, j] += xi
            run_mu[i, j] += m
            if _alarm(s, run_x[i, j], run_mu[i, j], h, min_ratio, min_excess):
                alarm = True
                best = max(best, run_x[i, j] / run_mu[i, j])
        if alarm:
            fired[i] = True
            ratio[i] = max(ratio[i], best)
            any_fired = True
            for j in range(nk):
                stat[i, j] = 0.0
                run_x[i, j] = 0.0
                run_mu[i, j] = 0.0
    return any_fired

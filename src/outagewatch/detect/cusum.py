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

Guards on the run of the CUSUM (the minutes since S_k last left 0): an alarm also needs
the run's reports `min_excess` above what the forecast expected, and at least `ratio` times
the forecast corrected for its recent bias, so that an organic bump, however long, never
alarms:

- `ratio = guard_ratio(min_ratio, organic_ratio)`: the ratio at which the run's likelihood
  under "min_ratio x the forecast" (the smallest outage) equals that under "organic_ratio
  x the forecast" (the largest organic bump), (min_ratio - organic) / ln(min_ratio /
  organic), ~1.79 for 2 and 1.6. A guard of min_ratio itself passes a min_ratio-fold
  outage only half the time (its run's ratio is as often below 2 as above).
- the bias: how far the forecast has been running low in the hour before the run (an
  EWMA of the observed counts and of the forecasts, half-life `BIAS_HALF_LIFE_MIN`,
  frozen while the series is in a run), as the lower one-standard-error bound of
  observed / forecast (Poisson error of the EWMA) and never below 1: a bump on a
  forecast that has been low does not pass, and a forecast running high or noise at low
  rates never loosens the guard. It is kept per series (`recent`), not read from the
  ring, whose history depends on how reports were batched.

After an alarm every S_k of the series restarts from 0.

A minute with no reports only lowers S_k (l_k(0) < 0), so a run of such minutes has a
closed form: `cusum_skip` (S_k <- max(0, S_k + sum of l_k(0)) and the run sums with it).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.kernels import F64, Guards, Mask, Minute
from outagewatch.jit import njit

SURGE_SIZES: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
WHOLE_SERVICE_BELOW = 3.0  # surge sizes below this are tested on total series only
SERIES_PER_SERVICE = 8  # series a service typically has (total, countries, problems)
MINUTES_PER_DAY = 1440
BIAS_HALF_LIFE_MIN = 60.0  # the forecast's recent bias: the last hour before a run
BIAS_DECAY = 0.5 ** (1.0 / BIAS_HALF_LIFE_MIN)
RECENT_COLUMNS = 4  # EWMA of counts, of forecasts; the two as they were when the run began


def guard_ratio(min_ratio: float, organic_ratio: float) -> float:
    """The run ratio above which "min_ratio x forecast" is likelier than "organic_ratio x
    forecast" (Poisson; module doc)."""
    return (min_ratio - organic_ratio) / math.log(min_ratio / organic_ratio)


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
    what stepping minute by minute with x = 0 gives (no alarm can happen in such a run),
    for the statistic and the run sums; the guard's bias EWMAs (`recent`) are not stepped.
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
def _alarm(
    s: float, x: float, mu: float, h: float, ratio: float, bias: float, min_excess: float
) -> bool:
    """S_k past h, and the run's reports past the guards (module doc)."""
    return s > h and x >= ratio * bias * mu and x - mu >= min_excess


@njit(cache=True, nogil=True, inline="always")
def _bias(obs: float, exp: float) -> float:
    """The forecast's bias before the run from its EWMAs (module doc): the lower
    one-standard-error bound of obs / exp, at least 1."""
    if exp <= 0.0:
        return 1.0
    se = math.sqrt(max(obs, 0.0) * (1.0 - BIAS_DECAY) / (1.0 + BIAS_DECAY))
    return max(1.0, (obs - se) / exp)


# The bound of `_falls_to_zero` must clear the rounding of the exact step by far: it errs
# by a few units in the last place of its terms (~1e-15 relative), this by 1e-9.
BOUND_SLACK = 1e-9


@njit(cache=True, nogil=True, inline="always")
def _falls_to_zero(s0: float, x: float, log_k: float, k_mu: float, mu: float, r: float) -> bool:
    """Whether S_k + l_k(x) <= 0 surely, from a bound that needs no logarithm: l_k(x) =
    x ln k + (x + r) ln(1 - y) with y = (k - 1) mu / (k mu + r), and ln(1 - y) <= -y. When
    it says so, the exact step gives S_k = 0 too (the bound's slack is far above the
    rounding of either), so the test's results are the same, bit for bit, with or without
    it. Sizes well past a small series' reports (k = 100 for one report where ~0.1 were
    expected) and the last minute of a run falling back to 0 take this path. Multiplied
    through by k mu + r (> 0): no division either."""
    gain = (s0 + x * log_k) * (k_mu + r)
    loss = (x + r) * (k_mu - mu)  # (x + r) y, times k mu + r
    return gain - loss < -BOUND_SLACK * (abs(gain) + loss + k_mu + r)


Sequential = tuple[F64, F64, F64, F64, F64, NDArray[np.int8], float, float]
"""The sequential test of every series, (stat, run_x, run_mu, recent, ks, first, h, ratio):
its state (S_k and the run's reports and expectation: (series, sizes); the forecast-bias
EWMAs: (series, RECENT_COLUMNS)), the surge sizes k, each series' first size
(`first_sizes`), the threshold h and the run's ratio guard (`guard_ratio`: not `Guards`'
min_ratio, which the window test keeps). Built by `Pipeline._sequential_test`."""
Alarms = tuple[Mask, F64]
"""(fired, ratio): which series fired, and the run's observed/expected ratio where so."""


@njit(cache=True, nogil=True, inline="always")
def cusum_step(test: Sequential, minute: Minute, guards: Guards, alarms: Alarms) -> bool:
    """One minute of every series' CUSUMs (in place). Marks `fired` (and the run's
    observed/expected `ratio`) where an alarm passes the guards (the test's own ratio guard,
    `guard_ratio`, and the excess of `guards`), and restarts those series. The test's
    `recent` (series, RECENT_COLUMNS), the forecast-bias EWMAs (module doc), are stepped
    here. Series not `eligible` (not warm) are held at 0 and their EWMAs left alone.
    Returns whether any fired."""
    stat, run_x, run_mu, recent, ks, first, h, guard = test
    x, mu, disp, eligible = minute
    min_excess = guards[1]
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
        m = max(mu[i], 1e-3)
        idle = True
        for j in range(nk):
            if stat[i, j] != 0.0:
                idle = False
                break
        if idle:  # not in a run: the EWMAs as they were before this minute
            recent[i, 2] = recent[i, 0]
            recent[i, 3] = recent[i, 1]
        recent[i, 0] = BIAS_DECAY * recent[i, 0] + (1.0 - BIAS_DECAY) * xi
        recent[i, 1] = BIAS_DECAY * recent[i, 1] + (1.0 - BIAS_DECAY) * m
        if xi == 0.0 and idle:
            continue  # S stays 0 (a quiet minute only lowers it): the common case
        r = 1.0 / max(disp[i], 1e-9)
        log_base = math.nan  # ln(mu + r), computed when some S_k needs it
        bias = -1.0  # computed when some S_k passes h
        alarm = False
        best = 0.0
        for j in range(first[i], nk):
            if xi == 0.0 and stat[i, j] == 0.0:
                # S_k stays 0 (l_k(0) < 0, as below): no logarithm needed.
                run_x[i, j] = 0.0
                run_mu[i, j] = 0.0
                continue
            if _falls_to_zero(stat[i, j], xi, log_k[j], ks[j] * m, m, r):
                s = 0.0  # what the step below would give, without its logarithms
            else:
                if math.isnan(log_base):
                    log_base = math.log(m + r)
                d = log_base - math.log(ks[j] * m + r)  # ln[(mu + r) / (k mu + r)]: l_k
                s = stat[i, j] + (xi * (log_k[j] + d) + r * d)
            if s <= 0.0:
                stat[i, j] = 0.0
                run_x[i, j] = 0.0
                run_mu[i, j] = 0.0
                continue
            stat[i, j] = s
            run_x[i, j] += xi
            run_mu[i, j] += m
            if s > h and bias < 0.0:
                bias = _bias(recent[i, 2], recent[i, 3])
            if _alarm(s, run_x[i, j], run_mu[i, j], h, guard, bias, min_excess):
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

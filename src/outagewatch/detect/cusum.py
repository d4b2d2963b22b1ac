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

from outagewatch.detect.kernels import F64, I64, Guards, Mask, Minute
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


# The natural logarithm by fdlibm's method (e_log.c): x = 2^k (1 + f) with 1 + f in
# [sqrt(2)/2, sqrt(2)); ln(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), R a
# minimax polynomial (its coefficients LG); k ln 2 added in two parts (exact high + low).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LG = (
    6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
    2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
    1.479819860511658591e-01,
)  # fmt: skip
_SQRT_HALF = 0x3FE6A09E << 32  # the bits of ~sqrt(2)/2 (its high word): the reduction's edge
_REDUCE = (0x3FF00000 << 32) - _SQRT_HALF  # a mantissa at or past it carries into k
_MANTISSA = (1 << 52) - 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def log_into(a: F64, out: F64, bits: I64) -> None:
    """out[i] = ln a[i] for every positive, normal, finite a[i] (the CUSUMs' arguments, mu +
    r and k mu + r with mu >= 1e-3 and r = 1 / disp, always are), within one unit in the last
    place (fdlibm's method, above), in loops without calls or branches, which the compiler
    runs 4 or 8 values at a time: libm's `log` is a call per value (a third of the test's
    time, when it was one per series and surge size a minute). `bits` is scratch of a's
    length; `out` may be `a`. The same inputs give the same bits wherever it runs (scalar
    or vector code: the same IEEE operations in the same order, none fused)."""
    n = a.shape[0]
    ia = a.view(np.int64)
    for i in range(n):
        hx = ia[i] + _REDUCE
        bits[i] = (hx & _MANTISSA) + _SQRT_HALF  # 1 + f, in [sqrt(2)/2, sqrt(2))
        out[i] = np.float64((hx >> 52) - 0x3FF)  # k
    one_f = bits.view(np.float64)
    for i in range(n):
        f = one_f[i] - 1.0
        hfsq = 0.5 * f * f
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        t1 = w * (LG[1] + w * (LG[3] + w * LG[5]))
        t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])))
        k = out[i]
        out[i] = s * (hfsq + (t2 + t1)) + k * LN2_LO - hfsq + f + k * LN2_HI


Sequential = tuple[F64, F64, F64, F64, F64, NDArray[np.int8], float, float]
"""The sequential test of every series, (stat, run_x, run_mu, recent, ks, first, h, ratio):
its state (S_k and the run's reports and expectation: (series, sizes); the forecast-bias
EWMAs: (series, RECENT_COLUMNS)), the surge sizes k, each series' first size
(`first_sizes`), the threshold h and the run's ratio guard (`guard_ratio`: not `Guards`'
min_ratio, which the window test keeps). Built by `Pipeline._sequential_test`."""
Alarms = tuple[Mask, F64]
"""(fired, ratio): which series fired, and the run's observed/expected ratio where so."""


Columns = tuple[F64, F64, F64, F64]
"""The state of `Sequential` for series [0, n) by columns, as `step_columns` steps it: S_k,
the run's reports and expectation ((sizes, series) each) and the bias EWMAs
((RECENT_COLUMNS, series)). `to_columns` and `from_columns` copy it from and to the rows."""
Scratch = tuple[F64, F64, F64, F64, F64, I64, Mask]
"""`step_columns`' working arrays, (series,) each: mu (at least 1e-3), r = 1 / disp,
ln(mu + r), the argument and value of the other logarithm, their bits, and which series
are in a run (some S_k > 0). Made by `scratch`."""


@njit(cache=True, nogil=True)
def to_columns(test: Sequential, n: int) -> Columns:
    """The state of series [0, n) of `test`, by columns (a copy)."""
    stat, run_x, run_mu, recent = test[0], test[1], test[2], test[3]
    nk = stat.shape[1]
    cols = (
        np.empty((nk, n)), np.empty((nk, n)), np.empty((nk, n)),
        np.empty((recent.shape[1], n)),
    )  # fmt: skip
    for i in range(n):
        for j in range(nk):
            cols[0][j, i] = stat[i, j]
            cols[1][j, i] = run_x[i, j]
            cols[2][j, i] = run_mu[i, j]
        for j in range(recent.shape[1]):
            cols[3][j, i] = recent[i, j]
    return cols


@njit(cache=True, nogil=True)
def from_columns(cols: Columns, test: Sequential, n: int) -> None:
    """Write `cols` (`to_columns`) back into the rows of series [0, n) of `test`."""
    stat, run_x, run_mu, recent = test[0], test[1], test[2], test[3]
    for i in range(n):
        for j in range(stat.shape[1]):
            stat[i, j] = cols[0][j, i]
            run_x[i, j] = cols[1][j, i]
            run_mu[i, j] = cols[2][j, i]
        for j in range(recent.shape[1]):
            recent[i, j] = cols[3][j, i]


@njit(cache=True, nogil=True)
def scratch(n: int) -> Scratch:
    """`step_columns`' working arrays for n series."""
    return (
        np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int64),
        np.empty(n, np.bool_),
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def step_columns(cols: Columns, minute: Minute, test: Sequential, work: Scratch) -> bool:
    """One minute of every series' CUSUMs (module doc), on the state by columns (in place),
    without the guards: returns whether some S_k passed h, and `alarms_of` then looks at
    those series. The bias EWMAs are stepped here. Series not `eligible` (not warm) are held
    at 0 and their EWMAs left alone; sizes below a series' first are left as they are.

    Each S_k steps as S_k <- S_k + x (ln k + d) + r d, d = ln(mu + r) - ln(k mu + r), and
    ends its run (S_k, run sums <- 0) when that is <= 0, or when x = 0 and S_k = 0 (it
    stays 0: l_k(0) < 0). Every series and size is computed, in loops without branches,
    which the compiler runs 4 or 8 series at a time (with `log_into`): cheaper than
    skipping the quiet ones one by one."""
    stat, run_x, run_mu, recent = cols
    x, mu, disp, eligible = minute
    ks, first, h = test[4], test[5], test[6]
    m, r, log_base, arg, log_arg, bits, running = work
    n = m.shape[0]
    for i in range(n):
        running[i] = False
    for j in range(ks.shape[0]):
        sj = stat[j]
        for i in range(n):
            running[i] |= sj[i] != 0.0
    for i in range(n):
        m[i] = max(mu[i], 1e-3)
        r[i] = 1.0 / max(np.float64(disp[i]), 1e-9)
        arg[i] = m[i] + r[i]
    # Rows as arrays of their own, and few arrays a loop: the compiler then can tell the
    # rows written from those read (one array's rows might overlap, for all it knows) in
    # few checks, and vectorizes the loop.
    obs, exp, obs_before, exp_before = recent[0], recent[1], recent[2], recent[3]
    for i in range(n):
        # Not in a run: the EWMAs as they were before this minute are the run's (module doc).
        restart = eligible[i] and not running[i]
        o, e = obs[i], exp[i]
        obs_before[i] = o if restart else obs_before[i]
        exp_before[i] = e if restart else exp_before[i]
        obs[i] = BIAS_DECAY * o + (1.0 - BIAS_DECAY) * np.float64(x[i]) if eligible[i] else o
        exp[i] = BIAS_DECAY * e + (1.0 - BIAS_DECAY) * m[i] if eligible[i] else e
    log_into(arg, log_base, bits)
    passed = False
    for j in range(ks.shape[0]):
        k = ks[j]
        log_k = math.log(k)
        for i in range(n):
            arg[i] = k * m[i] + r[i]
        log_into(arg, log_arg, bits)
        sj, xj, mj = stat[j], run_x[j], run_mu[j]
        for i in range(n):
            xi = np.float64(x[i])
            s0 = sj[i]
            d = log_base[i] - log_arg[i]  # ln[(mu + r) / (k mu + r)]
            s = s0 + (xi * (log_k + d) + r[i] * d)
            held = eligible[i] and j < first[i]
            keep = eligible[i] and j >= first[i] and s > 0.0 and (xi != 0.0 or s0 != 0.0)
            sj[i] = s0 if held else (s if keep else 0.0)
            xj[i] = xj[i] if held else (xj[i] + xi if keep else 0.0)
            mj[i] = mj[i] if held else (mj[i] + m[i] if keep else 0.0)
            passed |= keep and s > h
    return passed


@njit(cache=True, nogil=True)
def alarms_of(cols: Columns, test: Sequential, guards: Guards, alarms: Alarms) -> bool:
    """After `step_columns`: marks `fired` (and the run's observed/expected `ratio`) where
    some S_k past h passes the guards (the test's own ratio guard, `guard_ratio`, and the
    excess of `guards`), and restarts those series (every S_k and run sum <- 0). Returns
    whether any fired."""
    stat, run_x, run_mu, recent = cols
    first, h, guard = test[5], test[6], test[7]
    min_excess = guards[1]
    fired, ratio = alarms
    any_fired = False
    for i in range(stat.shape[1]):
        bias = -1.0  # computed when some S_k passes h
        alarm = False
        best = 0.0
        for j in range(first[i], stat.shape[0]):
            s = stat[j, i]
            if s > h and bias < 0.0:
                bias = _bias(recent[2, i], recent[3, i])
            if _alarm(s, run_x[j, i], run_mu[j, i], h, guard, bias, min_excess):
                alarm = True
                best = max(best, run_x[j, i] / run_mu[j, i])
        if alarm:
            fired[i] = True
            ratio[i] = max(ratio[i], best)
            any_fired = True
            for j in range(stat.shape[0]):
                stat[j, i] = 0.0
                run_x[j, i] = 0.0
                run_mu[j, i] = 0.0
    return any_fired


@njit(cache=True, nogil=True, error_model="numpy")  # as step_columns, inlined here
def cusum_step(test: Sequential, minute: Minute, guards: Guards, alarms: Alarms) -> bool:
    """One minute of every series' CUSUMs (in place; `step_columns`). Marks `fired` (and the
    run's observed/expected `ratio`) where an alarm passes the guards (`alarms_of`), and
    restarts those series. Returns whether any fired."""
    n = minute[1].shape[0]
    cols = to_columns(test, n)
    fired = step_columns(cols, minute, test, scratch(n)) and alarms_of(cols, test, guards, alarms)
    from_columns(cols, test, n)
    return fired

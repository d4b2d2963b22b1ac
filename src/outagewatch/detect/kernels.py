"""Compiled inner loops of the tick (numba), for what numpy would do in a dozen passes.

Each kernel is a plain loop over the series; numba compiles it once per machine and caches
the machine code next to this file.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from outagewatch.jit import njit

# The kernels take their arrays and numbers in bundles (numba passes tuples of arrays and
# numbers as they are, at no cost per call); each is built in one place on the Python side.
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Mask = NDArray[np.bool_]
Ring = tuple[F32, F32]
"""`Series`' ring of recent minutes, (ring_count, ring_expected): row minute % ring."""
Model = tuple[F64, NDArray[np.int32], F32, F32, F32, Mask]
"""The baseline of every series, (level, nobs, disp, season, dow, weekend_seen):
`Series.model`."""
Rates = tuple[float, float, float, float]
"""The baseline's learning rates (level, season, weekday, dispersion): `Baseline.rates`."""
Guards = tuple[float, float, float]
"""(min_ratio, min_excess, log_alpha): the least ratio and excess of a surge's reports over
their expectation, and the window test's alpha (`Pipeline._guards`)."""
Minute = tuple[F32, F64, F32, Mask]
"""A minute of every series as the tests read it, (x, mu, disp, eligible): its reports,
expectation and dispersion, and whether it is warm. The series are those of `mu`."""
Windows = tuple[F64, F64, Mask]
"""`window_scan`'s results, (sums, expected, candidate): each (series, windows)."""


@njit(cache=True, nogil=True)
def window_scan(
    ring: Ring, rows: I64, windows: I64, minute: Minute, guards: Guards, out: Windows
) -> bool:
    """One pass over the newest minutes of every series.

    Writes this minute's expectation `mu` into the ring (row `rows[0]`), the sums of counts
    and of expectations over each window (`sums`, `expected` of `out`), and which
    windows may be a surge (`candidate`): they pass the ratio and excess guards, and the
    negative-binomial probability of exactly S, a lower bound of P(X >= S), is below alpha
    (so no window that the exact tail would call significant is ever dropped). Returns
    whether any window is a candidate.
    """
    ring_count, ring_expected = ring
    _, mu, disp, eligible = minute
    sums, expected, candidate = out
    n = mu.shape[0]
    newest = rows[0]
    for i in range(n):
        ring_expected[newest, i] = mu[i]
    sums[:n] = 0.0
    expected[:n] = 0.0
    k = 0
    acc_c = np.zeros(n)
    acc_e = np.zeros(n)
    for j in range(rows.shape[0]):
        row = rows[j]
        for i in range(n):
            acc_c[i] += ring_count[row, i]
            acc_e[i] += ring_expected[row, i]
        if j + 1 == windows[k]:
            for i in range(n):
                sums[i, k] = acc_c[i]
                expected[i, k] = acc_e[i]
            k += 1
            if k == windows.shape[0]:
                break
    found = False
    for i in range(n):
        ok = eligible[i]
        r = 1.0 / max(disp[i], 1e-9)
        for w in range(windows.shape[0]):
            c = is_candidate(sums[i, w], expected[i, w], ok, r, guards)
            candidate[i, w] = c
            found = found or c
    return found


@njit(cache=True, nogil=True, inline="always")
def is_candidate(sw: float, e: float, ok: bool, r: float, guards: Guards) -> bool:
    """Whether a window with `sw` reports against `e` expected (series eligible: `ok`,
    dispersion 1 / r) may be a surge: the guards, then the NB probability of exactly sw
    (a lower bound of the tail) below alpha. Needs sw >= min_excess (e >= 0)."""
    min_ratio, min_excess, log_alpha = guards
    c = ok and sw >= min_ratio * e
    c = c and sw - e >= min_excess
    if c:
        ew = max(e, 1e-3)
        # log NB pmf at sw with mean ew and variance ew + ew^2 / r
        log_pmf = (
            math.lgamma(sw + r) - math.lgamma(r) - math.lgamma(sw + 1.0)
            + r * math.log(r / (r + ew)) + sw * math.log(ew / (r + ew))
        )  # fmt: skip
        c = log_pmf < log_alpha
    return c


# Bounds of the tail decide only with this relative margin; nearer alpha, the exact tail does.
BOUND_MARGIN = 1e-9
BOUND_TERMS = 400  # at most this many terms summed before the exact tail is asked


@njit(cache=True, nogil=True)
def tail_sides(s: F64, r: F64, q: F64, log_alpha: float, out: NDArray[np.int8]) -> None:
    """Whether each NB tail P(X >= s[i]) (s > 0; r = 1 / disp, q = mean / (r + mean)) is
    below exp(log_alpha), from bounds: out[i] 1 below, 0 not below, -1 when they cannot
    tell (`scorer.nb_tail_below` then asks the exact tail).

    With t_k = P(s + k) / P(s) (t_0 = 1, t_(k+1) = t_k q (s + k + r) / (s + k + 1)), the
    tail is P(s) (t_0 + ... + t_(K-1) + the rest), the rest being at least 0 and at most
    t_K / (1 - rho_K): rho_K bounds the ratio of successive probabilities beyond s + K, q (s
    + K + r) / (s + K + 1) when r >= 1 (the ratio falls with x), q when r < 1 (it rises
    towards q). Terms are added until the bounds are clear of alpha by a relative
    `BOUND_MARGIN` (far wider than the rounding of either computation) on one side."""
    for i in range(s.shape[0]):
        si, ri, qi = s[i], r[i], q[i]
        if qi <= 0.0:
            out[i] = 1  # all the mass is at 0
            continue
        log_pmf = (
            math.lgamma(si + ri) - math.lgamma(ri) - math.lgamma(si + 1.0)
            + ri * math.log1p(-qi) + si * math.log(qi)
        )  # fmt: skip
        out[i] = -1
        summed = 0.0
        t = 1.0
        for k in range(BOUND_TERMS):
            summed += t
            if log_pmf + math.log(summed) >= log_alpha + BOUND_MARGIN:
                out[i] = 0  # the tail is at least the terms so far
                break
            t *= qi * (si + k + ri) / (si + k + 1.0)
            rho = qi * max(1.0, (si + k + 1.0 + ri) / (si + k + 2.0))
            if rho < 1.0:
                rest = t / (1.0 - rho)  # the geometric bound of the rest
                if log_pmf + math.log(summed + rest) < log_alpha - BOUND_MARGIN:
                    out[i] = 1  # the tail is at most the terms so far and the rest
                    break
            if t == 0.0:
                break


WARM_NOBS = 60  # minutes learned before `learn_block` clips odd minutes and learns dispersion


Block = tuple[F64, F64, Mask]
"""A learning block, (factor, x, ok): each series' expectation factor (profile x weekday
level) and final count of each minute (both (series, minutes)), and whether it learns."""
Middle = tuple[I64, I64, F64, I64]
"""A block's middle minute in each series' calendar, (s0, s1, frac, weekday): between
profile slots s0 and s1 (`frac` of the way), on local `weekday` (holiday: 6)."""


@njit(cache=True, nogil=True, error_model="numpy")  # no divisor can be 0 here
def learn_block(
    model: Model, block: Block, middle: Middle, rates: Rates, normalise: bool, slots_per_day: int
) -> None:
    """The baseline's learning step for a block of final minutes (see `Baseline.learn`).

    `block` holds its minutes (`Block`), `middle` the calendar of its middle minute
    (`Middle`); series not `ok` learn nothing. The profile learns the shape of a day, the
    weekday factor its level, each relative to the other; `normalise` moves the scale of
    both into the level (profile blocks mean 1, weekday factors mean 1).
    """
    level, nobs, disp, season, dow, weekend_seen = model
    factor, x, ok = block
    s0, s1, frac, weekday = middle
    level_alpha, season_alpha, dow_alpha, disp_alpha = rates
    n, b = x.shape
    a_block = 1.0 - (1.0 - level_alpha) ** b
    w = 1.0 - (1.0 - season_alpha) ** b
    wdow = 1.0 - (1.0 - dow_alpha) ** b
    wd = 1.0 - (1.0 - disp_alpha) ** b
    slots = season.shape[1]
    # The block's sums of every series, minute after minute (each series' in the order of
    # its minutes, as one by one): the compiler runs the series 4 or 8 at a time.
    tsums, xsums, musums, rsums = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    fj = np.empty(n)
    xj = np.empty(n)
    for j in range(b):
        for i in range(n):
            fj[i] = factor[i, j]
            xj[i] = x[i, j]
        for i in range(n):
            f = fj[i]
            mu = level[i] * f
            # Keep anomalies out of what is learned: clip single odd minutes (once warm).
            cap = max(2.0 * mu, mu + 4.0 * np.sqrt(mu) + 2.0)
            xc = min(xj[i], cap) if nobs[i] >= WARM_NOBS else xj[i]
            tsums[i] += xc / f
            xsums[i] += xc
            musums[i] += mu
            m = max(mu, 1e-6)
            rsums[i] += ((xc - m) ** 2 - m) / (m * m)
    for i in range(n):
        if not ok[i]:
            continue
        lv = level[i]
        no = nobs[i]
        warm = no >= WARM_NOBS
        tsum, xsum, musum, rsum = tsums[i], xsums[i], musums[i], rsums[i]
        a = max(a_block, b / (no + b))
        new_lv = lv + a * (tsum / b - lv)
        if no >= 120 and lv > 1e-6:
            if s0[i] >= slots_per_day and not weekend_seen[i]:
                # The first weekend day a series sees starts from its working-day profile.
                for k in range(slots_per_day):
                    season[i, slots_per_day + k] = season[i, k]
                weekend_seen[i] = True
            d = dow[i, weekday[i]]
            # The day's shape: counts against level x weekday factor.
            ratio = min(max(xsum / b / (lv * max(d, 0.05)), 0.0), 20.0)
            season[i, s0[i]] += w * (1.0 - frac[i]) * (ratio - season[i, s0[i]])
            season[i, s1[i]] += w * frac[i] * (ratio - season[i, s1[i]])
            # The weekday's level: counts against level x profile (tsum removed both).
            dratio = min(max(d * tsum / b / lv, 0.0), 20.0)
            dow[i, weekday[i]] += wdow * (dratio - d)
            if normalise:
                work = 0.0
                rest = 0.0
                for k in range(slots_per_day):
                    work += season[i, k]
                for k in range(slots_per_day, slots):
                    rest += season[i, k]
                work = max(work / slots_per_day, 1e-3)
                rest = max(rest / (slots - slots_per_day), 1e-3)
                for k in range(slots_per_day):
                    season[i, k] = season[i, k] / work
                for k in range(slots_per_day, slots):
                    season[i, k] = season[i, k] / rest
                total = 0.0
                for k in range(7):
                    dow[i, k] = dow[i, k] * (work if k < 5 else rest)
                    total += dow[i, k]
                mean = max(total / 7.0, 1e-3)
                for k in range(7):
                    dow[i, k] = dow[i, k] / mean
                new_lv *= mean
        if warm and musum / b > 0.5:
            dd = disp[i] + wd * (min(max(rsum / b, -0.5), 2.0) - disp[i])
            disp[i] = min(max(dd, 0.005), 0.5)
        level[i] = new_lv
        nobs[i] = no + b

"""A generic, causal anomaly scorer for any numeric metric, vectorised over K series.

Model (per series), in continuous time so irregular timestamps are handled:

* forecast: Brown's double exponential smoothing (two cascaded EWMAs of the cleaned
  observations, time constant from `level_half_life_s`) gives a level and a slope; the slope
  is damped over the forecast horizon (`trend_damping_s`), so a long gap does not extrapolate
  far. `trend=False` makes the forecast the plain EWMA level.
* scale: an EWMA (`scale_half_life_s`) of the absolute one-step-ahead residual (mean absolute
  deviation), times sqrt(pi/2) to be a standard deviation under Gaussian noise; floored at
  `min_rel_scale * |forecast|` and `min_abs_scale` so a constant series does not collapse it.
* score: z = residual / scale, score = erf(|z| / sqrt 2) = 1 - two-sided Gaussian p-value;
  both upward and downward deviations count. Ordinary noise scores < 0.9 about 90% of the
  time and > 0.99 about 1% of the time; a 4-scale deviation scores 0.99994.

Anomalies are kept out of the learned state by a separate filter (robust exponential
smoothing, after Gelper, Fried and Croux, J. Forecasting 2010): once warmed up, a residual
is clipped to `clip` scales before the level and the scale learn from it. A spike thus moves
the state little, while a lasting level shift is absorbed gradually (the level moves by at
most `clip` scales per level time constant and the scale widens), so it is flagged at its
start and not forever.

Observations that are NaN (or infinite) mean "nothing observed for that series now": they
score 0 and are not learned. Each series scores 0 until it has `warmup` observations. The
smoothing weights are `max(1 - exp(-dt / tau), 1 / n)`, so the first observations of a series
are averaged evenly rather than overweighting the first value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # std dev / mean absolute deviation, Gaussian
_LN2 = math.log(2.0)

FloatArray = NDArray[np.float64]


class GenericScorer:
    """Causal anomaly scores in [0, 1] for `n_series` metrics observed at common instants.

    `score_one(t, x)` scores one step without changing state; `learn_one(t, x)` then updates
    it. `t` is in seconds (any epoch) and must not decrease from one `learn_one` to the next.
    """

    def __init__(
        self,
        n_series: int,
        *,
        level_half_life_s: float = 600.0,
        scale_half_life_s: float = 3600.0,
        trend: bool = True,
        trend_damping_s: float = 1800.0,
        warmup: int = 10,
        clip: float = 3.0,
        min_rel_scale: float = 1e-3,
        min_abs_scale: float = 1e-9,
    ) -> None:
        if n_series < 0:
            raise ValueError(f"n_series must be >= 0, got {n_series}")
        for name, v in (
            ("level_half_life_s", level_half_life_s),
            ("scale_half_life_s", scale_half_life_s),
            ("trend_damping_s", trend_damping_s),
            ("clip", clip),
            ("min_abs_scale", min_abs_scale),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not (math.isfinite(min_rel_scale) and min_rel_scale >= 0):
            raise ValueError(f"min_rel_scale must be a finite number >= 0, got {min_rel_scale}")
        if warmup < 2:
            raise ValueError(f"warmup must be >= 2, got {warmup}")
        self.n_series = n_series
        self.trend = trend
        self.warmup = warmup
        self.clip = clip
        self.min_rel_scale = min_rel_scale
        self.min_abs_scale = min_abs_scale
        self._tau_level = level_half_life_s / _LN2
        self._tau_scale = scale_half_life_s / _LN2
        self._tau_damp = trend_damping_s
        # per-series state
        self.nobs: NDArray[np.int64] = np.zeros(n_series, np.int64)
        self.t_last: FloatArray = np.full(n_series, np.nan)
        self.s1: FloatArray = np.zeros(n_series)  # EWMA of cleaned observations
        self.s2: FloatArray = np.zeros(n_series)  # EWMA of s1
        self.mad: FloatArray = np.zeros(n_series)  # EWMA of |residual|
        self._t_prev = -math.inf

    # ------------------------------------------------------------------ helpers
    def _as_obs(self, x: ArrayLike) -> FloatArray:
        arr: FloatArray = np.asarray(x, dtype=np.float64)
        if arr.shape != (self.n_series,):
            raise ValueError(f"expected shape ({self.n_series},), got {arr.shape}")
        return arr

    def _forecast(self, t: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(dt, forecast, scale) at time `t` for every series; dt is 0 for unseen series."""
        dt = np.where(self.nobs > 0, np.maximum(t - self.t_last, 0.0), 0.0)
        if self.trend:
            level = self.s1 + (self.s1 - self.s2)  # 2 s1 - s2, without overflow
            slope = (self.s1 - self.s2) / self._tau_level
            horizon = -self._tau_damp * np.expm1(-dt / self._tau_damp)
            pred = level + slope * horizon
        else:
            pred = self.s1.copy()
        scale = np.maximum(_SIGMA_PER_MAD * self.mad, self.min_rel_scale * np.abs(pred))
        scale = np.maximum(scale, self.min_abs_scale)
        return dt, pred, scale

    # ------------------------------------------------------------------ API
    def score_one(self, t: float, x: ArrayLike) -> FloatArray:
        """Scores in [0, 1] of observations `x` (shape (n_series,)) at time `t`; no state change."""
        obs = self._as_obs(x)
        _, pred, scale = self._forecast(t)
        ok = np.isfinite(obs) & (self.nobs >= self.warmup)
        z = np.where(ok, np.abs(obs - pred) / scale, 0.0)
        # scipy is imported on first use: a replay of reports alone never needs it.
        from scipy.special import erf  # type: ignore[import-untyped, unused-ignore]

        out = np.asarray(erf(z / math.sqrt(2.0)), dtype=np.float64)
        return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)

    def learn_one(self, t: float, x: ArrayLike) -> None:
        """Update every series that has a finite observation in `x` at time `t`."""
        obs = self._as_obs(x)
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        if t < self._t_prev:
            raise ValueError(f"time went backwards: {t} < {self._t_prev}")
        self._t_prev = t
        valid = np.isfinite(obs)
        first = valid & (self.nobs == 0)
        upd = valid & (self.nobs > 0)
        if upd.any():
            dt, pred, scale = self._forecast(t)
            resid = np.where(upd, obs - pred, 0.0)
            # the anomaly filter: clip residuals to `clip` scales once warmed up
            lim = np.where(self.nobs >= self.warmup, self.clip * scale, np.inf)
            clean = np.clip(resid, -lim, lim)
            inv_n = 1.0 / np.maximum(self.nobs, 1)
            a = np.maximum(-np.expm1(-dt / self._tau_level), 1.0 / (self.nobs + 1))
            b = np.maximum(-np.expm1(-dt / self._tau_scale), inv_n)
            s1 = self.s1 + a * (pred + clean - self.s1)
            s2 = self.s2 + a * (s1 - self.s2)
            mad = self.mad + b * (np.abs(clean) - self.mad)
            self.s1 = np.where(upd, s1, self.s1)
            self.s2 = np.where(upd, s2, self.s2)
            self.mad = np.where(upd, mad, self.mad)
        if first.any():
            self.s1 = np.where(first, obs, self.s1)
            self.s2 = np.where(first, obs, self.s2)
            self.mad = np.where(first, 0.0, self.mad)
        self.nobs = self.nobs + valid
        self.t_last = np.where(valid, t, self.t_last)


def score_series(
    timestamps_s: NDArray[np.float64], values: NDArray[np.float64], **kw: Any
) -> FloatArray:
    """Causal scores of one series: each row is scored, then learned. `kw` go to GenericScorer."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    xs = np.asarray(values, dtype=np.float64)
    if ts.shape != xs.shape or ts.ndim != 1:
        raise ValueError(
            f"timestamps and values must be 1-d of equal length: {ts.shape} {xs.shape}"
        )
    scorer = GenericScorer(1, **kw)
    out = np.zeros(len(xs))
    for i in range(len(xs)):
        t = float(ts[i])
        x = xs[i : i + 1]
        out[i] = scorer.score_one(t, x)[0]
        scorer.learn_one(t, x)
    return out

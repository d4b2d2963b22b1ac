"""A generic, causal anomaly scorer for any numeric metric, vectorised over K series.

The output is an anomaly *likelihood* in [0, 1] that one global threshold can use across
series of any scale and noise: `score = log10(p) / log10(P_FLOOR)` clipped to [0, 1], where
`p` is a calibrated tail probability of what was just observed. A score of 0.5 is a
1-in-100,000 event, 1.0 a 1-in-10^10 one; unlike `1 - p` it keeps its resolution near 1.

Per series, on every row (all counts are in rows, so the same settings serve minute
telemetry and 5-minute or hourly exports alike):

* forecast: two robust exponential-smoothing models (after Gelper, Fried and Croux,
  J. Forecasting 2010: residuals are clipped to `clip` scales before the state learns from
  them, so an anomaly does not drag the model along). (a) Brown's double exponential
  smoothing (level and slope, half-life `level_half_life` rows); (b) a seasonal one: a slow
  level plus a time-of-day profile of `season_slots` slots (Holt-Winters, additive). Each
  keeps a robust scale (EWMA of |residual|, half-life `scale_half_life` rows). The model with
  the smaller scale is used, so seasonality counts only where the series has it.
* behaviour test (after Numenta's anomaly likelihood): `r = |residual| / scale`; the mean
  of `min(r, r_cap)` over the last `short_window` rows is set against the long-run mean and
  spread of that same mean (EWMA, half-life `long_half_life` rows); its upper Gaussian tail
  is `p`. It catches a spike that dominates the window as well as a change of behaviour (a
  noisier or shifted series) that no single row shows, while heavy-tailed noise only widens
  the spread it is measured against. Rows already flagged learn with weight
  `flagged_weight`, so an anomaly does not become the norm at once.
* residual rule: a residual `r` more than `resid_factor` times the largest one seen lately
  (a running maximum fading with half-life `resid_half_life` rows), and more than 4, gets
  `p = P_FLOOR ** resid_level` at most: a spike far beyond anything the series did lately.
* spatial rule: once `spatial_after` rows are seen, a value beyond the range seen so far by
  more than `spatial_tolerance` of that range (and more than the scale floor) is flagged at
  once (p = `P_FLOOR`).
* refractory period: after a row scores >= `flag_level`, the next `refractory` rows are
  scored `score * refractory_factor` (0 by default), so an anomaly spikes once at its start.

Observations that are NaN (or infinite) mean "nothing
observed for that series now": they score 0, are not learned and do not count as rows.
Each series scores 0 until it has `warmup` observations. Scoring is causal: the score of a
row depends on that row and the rows before it only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

P_FLOOR = 1e-10  # the smallest tail probability told apart: score 1.0
_LOG_FLOOR = math.log(P_FLOOR)
_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # std dev / mean absolute deviation, Gaussian
_DAY_S = 86400.0


def _alpha(half_life: float) -> float:
    """Per-row EWMA weight for a half-life in rows."""
    return float(1.0 - 0.5 ** (1.0 / half_life))


def likelihood(log_p: FloatArray) -> FloatArray:
    """Map natural-log tail probabilities to scores in [0, 1] (1 at p <= P_FLOOR)."""
    out: FloatArray = np.clip(log_p / _LOG_FLOOR, 0.0, 1.0)
    return out


class GenericScorer:
    """Causal anomaly likelihoods in [0, 1] for `n_series` metrics observed at common instants.

    `score_one(t, x)` scores one row without changing state; `learn_one(t, x)` then updates
    it (`update_one` does both). `t` is in seconds (any epoch; it places rows in the time of
    day) and must not decrease from one `learn_one` to the next.
    """

    def __init__(
        self,
        n_series: int,
        *,
        level_half_life: float = 10.0,
        scale_half_life: float = 200.0,
        seasonal_level_half_life: float = 50.0,
        season_half_life: float = 3.0,
        season_slots: int = 48,
        trend: bool = True,
        warmup: int = 10,
        clip: float = 3.0,
        short_window: int = 10,
        r_cap: float = 8.0,
        long_half_life: float = 1000.0,
        spatial_tolerance: float = 0.05,
        spatial_after: int = 100,
        flag_level: float = 0.7,
        refractory: int = 120,
        refractory_factor: float = 0.0,
        min_rel_scale: float = 1e-3,
        min_abs_scale: float = 1e-9,
        flagged_weight: float = 0.5,
        resid_factor: float = 3.0,
        resid_half_life: float = 1000.0,
        resid_level: float = 0.8,
    ) -> None:
        if n_series < 0:
            raise ValueError(f"n_series must be >= 0, got {n_series}")
        for name, v in (
            ("level_half_life", level_half_life),
            ("scale_half_life", scale_half_life),
            ("seasonal_level_half_life", seasonal_level_half_life),
            ("season_half_life", season_half_life),
            ("long_half_life", long_half_life),
            ("clip", clip),
            ("r_cap", r_cap),
            ("min_abs_scale", min_abs_scale),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        for name, v in (
            ("min_rel_scale", min_rel_scale),
            ("spatial_tolerance", spatial_tolerance),
            ("refractory_factor", refractory_factor),
        ):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if warmup < 2:
            raise ValueError(f"warmup must be >= 2, got {warmup}")
        if short_window < 1 or season_slots < 1 or refractory < 0 or spatial_after < 0:
            raise ValueError("short_window and season_slots must be >= 1, refractory >= 0")
        self.n_series = n_series
        self.flagged_weight = flagged_weight
        self.resid_factor = resid_factor
        self.resid_level = resid_level
        self._d_rmax = 0.5 ** (1.0 / resid_half_life)
        self.trend = trend
        self.warmup = warmup
        self.clip = clip
        self.short_window = short_window
        self.r_cap = r_cap
        self.spatial_tolerance = spatial_tolerance
        self.spatial_after = spatial_after
        self.flag_level = flag_level
        self.refractory = refractory
        self.refractory_factor = refractory_factor
        self.min_rel_scale = min_rel_scale
        self.min_abs_scale = min_abs_scale
        self.season_slots = season_slots
        self._a_level = _alpha(level_half_life)
        self._a_scale = _alpha(scale_half_life)
        self._a_slevel = _alpha(seasonal_level_half_life)
        self._a_season = _alpha(season_half_life)
        self._a_long = _alpha(long_half_life)
        k = n_series
        # per-series state
        self.nobs: NDArray[np.int64] = np.zeros(k, np.int64)
        self.t_last: FloatArray = np.full(k, np.nan)
        self.s1: FloatArray = np.zeros(k)  # (a) EWMA of cleaned observations
        self.s2: FloatArray = np.zeros(k)  # (a) EWMA of s1
        self.mad: FloatArray = np.zeros(k)  # (a) EWMA of |residual|
        self.slevel: FloatArray = np.zeros(k)  # (b) level without the season
        self.season: FloatArray = np.zeros((k, season_slots))  # (b) time-of-day profile
        self.seen: NDArray[np.bool_] = np.zeros((k, season_slots), np.bool_)
        self.smad: FloatArray = np.zeros(k)  # (b) EWMA of |residual|
        self.recent: FloatArray = np.zeros((k, short_window))  # last min(r, r_cap), a ring
        self.long_mean: FloatArray = np.zeros(k)  # of the short-window mean
        self.long_var: FloatArray = np.zeros(k)
        self.rmax: FloatArray = np.zeros(k)  # largest r seen, fading
        self.vmin: FloatArray = np.full(k, np.inf)
        self.vmax: FloatArray = np.full(k, -np.inf)
        self.quiet: NDArray[np.int64] = np.zeros(k, np.int64)  # refractory rows left
        self._t_prev = -math.inf
        self._cache: tuple[bytes, bytes, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ helpers
    def _as_obs(self, x: ArrayLike) -> FloatArray:
        arr: FloatArray = np.asarray(x, dtype=np.float64)
        if arr.shape != (self.n_series,):
            raise ValueError(f"expected shape ({self.n_series},), got {arr.shape}")
        return arr

    def _slot(self, t: FloatArray) -> NDArray[np.int64]:
        s = np.floor(np.mod(t, _DAY_S) / _DAY_S * self.season_slots).astype(np.int64)
        out: NDArray[np.int64] = np.clip(s, 0, self.season_slots - 1)
        return out

    def _eval(self, t: FloatArray, obs: FloatArray) -> dict[str, Any]:
        """Everything row (t, obs) yields, without changing state."""
        key = (t.tobytes(), obs.tobytes())
        if self._cache is not None and self._cache[:2] == key:
            return self._cache[2]
        valid = np.isfinite(obs)
        x = np.where(valid, obs, 0.0)
        n = self.nobs
        # (a) Brown's double exponential smoothing
        if self.trend:
            pred_a = (
                2.0 * self.s1
                - self.s2
                + (self.s1 - self.s2) * (self._a_level / (1 - self._a_level))
            )
        else:
            pred_a = self.s1.copy()
        # (b) seasonal
        rows = np.arange(self.n_series)
        slot = self._slot(t)
        season = self.season[rows, slot]
        seen = self.seen[rows, slot]
        pred_b = self.slevel + np.where(seen, season, 0.0)
        floor = np.maximum(self.min_rel_scale * np.abs(pred_a), self.min_abs_scale)
        scale_a = np.maximum(_SIGMA_PER_MAD * self.mad, floor)
        scale_b = np.maximum(_SIGMA_PER_MAD * self.smad, floor)
        use_b = seen & (self.smad < self.mad) & (n >= self.warmup)
        resid_a = x - pred_a
        resid_b = x - pred_b
        resid = np.where(use_b, resid_b, resid_a)
        scale = np.where(use_b, scale_b, scale_a)
        r = np.abs(resid) / scale
        warm = valid & (n >= self.warmup)
        # behaviour test: short-window mean of capped r against its long-run distribution
        rc = np.minimum(r, self.r_cap)
        w = self.short_window
        filled = np.minimum(n, w - 1)
        idx = n % w
        recent_sum = self.recent.sum(axis=1) - self.recent[np.arange(self.n_series), idx] * (n >= w)
        short = (recent_sum + rc) / (filled + 1)
        sd = np.sqrt(np.maximum(self.long_var, 1e-12))
        zb = (short - self.long_mean) / sd
        long_ok = n >= self.warmup + w
        # scipy is imported on first use: a replay of reports alone never needs it.
        from scipy.special import log_ndtr  # type: ignore[import-untyped, unused-ignore]

        log_p_beh = np.where(long_ok, log_ndtr(-zb), 0.0)
        # spatial rule
        span = self.vmax - self.vmin
        tol = np.maximum(self.spatial_tolerance * span, floor)
        out_of_range = (n >= self.spatial_after) & ((x > self.vmax + tol) | (x < self.vmin - tol))
        log_p = log_p_beh
        if self.resid_factor > 0:
            big = (n >= self.spatial_after) & (r > np.maximum(self.rmax * self.resid_factor, 4.0))
            log_p = np.where(big, np.minimum(log_p, self.resid_level * _LOG_FLOOR), log_p)
        log_p = np.where(out_of_range, _LOG_FLOOR, log_p)
        raw = np.where(warm, likelihood(log_p), 0.0)
        score = np.where(self.quiet > 0, raw * self.refractory_factor, raw)
        res = {
            "valid": valid, "x": x, "pred_a": pred_a, "resid_a": resid_a, "resid_b": resid_b,
            "scale_a": scale_a, "scale_b": scale_b, "slot": slot, "rc": rc, "short": short,
            "raw": raw, "score": score, "warm": warm, "r": r,
        }  # fmt: skip
        self._cache = (*key, res)
        return res

    # ------------------------------------------------------------------ persistence
    _STATE = (
        "nobs", "t_last", "s1", "s2", "mad", "slevel", "season", "seen", "smad", "recent",
        "long_mean", "long_var", "rmax", "vmin", "vmax", "quiet",
    )  # fmt: skip

    def dump(self) -> dict[str, Any]:
        """The learned state as plain lists (msgpack-able); settings are not included."""
        d: dict[str, Any] = {name: getattr(self, name).tolist() for name in self._STATE}
        d["t_prev"] = self._t_prev
        return d

    def load(self, d: dict[str, Any]) -> None:
        """Restore a state from `dump()` of a scorer with the same settings and size."""
        for name in self._STATE:
            cur = getattr(self, name)
            arr = np.asarray(d[name], dtype=cur.dtype)
            if arr.shape != cur.shape:
                raise ValueError(f"state {name!r} has shape {arr.shape}, expected {cur.shape}")
            setattr(self, name, arr.copy())
        self._t_prev = float(d["t_prev"])
        self._cache = None

    # ------------------------------------------------------------------ API
    def score_one(self, t: float, x: ArrayLike) -> FloatArray:
        """Scores in [0, 1] of observations `x` (shape (n_series,)) at time `t`; no state change."""
        obs = self._as_obs(x)
        out: FloatArray = self._eval(np.full(self.n_series, float(t)), obs)["score"].copy()
        return out

    def update_one(self, t: float, x: ArrayLike) -> FloatArray:
        """`score_one` then `learn_one`; returns the scores."""
        s = self.score_one(t, x)
        self.learn_one(t, x)
        return s

    def learn_one(self, t: float, x: ArrayLike) -> None:
        """Update every series that has a finite observation in `x` at time `t`."""
        obs = self._as_obs(x)
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        if t < self._t_prev:
            raise ValueError(f"time went backwards: {t} < {self._t_prev}")
        self._t_prev = t
        self._learn(np.full(self.n_series, t), obs)

    def _learn(self, t: FloatArray, obs: FloatArray) -> None:
        e = self._eval(t, obs)
        self._cache = None
        valid: NDArray[np.bool_] = e["valid"]
        if not valid.any():
            return
        x: FloatArray = e["x"]
        n = self.nobs
        first = valid & (n == 0)
        upd = valid & (n > 0)
        warmed = n >= self.warmup
        # (a) robust Brown smoothing
        lim_a = np.where(warmed, self.clip * e["scale_a"], np.inf)
        clean_a = np.clip(e["resid_a"], -lim_a, lim_a)
        a = np.maximum(self._a_level, 1.0 / (n + 1))
        s1 = self.s1 + a * (e["pred_a"] + clean_a - self.s1)
        s2 = self.s2 + a * (s1 - self.s2)
        b = np.maximum(self._a_scale, 1.0 / np.maximum(n, 1))
        mad = self.mad + b * (np.abs(clean_a) - self.mad)
        # (b) robust seasonal smoothing
        slot = e["slot"]
        rows = np.arange(self.n_series)
        seen = self.seen[rows, slot]
        lim_b = np.where(warmed & seen, self.clip * e["scale_b"], np.inf)
        clean_b = np.clip(e["resid_b"], -lim_b, lim_b)
        xb = x - e["resid_b"] + clean_b  # the cleaned observation
        season = np.where(seen, self.season[rows, slot], xb - self.slevel)
        ab = np.maximum(self._a_slevel, 1.0 / (n + 1))
        slevel = self.slevel + ab * (xb - season - self.slevel)
        season = season + self._a_season * (xb - slevel - season)
        smad = self.smad + b * (np.where(seen, np.abs(clean_b), np.abs(clean_a)) - self.smad)
        # behaviour: the short-window mean joins its long-run distribution; rows already
        # flagged weigh little, so an anomaly is not learned as the norm at once
        w = self.short_window
        short = e["short"]
        weight = np.maximum(self._a_long, 1.0 / np.maximum(n - self.warmup + 1, 1))
        weight = np.where(e["raw"] >= self.flag_level, weight * self.flagged_weight, weight)
        delta = short - self.long_mean
        long_mean = self.long_mean + weight * delta
        long_var = (1 - weight) * (self.long_var + weight * delta * delta)
        learn_long = upd & (n >= self.warmup)
        self.s1 = np.where(upd, s1, np.where(first, x, self.s1))
        self.s2 = np.where(upd, s2, np.where(first, x, self.s2))
        self.mad = np.where(upd, mad, self.mad)
        self.slevel = np.where(upd, slevel, np.where(first, x, self.slevel))
        self.smad = np.where(upd, smad, self.smad)
        self.season[rows, slot] = np.where(upd, season, self.season[rows, slot])
        self.seen[rows, slot] |= upd
        self.long_mean = np.where(learn_long, long_mean, self.long_mean)
        self.long_var = np.where(learn_long, long_var, self.long_var)
        ring = rows, n % w
        self.recent[ring] = np.where(valid, e["rc"], self.recent[ring])
        self.rmax = np.where(
            warmed & valid, np.maximum(self.rmax * self._d_rmax, e["r"]), self.rmax
        )
        self.vmin = np.where(valid, np.minimum(self.vmin, x), self.vmin)
        self.vmax = np.where(valid, np.maximum(self.vmax, x), self.vmax)
        flagged = valid & (e["score"] >= self.flag_level) & (self.quiet == 0)
        self.quiet = np.where(
            flagged, self.refractory, np.where(valid, np.maximum(self.quiet - 1, 0), self.quiet)
        )
        self.nobs = n + valid
        self.t_last = np.where(valid, t, self.t_last)


def score_series(timestamps_s: ArrayLike, values: ArrayLike, **kw: Any) -> FloatArray:
    """Causal scores of one series: each row is scored, then learned. `kw` go to GenericScorer.

    Rows are taken in the order given, whatever their timestamps."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    xs = np.asarray(values, dtype=np.float64)
    if ts.shape != xs.shape or ts.ndim != 1:
        raise ValueError(
            f"timestamps and values must be 1-d of equal length: {ts.shape} {xs.shape}"
        )
    scorer = GenericScorer(1, **kw)
    out = np.zeros(len(xs))
    t_prev = -math.inf
    for i in range(len(xs)):
        t_prev = max(t_prev, float(ts[i]))
        out[i] = scorer.update_one(t_prev, xs[i : i + 1])[0]
    return out


def score_matrix(timestamps_s: ArrayLike, values: ArrayLike, **kw: Any) -> FloatArray:
    """Causal scores of K series of n rows each (arrays (n, K)), stepped together by row;
    each series keeps its own timestamps (non-decreasing per series). NaN: no observation."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    xs = np.asarray(values, dtype=np.float64)
    if ts.shape != xs.shape or ts.ndim != 2:
        raise ValueError(f"timestamps and values must be 2-d of equal shape: {ts.shape} {xs.shape}")
    scorer = GenericScorer(xs.shape[1], **kw)
    out = np.zeros(xs.shape)
    for i in range(xs.shape[0]):
        out[i] = scorer._eval(ts[i], xs[i])["score"]
        scorer._learn(ts[i], xs[i])
    return out

"""The normal level of every series, learned online for all series at once.

    expected(minute) = level * weekday[local weekday] * profile[day type, local hour]

- `level` is the deseasonalised rate (reports/minute), an EWMA with a half-life of hours:
  it follows growth (traffic tripling over a month, a new region doubling in three days).
- `profile` holds 2 x 24 factors, the shape of a working day and of a weekend day by local
  hour (each block has mean 1), linearly interpolated between hour centres.
- `weekday` holds 7 factors (mean 1): how busy each day of the week is. A public holiday in
  the series' country is a Sunday (weekend shape, Sunday's level).
- Learning uses the final count of a minute (after the allowed lateness), in short blocks,
  and is skipped for series whose service is in an incident; single odd minutes are
  clipped, so the baseline never learns from outages. The arithmetic is in
  `kernels.learn_block`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.kernels import Rates, learn_block
from outagewatch.detect.series import SLOTS_PER_DAY, Series
from outagewatch.geo import is_holiday
from outagewatch.settings import PipelineSettings

if TYPE_CHECKING:
    from outagewatch.detect.quiet import Calendar

_EPOCH = dt.date(1970, 1, 1)


def _holidays(series: Series, cid: NDArray[np.int64], day: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether each (country id, local day since the epoch) is a public holiday there: one
    calendar look-up per distinct pair, not per series."""
    pair = cid * 1_000_000 + day
    uniq, inv = np.unique(pair, return_inverse=True)
    codes = {i: c for c, i in series.country_index.items()}
    hol = np.array(
        [
            is_holiday(codes[int(p // 1_000_000)], _EPOCH + dt.timedelta(days=int(p % 1_000_000)))
            for p in uniq
        ],
        np.bool_,
    )
    out: NDArray[np.bool_] = hol[inv.ravel()]
    return out


class Baseline:
    """Computes expectations and learns, for all series at once."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.level_alpha = 1.0 - 2.0 ** (-1.0 / settings.level_half_life_min)
        self.season_alpha = 1.0 / (60.0 * settings.season_memory_days)
        self.disp_alpha = 1.0 / 1440.0
        self.dow_alpha = 1.0 / (1440.0 * 2.0)  # about two of that weekday
        self._version = 0  # bumped by every learning step
        self._gathered: dict[
            tuple[int, int, int], tuple[NDArray[np.float64], NDArray[np.float64]]
        ] = {}
        self._daytypes: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        self._by_dates: dict[tuple[bytes, int], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        self._half: NDArray[np.bool_] = np.zeros(0, np.bool_)
        self._span_cache: dict[
            int, tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
        ] = {}
        self._slot_cache: dict[
            tuple[int, int], tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]
        ] = {}

    # ---------------------------------------------------------------- calendar
    def day_type(self, series: Series, minute: int) -> NDArray[np.int64]:
        """0 for a working day, 1 for a weekend day or holiday, in each series' local date."""
        return self.calendar(series, minute)[0]

    def weekday(self, series: Series, minute: int) -> NDArray[np.int64]:
        """Each series' local weekday (Monday 0 .. Sunday 6); a public holiday counts as Sunday."""
        return self.calendar(series, minute)[1]

    def calendar(self, series: Series, minute: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(day type, weekday) of `minute` for every series, in its country's local date."""
        n = len(series)
        key = (minute // 30, n)  # offsets are whole or half hours: stable for 30 minutes
        got = self._daytypes.get(key)
        if got is not None:
            return got
        t = minute * 60
        local_day = (t + series.view("offset_s").astype(np.int64)) // 86_400
        # The same local dates give the same calendar: computed once per (series' dates),
        # i.e. a few times a day (once per distinct offset), not every half hour.
        same = (local_day.tobytes(), n)
        got = self._by_dates.get(same)
        if got is not None:
            self._keep(self._daytypes, key, got, 4)
            return got
        weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        daytype = (weekday >= 5).astype(np.int64)
        # Holidays: one calendar look-up per (country, local day), not per series.
        check = np.flatnonzero((series.view("kind") == 1) & (daytype == 0))
        if len(check):
            cid = np.asarray(series.country_id, np.int64)[check]
            holiday = check[_holidays(series, cid, local_day[check])]
            daytype[holiday] = 1
            weekday = weekday.copy()
            weekday[holiday] = 6
        self._keep(self._daytypes, key, (daytype, weekday), 4)
        self._keep(self._by_dates, same, (daytype, weekday), 16)
        return daytype, weekday

    @staticmethod
    def _keep(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
        if len(cache) >= size:
            cache.pop(next(iter(cache)))
        cache[key] = value

    def _slots(
        self, series: Series, minute: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """The two profile slots each series' minute falls between, and the weight of the second.

        Offsets are whole or half hours, so the slots change only at :00 and :30 UTC and the
        weight takes one of two values per minute.
        """
        n = len(series)
        key = (minute // 30, n)
        got = self._slot_cache.get(key)
        offset = series.view("offset_s").astype(np.int64)
        if got is None:
            local_s = (minute * 60 + 30 + offset) % 86_400
            h0 = np.floor(local_s / 3600.0 - 0.5).astype(np.int64)
            base = self.day_type(series, minute) * SLOTS_PER_DAY
            got = (base + h0 % SLOTS_PER_DAY, base + (h0 + 1) % SLOTS_PER_DAY, offset % 3600 != 0)
            if len(self._slot_cache) >= 8:
                self._slot_cache.pop(next(iter(self._slot_cache)))
            self._slot_cache[key] = got
        s0, s1, half = got
        whole = ((minute % 60) * 60 + 30) / 3600.0 - 0.5  # hour fraction past the slot centre
        frac = np.where(half, (whole + 0.5) % 1.0, whole % 1.0)
        return s0, s1, frac

    def season_factor(self, series: Series, minute: int) -> NDArray[np.float64]:
        """Profile (day type x local hour, interpolated) times the weekday's level factor."""
        _, _, frac = self._slots(series, minute)
        f0, f1 = self.factors(series, minute)
        return np.maximum(f0 + (f1 - f0) * frac, 0.05)

    def expected_of(
        self, series: Series, minute: int, rows: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """`expected` of the series `rows` alone (the same numbers)."""
        _, _, frac = self._slots(series, minute)
        f0, f1 = self.factors(series, minute)
        a, b = f0[rows], f1[rows]
        out: NDArray[np.float64] = series.view("level")[rows] * np.maximum(
            a + (b - a) * frac[rows], 0.05
        )
        return out

    def factors(
        self, series: Series, minute: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The factors (profile x weekday level) of the two slots `minute` falls between:
        the same for the whole half hour (UTC :00-:29 or :30-:59) until learning runs, and
        gathered once for it. `season_factor` interpolates between them (`frac_of`)."""
        # Slots change only at :00 and :30 UTC (offsets are whole or half hours).
        key = (minute // 30, self._version, len(series))
        got = self._gathered.get(key)
        if got is None:
            s0, s1, _ = self._slots(series, minute)
            season = series.view("season")
            rows = np.arange(len(series))
            day = series.view("dow")[rows, self.weekday(series, minute)].astype(np.float64)
            got = (season[rows, s0] * day, season[rows, s1] * day)
            if len(self._gathered) >= 4:
                self._gathered.pop(next(iter(self._gathered)))
            self._gathered[key] = got
        return got

    def calendar_span(
        self, series: Series, h0: int, h1: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The calendar of the half hours [h0, h1) (minute // 30) for every series, as
        (h1 - h0, n) arrays: the two profile slots (`_slots`) and the local weekday
        (`weekday`, a holiday is 6). Offsets are whole or half hours, so each is one value
        per half hour: computed a day (48 half hours) at a time, then kept."""
        days = [self._day_calendar(series, d) for d in range(h0 // 48, (h1 - 1) // 48 + 1)]
        lo = h0 - (h0 // 48) * 48
        if len(days) == 1:
            s0, s1, wd = days[0]
            return s0[lo : lo + h1 - h0], s1[lo : lo + h1 - h0], wd[lo : lo + h1 - h0]
        s0, s1, wd = (np.concatenate(parts) for parts in zip(*days, strict=True))
        return s0[lo : lo + h1 - h0], s1[lo : lo + h1 - h0], wd[lo : lo + h1 - h0]

    def _day_calendar(
        self, series: Series, day: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """`calendar` and `_slots` of the 48 half hours of UTC day `day`, at once. Kept per
        day; series born since are added as columns (each column is its series' own)."""
        n = len(series)
        got = self._span_cache.get(day)
        have = 0 if got is None or got[0].shape[1] > n else got[0].shape[1]
        if got is not None and have == n:
            return got
        new = self._day_columns(series, day, have, n)
        if have:
            assert got is not None
            new = (
                np.concatenate([got[0], new[0]], axis=1),
                np.concatenate([got[1], new[1]], axis=1),
                np.concatenate([got[2], new[2]], axis=1),
            )
        self._span_cache.pop(day, None)
        self._keep(self._span_cache, day, new, 3)
        return new

    def _day_columns(
        self, series: Series, day: int, a: int, b: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """`_day_calendar` of the series a..b-1."""
        t = (day * 48 + np.arange(48, dtype=np.int64))[:, None] * 1800  # minute * 60
        offset = series.view("offset_s")[a:b].astype(np.int64)[None, :]
        local_day = (t + offset) // 86_400
        weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        daytype = (weekday >= 5).astype(np.int64)
        # Holidays: one calendar look-up per (country, local day), not per series.
        check = (series.view("kind")[a:b] == 1)[None, :] & (daytype == 0)
        if check.any():
            ids = np.asarray(series.country_id[a:b], np.int64)[None, :]
            cid = np.broadcast_to(ids, check.shape)
            holiday = np.zeros_like(check)
            holiday[check] = _holidays(series, cid[check], local_day[check])
            daytype[holiday] = 1
            weekday[holiday] = 6
        local_s = (t + 30 + offset) % 86_400
        h0 = np.floor(local_s / 3600.0 - 0.5).astype(np.int64)
        base = daytype * SLOTS_PER_DAY
        return (base + h0 % SLOTS_PER_DAY, base + (h0 + 1) % SLOTS_PER_DAY, weekday)

    @property
    def rates(self) -> Rates:
        """The learning rates as the kernels take them (`detect.kernels.Rates`)."""
        return (self.level_alpha, self.season_alpha, self.dow_alpha, self.disp_alpha)

    def run_calendar(self, series: Series, h0: int, h1: int) -> Calendar:
        """The calendar of a quiet run (`detect.quiet.Calendar`): `calendar_span` of the half
        hours [h0, h1) and `half_hour_offsets`."""
        s0, s1, wd = self.calendar_span(series, h0, h1)
        return (h0, s0, s1, wd, self.half_hour_offsets(series))

    def learned(self, steps: int) -> None:
        """The learning steps a compiled quiet run took (detect.quiet): factors gathered
        before them are stale."""
        self._version += steps

    def half_hour_offsets(self, series: Series) -> NDArray[np.bool_]:
        """Which series live on a half-hour UTC offset (their slots are centred at :00)."""
        if len(self._half) != len(series):  # offsets never change: new series only
            self._half = series.view("offset_s") % 3600 != 0
        return self._half

    # ---------------------------------------------------------------- expectation
    def expected(self, series: Series, minute: int) -> NDArray[np.float64]:
        """Expected reports in `minute` for every series."""
        return series.view("level") * self.season_factor(series, minute)

    def curve(self, series: Series, i: int, minutes: NDArray[np.int64]) -> NDArray[np.float64]:
        """Typical reports per minute of series `i` over `minutes`, at today's level.

        What a status page draws as the "usual" band: level x weekday x interpolated
        profile, in the series' local time (public holidays are not looked up here).
        """
        offset = int(series.offset_s[i])
        t = minutes.astype(np.int64) * 60
        local_day = (t + offset) // 86_400
        weekday = (local_day + 3) % 7
        base = (weekday >= 5).astype(np.int64) * SLOTS_PER_DAY
        local_h = ((t + 30 + offset) % 86_400) / 3600.0 - 0.5
        h0 = np.floor(local_h).astype(np.int64)
        frac = local_h - h0
        season = series.season[i].astype(np.float64)
        f0 = season[base + h0 % SLOTS_PER_DAY]
        f1 = season[base + (h0 + 1) % SLOTS_PER_DAY]
        day = series.dow[i].astype(np.float64)[weekday]
        shape = np.maximum((f0 + (f1 - f0) * frac) * day, 0.05)
        out: NDArray[np.float64] = float(series.level[i]) * shape
        return out

    def _block_factors(self, series: Series, minutes: list[int]) -> NDArray[np.float64]:
        """`season_factor` of each of `minutes` (n x len(minutes)), the slots gathered once
        per half hour: the same numbers, without a pass over the calendar per minute."""
        n = len(series)
        out = np.empty((n, len(minutes)))
        half = self.half_hour_offsets(series)[:, None]
        j = 0
        while j < len(minutes):
            block = minutes[j] // 30
            k = j
            while k < len(minutes) and minutes[k] // 30 == block:
                k += 1
            f0, f1 = self.factors(series, minutes[j])
            whole = [((m % 60) * 60 + 30) / 3600.0 - 0.5 for m in minutes[j:k]]
            frac = np.where(
                half,
                np.asarray([(w + 0.5) % 1.0 for w in whole])[None, :],
                np.asarray([w % 1.0 for w in whole])[None, :],
            )
            out[:, j:k] = np.maximum(f0[:, None] + (f1 - f0)[:, None] * frac, 0.05)
            j = k
        return out

    # ---------------------------------------------------------------- learning
    def learn(
        self, series: Series, minutes: list[int], x: NDArray[np.float64], ok: NDArray[np.bool_]
    ) -> None:
        """Learn from the final counts `x` (n x len(minutes)) of consecutive `minutes`.

        Series where `ok` is false (in an incident) learn nothing. Learning a short block of
        minutes at once is the per-minute update with the block's mean, at a fraction of
        the cost.
        """
        n = len(series)
        b = len(minutes)
        if n == 0 or b == 0:
            return
        factor = self._block_factors(series, minutes)
        mid = minutes[b // 2]
        s0, s1, frac = self._slots(series, mid)
        block = (factor, np.ascontiguousarray(x, np.float64), ok)
        middle = (s0, s1, frac, self.weekday(series, mid))
        normalise = any(m % 60 == 0 for m in minutes)
        learn_block(series.model(), block, middle, self.rates, normalise, SLOTS_PER_DAY)
        self._version += 1

"""All detected series and their state, as parallel numpy arrays.

A series is one count stream: a service's total reports (`total`), its reports from one
country (`country`), or of one problem type (`problem`). Arrays grow by doubling; every
per-series quantity (baseline, ring of recent minutes) lives here so a tick touches all
series at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from outagewatch.detect.cusum import RECENT_COLUMNS, SURGE_SIZES
from outagewatch.detect.kernels import Model, Ring
from outagewatch.geo import utc_offset_s

Kind = Literal["total", "country", "problem"]
KIND_CODE: dict[str, int] = {"total": 0, "country": 1, "problem": 2}
SLOTS_PER_DAY = 24
DAY_TYPES = 2  # 0 = working day, 1 = weekend or public holiday
SEASON_SLOTS = DAY_TYPES * SLOTS_PER_DAY


@dataclass(frozen=True, slots=True)
class SeriesKey:
    service: str
    kind: Kind
    key: str = ""  # country code or problem name; "" for the total

    def __str__(self) -> str:
        return f"{self.service}/{self.kind}/{self.key}" if self.key else f"{self.service}/total"


class Series:
    """Registry of series and their arrays. Index i is stable for the life of the state."""

    ARRAYS: tuple[str, ...] = (
        "svc",
        "kind",
        "offset_s",
        "level",
        "nobs",
        "disp",
        "season",
        "dow",
        "weekend_seen",
        "born",
        "ring_count",
        "ring_expected",
        "cusum",
        "cusum_x",
        "cusum_mu",
        "cusum_recent",
    )

    TIME_MAJOR = frozenset({"ring_count", "ring_expected"})

    def __init__(self, ring_minutes: int, capacity: int = 64) -> None:
        self.ring = ring_minutes
        self.keys: list[SeriesKey] = []
        self.index: dict[SeriesKey, int] = {}
        self.services: list[str] = []  # service index -> id
        self.service_index: dict[str, int] = {}
        self.service_series: list[list[int]] = []  # service index -> its series
        self.total_of: list[int] = []  # service index -> its total series
        self.country_index: dict[str, int] = {}  # country code ("" for none) -> id
        self.country_id: list[int] = []  # series -> country id
        self.fresh: list[int] = []  # registered since the owner last looked
        self._alloc(capacity)

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int) -> None:
        self.svc: NDArray[np.int32] = np.zeros(cap, np.int32)
        self.kind: NDArray[np.int8] = np.zeros(cap, np.int8)
        self.country: list[str] = []
        self.offset_s: NDArray[np.int32] = np.zeros(cap, np.int32)
        self.level: NDArray[np.float64] = np.zeros(cap, np.float64)
        self.nobs: NDArray[np.int32] = np.zeros(cap, np.int32)
        self.disp: NDArray[np.float32] = np.full(cap, 0.05, np.float32)
        self.season: NDArray[np.float32] = np.ones((cap, SEASON_SLOTS), np.float32)
        self.dow: NDArray[np.float32] = np.ones((cap, 7), np.float32)  # level by weekday
        self.weekend_seen: NDArray[np.bool_] = np.zeros(cap, np.bool_)
        # The first tick minute the series takes part in (its first report's arrival).
        self.born: NDArray[np.int64] = np.zeros(cap, np.int64)
        # Recent minutes, time-major: row = minute % ring, column = series.
        self.ring_count: NDArray[np.float32] = np.zeros((self.ring, cap), np.float32)
        self.ring_expected: NDArray[np.float32] = np.zeros((self.ring, cap), np.float32)
        # The sequential surge test (detect.cusum): per surge size, the statistic and the
        # reports and expectation of its current run.
        nk = len(SURGE_SIZES)
        self.cusum: NDArray[np.float64] = np.zeros((cap, nk), np.float64)
        self.cusum_x: NDArray[np.float64] = np.zeros((cap, nk), np.float64)
        self.cusum_mu: NDArray[np.float64] = np.zeros((cap, nk), np.float64)
        # Its guard's forecast bias (detect.cusum.cusum_step's `recent`).
        self.cusum_recent: NDArray[np.float64] = np.zeros((cap, RECENT_COLUMNS), np.float64)

    def _grow(self, need: int) -> None:
        cap = len(self.svc)
        if need <= cap:
            return
        new = max(need, cap * 2)
        for name in self.ARRAYS:
            old: NDArray[Any] = getattr(self, name)
            fill = 1.0 if name in ("season", "dow") else (0.05 if name == "disp" else 0)
            if name in self.TIME_MAJOR:
                arr = np.full((old.shape[0], new), fill, dtype=old.dtype)
                arr[:, :cap] = old
            else:
                arr = np.full((new, *old.shape[1:]), fill, dtype=old.dtype)
                arr[:cap] = old
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_services(self) -> int:
        return len(self.services)

    # ------------------------------------------------------------------ registry
    def service(self, sid: str) -> int:
        """The index of service `sid`, registering it (and its total series) if new."""
        i = self.service_index.get(sid)
        if i is None:
            i = len(self.services)
            self.services.append(sid)
            self.service_index[sid] = i
            self.service_series.append([])
            self.total_of.append(-1)
            self.total_of[i] = self.get(SeriesKey(sid, "total"))
        return i

    def get(self, key: SeriesKey) -> int:
        """The index of `key`, registering the series if new."""
        i = self.index.get(key)
        if i is not None:
            return i
        si = self.service(key.service)
        i = self.index.get(key)  # registering the service registers its total series
        if i is not None:
            return i
        i = len(self.keys)
        self._grow(i + 1)
        self.keys.append(key)
        self.index[key] = i
        self.svc[i] = si
        self.kind[i] = KIND_CODE[key.kind]
        country = key.key if key.kind == "country" else ""
        self.country.append(country)
        cid = self.country_index.setdefault(country, len(self.country_index))
        self.country_id.append(cid)
        self.offset_s[i] = utc_offset_s(country) if country else 0
        self.service_series[si].append(i)
        self.fresh.append(i)
        return i

    def view(self, name: str) -> NDArray[Any]:
        """The live part (the first len(self) series) of one of the ARRAYS."""
        arr: NDArray[Any] = getattr(self, name)
        if name in self.TIME_MAJOR:
            return arr[:, : len(self.keys)]
        return arr[: len(self.keys)]

    def rings(self) -> Ring:
        """The ring of recent minutes, as the kernels take it (`detect.kernels.Ring`)."""
        return (self.ring_count, self.ring_expected)

    def model(self) -> Model:
        """The live baseline arrays, as the kernels take them (`detect.kernels.Model`)."""
        return (
            self.view("level"),
            self.view("nobs"),
            self.view("disp"),
            self.view("season"),
            self.view("dow"),
            self.view("weekend_seen"),
        )

    def set_ring(self, ring_minutes: int, newest: int) -> None:
        """Hold `ring_minutes` recent minutes from now on, keeping what the ring holds of
        the newest ones up to minute `newest` (the most both rings hold): a state saved
        with another ring (a replay's, `runtime.replay.REPLAY_RING_MINUTES`) carries on
        as if it had had this one."""
        old = self.ring
        kept = np.arange(newest - min(old, ring_minutes) + 1, newest + 1)
        for name in self.TIME_MAJOR:
            was = getattr(self, name)
            now = np.zeros((ring_minutes, was.shape[1]), was.dtype)
            now[kept % ring_minutes] = was[kept % old]
            setattr(self, name, now)
        self.ring = ring_minutes

    # ------------------------------------------------------------------ persistence
    def dump(self) -> tuple[dict[str, NDArray[Any]], list[list[str]]]:
        arrays = {name: self.view(name).copy() for name in self.ARRAYS}
        keys = [[k.service, k.kind, k.key] for k in self.keys]
        return arrays, keys

    @classmethod
    def load(
        cls, ring_minutes: int, arrays: dict[str, NDArray[Any]], keys: list[list[str]]
    ) -> Series:
        s = cls(ring_minutes, capacity=max(64, len(keys)))
        for service, kind, key in keys:
            s.get(SeriesKey(service, kind, key))  # type: ignore[arg-type]
        n = len(keys)
        for name in cls.ARRAYS:
            if name in ("svc", "kind", "offset_s"):
                continue  # derived from the keys above
            if name not in arrays:
                continue  # a state from before this array (the CUSUM): it starts at 0
            if name in cls.TIME_MAJOR:
                getattr(s, name)[:, :n] = arrays[name]
            else:
                getattr(s, name)[:n] = arrays[name]
        s.fresh.clear()  # restored, not new: their birth minutes came with the arrays
        return s

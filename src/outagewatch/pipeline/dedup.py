"""Deduplication of single reports: one person counts once per service per window."""

from __future__ import annotations

from collections.abc import Sequence


class Dedup:
    """Remembers, per (service, person), when that person's report last counted.

    A report counts when the person has no counted report for the service within
    `window_s` of its time (either side, so out-of-order arrivals are judged the same).
    Reports without a person and pre-aggregated counts (`count` > 1) always count.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = float(window_s)
        self._last: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self._last)

    def filter(
        self,
        services: Sequence[str],
        persons: Sequence[str | None],
        ts: Sequence[float],
        counts: Sequence[int],
    ) -> list[bool]:
        """Which of these reports count, in order; remembers the ones that do."""
        last = self._last
        window = self.window_s
        keep: list[bool] = []
        append = keep.append
        for svc, person, t, c in zip(services, persons, ts, counts, strict=True):
            if person is None or c != 1 or window <= 0:
                append(True)
                continue
            key = (svc, person)
            prev = last.get(key)
            if prev is None or abs(t - prev) >= window:
                last[key] = t if prev is None or t > prev else prev
                append(True)
            else:
                append(False)
        return keep

    def prune(self, watermark: float) -> None:
        """Forget people whose last counted report is older than the window."""
        horizon = watermark - self.window_s
        self._last = {k: t for k, t in self._last.items() if t > horizon}

    def dump(self) -> list[tuple[str, str, float]]:
        return [(s, p, t) for (s, p), t in self._last.items()]

    def load(self, rows: Sequence[Sequence[object]]) -> None:
        self._last = {(str(s), str(p)): float(t) for s, p, t in rows}  # type: ignore[arg-type]

"""The long view of one service: a row per UTC day (the 90-day bar, GET .../history)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.events import epoch_of
from outagewatch.incidents.severity import public, severity
from outagewatch.store.rollup import DAY_S

MAX_DAYS = 400
_EPOCH = dt.date(1970, 1, 1)
_RANK = {"ok": 0, "problems": 1, "outage": 2}


def days_view(
    docs: Sequence[dict[str, Any]], reports: NDArray[np.int64], day0: int, now: float
) -> list[dict[str, Any]]:
    """One object per day from `day0` (`len(reports)` days), oldest first:
    `date`, `status` (the worst severity of the day's public incidents, else `ok`),
    `incidents` (public incidents going on that day), `outage_minutes` (minutes of the day
    inside one of them, overlaps counted once) and `reports` (counted reports)."""
    n = len(reports)
    status = ["ok"] * n
    count = [0] * n
    spans: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    for d in docs:
        if not public(d):
            continue
        start = epoch_of(d["started_at"])
        end = now if d.get("ended_at") is None else epoch_of(d["ended_at"])
        end = max(end, start + 60)
        sev = severity(d)
        first = max(int(start // DAY_S) - day0, 0)
        last = min(int((end - 1) // DAY_S) - day0, n - 1)
        for i in range(first, last + 1):
            count[i] += 1
            if _RANK[sev] > _RANK[status[i]]:
                status[i] = sev
            lo = (day0 + i) * DAY_S
            spans[i].append((max(start, lo), min(end, lo + DAY_S)))
    out = []
    for i in range(n):
        out.append(
            {
                "date": (_EPOCH + dt.timedelta(days=day0 + i)).isoformat(),
                "status": status[i],
                "incidents": count[i],
                "outage_minutes": _union_minutes(spans[i]),
                "reports": int(reports[i]),
            }
        )
    return out


def _union_minutes(spans: list[tuple[float, float]]) -> int:
    total, reach = 0.0, -1.0
    for a, b in sorted(spans):
        lo = max(a, reach)
        if b > lo:
            total += b - lo
            reach = b
    return round(total / 60)


def history_summary(days: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals of a run of days: the bar's cells, days with an incident, minutes with an
    incident, and the share of minutes without one (`99.95%`)."""
    minutes = sum(d["outage_minutes"] for d in days)
    share = 100.0 * (1 - minutes / (1440 * len(days))) if days else 100.0
    return {
        "cells": bar_cells(days),
        "first": days[0]["date"] if days else "",
        "days": len(days),
        "incident_days": sum(1 for d in days if d["incidents"]),
        "outage_minutes": minutes,
        "uptime": f"{share:.2f}%",
    }


def bar_cells(days: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(css class, date, title) of each cell of the days bar, worked out once here rather
    than in the template (90 cells of attribute lookups cost the page a few milliseconds)."""
    out = []
    for d in days:
        n = d["incidents"]
        what = (
            f"{n} incident{'s' if n != 1 else ''}, {d['outage_minutes']} min"
            if n
            else "no incidents"
        )
        cls = d["status"] + (" quiet" if not d["reports"] and d["status"] == "ok" else "")
        out.append((cls, d["date"], f"{d['date']}: {what}; {d['reports']:,} reports"))
    return out

"""`evaluate`: grade detected incidents against labelled true outages (docs/contract.md §7).

Two parts: `parse_labels` and `grade` are pure (labels and incident docs in, grades out);
`run_evaluate` is the driver that replays event files into a fresh temporary store and
hands its incidents to `grade`. It is how a user backtests settings on their own history,
and how `benchmarks/bench_detection.py` publishes this project's figures.

Matching: an incident matches a label when it has the label's service and its span
[`started_at`, `ended_at` or now] overlaps [`start` - 5 min, `end`]. Incidents with
`suspected_abuse: true` are not public and are left out.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from outagewatch.catalog import Catalog
from outagewatch.errors import InputError
from outagewatch.events import epoch_of, iso, time_of
from outagewatch.settings import PipelineSettings

MATCH_BEFORE_S = 300.0  # an incident may start up to 5 minutes before the labelled start


@dataclass(frozen=True, slots=True)
class Label:
    service: str
    start: float
    end: float


def parse_labels(data: bytes, catalog: Catalog, name: str = "labels") -> list[Label]:
    """The labels of an NDJSON file: `{"service", "start", "end"}` per line (blank lines are
    skipped). A bad line is an `InputError` naming the file, the line and the reason."""
    out: list[Label] = []
    for no, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue

        def bad(reason: str, no: int = no) -> InputError:
            return InputError(f"{name}:{no}: {reason}")

        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad("not valid JSON") from None
        if not isinstance(obj, dict):
            raise bad("expected a JSON object")
        svc = obj.get("service")
        if not isinstance(svc, str) or not svc:
            raise bad("missing or non-string field 'service'")
        found = catalog.resolve(svc)
        if found is None:
            raise bad(f"unknown service {svc!r}")
        times: list[float] = []
        for key in ("start", "end"):
            if key not in obj:
                raise bad(f"missing field {key!r}")
            t = time_of(obj[key])
            if t is None:
                raise bad(f"field {key!r}: expected RFC 3339 time (Z or offset) or epoch seconds")
            times.append(t)
        if times[1] < times[0]:
            raise bad("'end' is before 'start'")
        out.append(Label(found.id, times[0], times[1]))
    return out


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, np.float64), q * 100.0)), 2)


def grade(
    labels: Sequence[Label],
    incidents: Iterable[dict[str, Any]],
    *,
    now: float,
    span_days: float,
    services: int,
) -> dict[str, Any]:
    """Grade incident docs (docs/contract.md §4) against the labels; the result is the JSON
    object of docs/contract.md §7. `now` closes ongoing incidents; `span_days` x `services` are the
    service-days the false incidents are counted per."""
    shown = [d for d in incidents if d.get("suspected_abuse") is not True]
    spans = [
        (
            d["service"],
            epoch_of(d["started_at"]),
            now if d.get("ended_at") is None else epoch_of(d["ended_at"]),
            epoch_of(d["detected_at"]),
        )
        for d in shown
    ]
    hit_any = [False] * len(spans)
    per_label: list[dict[str, Any]] = []
    delays: list[float] = []
    started_errors: list[float] = []
    for lab in labels:
        best: tuple[float, float] | None = None  # (started_at, detected_at) of the earliest
        for k, (svc, s0, s1, det) in enumerate(spans):
            if svc == lab.service and s0 <= lab.end and s1 >= lab.start - MATCH_BEFORE_S:
                hit_any[k] = True
                if best is None or (s0, det) < best:
                    best = (s0, det)
        delay = None
        if best is not None:
            delay = round((best[1] - lab.start) / 60.0, 2)
            delays.append(delay)
            started_errors.append((best[0] - lab.start) / 60.0)
        per_label.append(
            {
                "service": lab.service,
                "start": iso(lab.start),
                "matched": best is not None,
                "delay_min": delay,
            }
        )
    matched = sum(1 for p in per_label if p["matched"])
    good = sum(hit_any)
    false = len(spans) - good
    service_days = span_days * services
    return {
        "labels": len(labels),
        "incidents": len(spans),
        "matched": matched,
        "recall": round(matched / len(labels), 4) if labels else None,
        "precision": round(good / len(spans), 4) if spans else None,
        "false_incidents": false,
        "false_per_1000_service_days": (
            round(1000.0 * false / service_days, 3) if service_days > 0 else None
        ),
        "delay_median_min": _quantile(delays, 0.5),
        "delay_p90_min": _quantile(delays, 0.9),
        "started_error_median_min": _quantile(started_errors, 0.5),
        "per_label": per_label,
    }


def format_table(g: dict[str, Any]) -> str:
    """The grades as a short human-readable table."""

    def f(v: Any, unit: str = "") -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}{unit}"
        return f"{v}{unit}"

    rows = [
        ("labels", f(g["labels"])),
        ("incidents (public)", f(g["incidents"])),
        ("matched labels", f(g["matched"])),
        ("recall", f(g["recall"])),
        ("precision", f(g["precision"])),
        ("false incidents", f(g["false_incidents"])),
        ("false per 1,000 service-days", f(g["false_per_1000_service_days"])),
        ("delay median", f(g["delay_median_min"], " min")),
        ("delay p90", f(g["delay_p90_min"], " min")),
        ("started_at error median", f(g["started_error_median_min"], " min")),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    if g["per_label"]:
        out.append("")
        out.append(f"{'SERVICE':<16} {'START':<20} {'MATCHED':<7} DELAY")
        for p in g["per_label"]:
            out.append(
                f"{p['service']:<16} {p['start']:<20} {'yes' if p['matched'] else 'no':<7} "
                f"{f(p['delay_min'], ' min')}"
            )
    return "\n".join(out) + "\n"


@dataclass
class Replayed:
    incidents: list[dict[str, Any]]
    first: float  # first and last event time of the replayed files
    last: float


def replay_into_temp(
    catalog: Catalog, settings: PipelineSettings, names: Sequence[str]
) -> Replayed:
    """Replay the files into a fresh temporary SQLite store (deleted afterwards) and return
    its incidents and the span of event time it covered."""
    from outagewatch.events import Decoded
    from outagewatch.runtime.replay import Replayer, Summary, open_input
    from outagewatch.store import open_store

    span = [math.inf, -math.inf]

    class _Spanned(Replayer):
        def ingest(self, d: Decoded, name: str, summary: Summary) -> None:
            ts = [*d.reports.ts.tolist(), *(o.ts for o in d.others)]
            if ts:
                span[0] = min(span[0], *ts)
                span[1] = max(span[1], *ts)
            super().ingest(d, name, summary)

    with tempfile.TemporaryDirectory(prefix="outagewatch-evaluate-") as tmp:
        store = open_store(str(Path(tmp) / "evaluate.db"))
        try:
            rp = _Spanned(store, catalog, settings)
            summary = Summary()
            for name in names:
                f = open_input(name)
                try:
                    rp.feed(f, name, summary, None)
                finally:
                    if name != "-":
                        f.close()
            # The files are all there is: the reports the stream clock still holds (the
            # newest, until more reports reach their time) count too, and so does the
            # minute of the last event (closed: nothing more will come).
            if math.isfinite(span[1]):
                rp.pipeline.advance_to((math.floor(span[1] / 60.0) + 1) * 60.0)
            rp.commit(summary)
            docs = store.incidents()
        finally:
            store.close()
    if not math.isfinite(span[0]):
        span = [0.0, 0.0]
    return Replayed(docs, span[0], span[1])


def run_evaluate(
    catalog: Catalog,
    settings: PipelineSettings,
    names: Sequence[str],
    labels: Sequence[Label],
) -> dict[str, Any]:
    """Replay `names` into a fresh store and grade its incidents against `labels`."""
    r = replay_into_temp(catalog, settings, names)
    return grade(
        labels,
        r.incidents,
        now=r.last,
        span_days=(r.last - r.first) / 86_400.0,
        services=len(catalog.services),
    )

"""`outagewatch export`: stored history out as CSV, NDJSON or Parquet, streamed.

Counts are read one service and one month of days at a time and written as they are read,
so memory stays flat however long the history. Columns (README "Export"):

counts:    service, start (bucket start, UTC), minutes (bucket length: 1, 15 or 60 by the
           age of the day), country, problem, reports
incidents: the docs/contract.md §4 object per line in NDJSON; in CSV and Parquet the flat columns
           of INCIDENT_COLUMNS (countries and problems as `US:120 GB:30`)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from typing import IO, Any, Protocol

import numpy as np
import orjson

from outagewatch.errors import UsageError
from outagewatch.events import iso
from outagewatch.store.base import CountReader, IncidentQuery, IncidentReader
from outagewatch.store.counts import iter_days
from outagewatch.store.rollup import DAY_S

COUNT_COLUMNS = ("service", "start", "minutes", "country", "problem", "reports")
INCIDENT_COLUMNS = (
    "id",
    "service",
    "status",
    "started_at",
    "detected_at",
    "peak_at",
    "ended_at",
    "peak_reports_per_minute",
    "baseline_reports_per_minute",
    "total_reports",
    "countries",
    "problems",
    "causes",
    "cluster",
    "detected_by",
    "probe_confirmed",
    "suspected_abuse",
    "maintenance",
)
FORMATS = ("csv", "ndjson", "parquet")
BATCH = 65_536  # rows per Parquet row group / write


class ExportStore(CountReader, IncidentReader, Protocol):
    def count_bounds(self) -> tuple[int, int] | None: ...


Row = tuple[Any, ...]


def count_rows(
    store: ExportStore,
    services: Sequence[str],
    since: float | None,
    until: float | None,
) -> Iterator[list[Row]]:
    """Batches of count rows (COUNT_COLUMNS, `start` in epoch seconds), by service then time."""
    bounds = store.count_bounds()
    if bounds is None:
        return
    day0 = bounds[0] // 24 if since is None else max(int(since // DAY_S), bounds[0] // 24)
    day1 = (
        bounds[1] // 24 + 1 if until is None else min(int(until // DAY_S) + 1, bounds[1] // 24 + 1)
    )
    for service in services:
        for day, res, block in iter_days(store, service, day0, day1):
            rows = block[np.lexsort((block["p"], block["c"], block["m"]))]
            start = day * DAY_S + rows["m"].astype(np.int64) * res * 60
            keep = np.ones(len(rows), bool)
            if since is not None:
                keep &= start + res * 60 > since
            if until is not None:
                keep &= start < until
            if not keep.all():
                rows, start = rows[keep], start[keep]
            if len(rows):
                yield list(
                    zip(
                        [service] * len(rows),
                        start.tolist(),
                        [res] * len(rows),
                        [c.decode() for c in rows["c"].tolist()],
                        [p.decode() for p in rows["p"].tolist()],
                        rows["n"].tolist(),
                        strict=True,
                    )
                )


def incident_rows(docs: Sequence[dict[str, Any]]) -> Iterator[list[Row]]:
    for i in range(0, len(docs), BATCH):
        yield [_flat(d) for d in docs[i : i + BATCH]]


def _flat(d: dict[str, Any]) -> Row:
    def pairs(items: list[dict[str, Any]], key: str) -> str:
        return " ".join(f"{x[key]}:{x['reports']}" for x in items or [])

    causes = " ".join(f"{c['kind']}:{c['confidence']:.2f}" for c in d.get("causes") or [])
    cluster = d.get("cluster")
    return (
        d["id"],
        d["service"],
        d["status"],
        d["started_at"],
        d.get("detected_at"),
        d.get("peak_at"),
        d.get("ended_at"),
        d.get("peak_reports_per_minute"),
        d.get("baseline_reports_per_minute"),
        d.get("total_reports"),
        pairs(d.get("countries") or [], "country"),
        pairs(d.get("problems") or [], "problem"),
        causes,
        f"{cluster['kind']}:{cluster['key']}" if cluster else "",
        " ".join(d.get("detected_by") or []),
        d.get("probe_confirmed"),
        d.get("suspected_abuse"),
        d.get("maintenance"),
    )


def export(
    store: ExportStore,
    what: str,
    fmt: str,
    out: str,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> int:
    """Write the export to `out` (through `out.part`, renamed when complete); rows written."""
    if what not in ("counts", "incidents"):
        raise UsageError(f"--what {what!r}: expected counts or incidents")
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be after --since")
    part = out + ".part"
    try:
        with open(part, "wb") as fh:
            if what == "counts":
                services = [service] if service else store.count_services()
                n = _write_counts(fh, fmt, count_rows(store, services, since, until))
            else:
                docs = store.incidents(IncidentQuery(service=service, since=since, until=until))
                docs.reverse()  # oldest first
                n = _write_incidents(fh, fmt, docs)
        os.replace(part, out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return n


def _write_counts(fh: IO[bytes], fmt: str, batches: Iterator[list[Row]]) -> int:
    n = 0
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("service", pa.string()),
                ("start", pa.timestamp("s", tz="UTC")),
                ("minutes", pa.int16()),
                ("country", pa.string()),
                ("problem", pa.string()),
                ("reports", pa.int64()),
            ]
        )
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for rows in _rebatch(batches):
                cols = list(zip(*rows, strict=True))
                writer.write_table(pa.Table.from_arrays(cols, schema=schema))
                n += len(rows)
            if n == 0:
                writer.write_table(schema.empty_table())
        return n
    if fmt == "csv":
        text = _TextOut(fh)
        w = csv.writer(text, lineterminator="\n")
        w.writerow(COUNT_COLUMNS)
        for rows in batches:
            w.writerows((s, iso(t), m, c, p, r) for s, t, m, c, p, r in rows)
            n += len(rows)
        return n
    for rows in batches:
        fh.write(
            b"".join(
                orjson.dumps(
                    {
                        "service": s,
                        "start": iso(t),
                        "minutes": m,
                        "country": c,
                        "problem": p,
                        "reports": r,
                    }
                )
                + b"\n"
                for s, t, m, c, p, r in rows
            )
        )
        n += len(rows)
    return n


def _write_incidents(fh: IO[bytes], fmt: str, docs: Sequence[dict[str, Any]]) -> int:
    if fmt == "ndjson":
        for d in docs:
            fh.write(orjson.dumps(d) + b"\n")
        return len(docs)
    if fmt == "csv":
        w = csv.writer(_TextOut(fh), lineterminator="\n")
        w.writerow(INCIDENT_COLUMNS)
        for rows in incident_rows(docs):
            w.writerows(rows)
        return len(docs)
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "peak_reports_per_minute": pa.int64(),
        "baseline_reports_per_minute": pa.float64(),
        "total_reports": pa.int64(),
        "probe_confirmed": pa.bool_(),
        "suspected_abuse": pa.bool_(),
        "maintenance": pa.bool_(),
    }
    schema = pa.schema([(c, types.get(c, pa.string())) for c in INCIDENT_COLUMNS])
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        wrote = False
        for rows in incident_rows(docs):
            writer.write_table(pa.Table.from_arrays(list(zip(*rows, strict=True)), schema=schema))
            wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())
    return len(docs)


def _rebatch(batches: Iterator[list[Row]]) -> Iterator[list[Row]]:
    """Batches of about BATCH rows (Parquet row groups of a useful size)."""
    buf: list[Row] = []
    for rows in batches:
        buf.extend(rows)
        if len(buf) >= BATCH:
            yield buf
            buf = []
    if buf:
        yield buf


class _TextOut:
    """A text `write` over a binary file (for the csv module)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh

    def write(self, s: str) -> int:
        self.fh.write(s.encode("utf-8"))
        return len(s)

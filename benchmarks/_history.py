"""The history case of bench_store.py (issue 20): bytes per service-month before and after
compaction on SQLite and PostgreSQL, and the p99 of the long views over a year.

See bench_store.py's docstring for what is measured and how the year is made.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import psycopg

from _common import START_EPOCH, generate_reports, table_row, write_catalog
from outagewatch.catalog import Catalog
from outagewatch.history.compactor import STEP_BUDGET
from outagewatch.pipeline.pipeline import CountRows
from outagewatch.runtime.replay import replay
from outagewatch.settings import PipelineSettings, Settings
from outagewatch.store import Commit
from outagewatch.store.base import unpack
from outagewatch.store.postgres import PostgresStore
from outagewatch.store.rollup import Retention
from outagewatch.store.sqlite import SQLiteStore

DAYS_PER_MONTH = 365.25 / 12
KB = 1000


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sqlite_bytes(path: Path) -> tuple[int, int]:
    """(bytes in use, file bytes) of a SQLite database (the WAL checkpointed first)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    return (pages - free) * size, path.stat().st_size


def pg_schema(base: str) -> tuple[str, str, Callable[[], None]]:
    schema = f"ow_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", schema, drop


def pg_bytes(base: str, schema: str) -> int:
    """Bytes of every table of the schema, with its indexes and TOAST, after VACUUM."""
    with psycopg.connect(base, autocommit=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        ]
        for t in tables:
            con.execute(f"VACUUM {schema}.{t}")
        row = con.execute(
            "SELECT coalesce(sum(pg_total_relation_size(format('%%I.%%I', schemaname, "
            "tablename)::regclass)), 0) FROM pg_tables WHERE schemaname = %s",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def day_rows(db: Path, services: list[str], days: int, day0: int) -> list[CountRows]:
    """The stored minute counts of each replayed day, as the CountRows a commit carries."""
    store = SQLiteStore(str(db))
    countries: dict[bytes, int] = {}
    problems: dict[bytes, int] = {}
    per_day: list[list[np.ndarray]] = [[] for _ in range(days)]
    try:
        for si, sid in enumerate(services):
            for hour, data in store.stored_counts(sid, day0 * 24, (day0 + days) * 24 - 1).raw:
                chunk = unpack(data)
                n = len(chunk)
                cols = np.empty((5, n), np.int64)
                cols[0] = hour * 60 + chunk["m"].astype(np.int64)
                cols[1] = si
                cols[2] = [countries.setdefault(bytes(c), len(countries)) for c in chunk["c"]]
                cols[3] = [problems.setdefault(bytes(p), len(problems)) for p in chunk["p"]]
                cols[4] = chunk["n"]
                per_day[hour // 24 - day0].append(cols)
    finally:
        store.close()
    out = []
    for parts in per_day:
        a = np.concatenate(parts, axis=1) if parts else np.zeros((5, 0), np.int64)
        out.append(
            CountRows(
                minute=a[0],
                service=a[1].astype(np.int32),
                country=a[2].astype(np.int32),
                problem=a[3].astype(np.int32),
                count=a[4],
                services=services,
                countries=[c.decode() for c in countries],
                problems=[p.decode() for p in problems],
            )
        )
    return out


def write_year(
    store: SQLiteStore | PostgresStore,
    week: list[CountRows],
    year_days: int,
    day0: int,
    retention: Retention,
    steps: list[float] | None = None,
    after_day: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Commit `year_days` days from `day0` (the sample, again and again), compacting after
    each day as the background compactor would; (commit s, compaction s). `steps` gets the
    seconds of every compaction step (each one transaction: how long it holds the writer)."""
    commit_s = compact_s = 0.0
    timed = [] if steps is None else steps
    n = len(week)
    for d in range(year_days):
        src = week[d % n]
        shift = (d - d % n) * 1440
        rows = CountRows(
            minute=src.minute + shift,
            service=src.service,
            country=src.country,
            problem=src.problem,
            count=src.count,
            services=src.services,
            countries=src.countries,
            problems=src.problems,
        )
        t0 = time.perf_counter()
        store.commit(Commit(b"", [], [], rows, state_key="bench-history"))
        t1 = time.perf_counter()
        now = (day0 + d + 1) * 86_400.0
        while True:
            ts = time.perf_counter()
            handled = store.compact_step(now, retention, STEP_BUDGET)
            timed.append(time.perf_counter() - ts)
            if not handled:
                break
        if after_day is not None:
            after_day()
        commit_s += t1 - t0
        compact_s += time.perf_counter() - t1
    return commit_s, compact_s


async def time_views(
    db: str, catalog: Catalog, now: float, services: list[str], requests: int
) -> dict[str, float]:
    """p50/p99 ms of the service page and of the history API (90 and 365 days)."""
    from outagewatch.server import Server
    from outagewatch.web.app import create_app

    settings = Settings.resolve({"OUTAGEWATCH_DB": db}, {})
    server = Server(settings, catalog, clock=lambda: now, tick_interval_s=3600, watch=False)
    app = create_app(server)
    app.state.live = await server.start()
    rng = random.Random(7)
    out: dict[str, float] = {}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            for name, path in (
                ("page", "/services/{}"),
                ("history90", "/api/v1/services/{}/history?days=90"),
                ("history365", "/api/v1/services/{}/history?days=365"),
            ):
                times = []
                for i in range(requests + 10):
                    sid = rng.choice(services)
                    t0 = time.perf_counter()
                    r = await c.get(path.format(sid))
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise RuntimeError(f"{path.format(sid)}: {r.status_code} {r.text[:200]}")
                    if i >= 10:  # the first few warm caches and templates
                        times.append(dt * 1000)
                out[f"{name}_p50"] = float(np.percentile(times, 50))
                out[f"{name}_p99"] = float(np.percentile(times, 99))
    finally:
        await server.stop()
    return out


def bench_history(
    *, services: int, sample_days: int, year_days: int, per_hour: int, pg: str, requests: int
) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="ow-bench-history-"))
    retention = Retention()
    try:
        cat, ndjson = work / "catalog.toml", work / "sample.ndjson"
        write_catalog(cat, services)
        catalog = Catalog.load(str(cat))
        ids = sorted(catalog.services)
        lines = services * sample_days * 24 * per_hour
        generate_reports(ndjson, lines, float(sample_days), services)
        sample = work / "sample.db"
        store = SQLiteStore(str(sample))
        try:
            t0 = time.perf_counter()
            replay(store, catalog, PipelineSettings(), [str(ndjson)])
            _say(f"history: replayed {lines:,} lines in {time.perf_counter() - t0:.1f} s")
        finally:
            store.close()
        ndjson.unlink()
        used, _ = sqlite_bytes(sample)
        before = used / (services * sample_days / DAYS_PER_MONTH)
        day0 = START_EPOCH // 86_400
        week = day_rows(sample, ids, sample_days, day0)
        months = services * year_days / DAYS_PER_MONTH
        # SQLite
        year = work / "year.db"
        s = SQLiteStore(str(year))
        steps: list[float] = []
        try:
            commit_s, compact_s = write_year(s, week, year_days, day0, retention, steps)
        finally:
            s.close()
        sq_used, sq_file = sqlite_bytes(year)
        _say(
            f"history: SQLite year written (commits {commit_s:.1f} s, compaction "
            f"{compact_s:.1f} s): {sq_used / months / KB:,.1f} KB per service-month in use, "
            f"file {sq_file / months / KB:,.1f} KB; {len(steps):,} compaction steps, p99 "
            f"{np.percentile(steps, 99) * 1000:.1f} ms, max {max(steps) * 1000:.1f} ms"
        )
        step_p99, step_max = np.percentile(steps, 99) * 1000, max(steps) * 1000
        now = (day0 + year_days) * 86_400.0 - 1
        views = asyncio.run(time_views(str(year), catalog, now, ids, requests))
        _say("history: views " + ", ".join(f"{k} {v:.1f} ms" for k, v in views.items()))
        # PostgreSQL
        url, schema, drop = pg_schema(pg)
        try:
            p = PostgresStore(url)
            vac = psycopg.connect(url, autocommit=True)
            try:
                # A simulated day takes a second here: VACUUM the raw hours after each one, as
                # autovacuum does many times a real day (else their dead rows pile up).
                pg_commit_s, pg_compact_s = write_year(
                    p,
                    week,
                    year_days,
                    day0,
                    retention,
                    after_day=lambda: vac.execute("VACUUM minute_counts"),
                )
            finally:
                vac.close()
                p.close()
            pg_used = pg_bytes(pg, schema)
        finally:
            drop()
        _say(
            f"history: PostgreSQL year written (commits {pg_commit_s:.1f} s, compaction "
            f"{pg_compact_s:.1f} s): {pg_used / months / KB:,.1f} KB per service-month"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = (
        f"before (raw minute chunks, {sample_days} d replayed): {before / KB:,.0f} KB; after "
        f"compaction, {year_days} d: SQLite {sq_used / months / KB:,.1f} KB, PostgreSQL "
        f"{pg_used / months / KB:,.1f} KB ({services} services, {per_hour} reports per "
        f"service-hour); SQLite compaction steps (one transaction each) p99 {step_p99:.0f} ms, "
        f"max {step_max:.0f} ms"
    )
    speed = (
        f"service page p99 {views['page_p99']:.1f} ms (p50 {views['page_p50']:.1f}); history "
        f"?days=90 p99 {views['history90_p99']:.1f} ms, ?days=365 p99 "
        f"{views['history365_p99']:.1f} ms; SQLite, {year_days} d x {services} services, "
        f"{requests} requests each, in-process ASGI"
    )
    return [
        table_row("bytes per service-month of history", size, "<= 200 KB on SQLite"),
        table_row("long views over a year of history", speed, "p99 < 50 ms"),
    ]

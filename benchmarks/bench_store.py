"""Replay throughput by store: the same `replay` into SQLite and into PostgreSQL.

Generates simulated reports (the benchmark traffic of `bench_replay.py`) into a temporary
directory and replays them in this process, through the real pipeline and store, into a fresh
SQLite file and into a fresh schema of a PostgreSQL database (default
postgresql://postgres@127.0.0.1:5432/test; `--pg URL` or $OUTAGEWATCH_BENCH_PG). Each store is
run `--runs` times; the best wall time is reported as events/s, with the time spent in commits.

    .venv/bin/python benchmarks/bench_store.py [--quick] [--lines N --days D --services S]

Target: PostgreSQL within 20% of SQLite (the pipeline, not the store, should be the limit).

History case (issue 20, `--history-only` runs just it, `--no-history` skips it): a simulated
week of 100 services (`--sample-days`, the simulator's benchmark traffic at
`--per-hour` reports per service-hour) is replayed into SQLite; its bytes per service-month
are the "before" figure. A year (`--year-days`) is then written through the store API from
that week's stored minute counts (the same rows replay wrote, week after week, one commit a
day: generating and replaying 70 million lines would take far longer than the point needs),
compacting as `serve` does (after every simulated day), into SQLite and into PostgreSQL; the
bytes per service-month after compaction are reported for both, and the p99 of the service
page and of GET /api/v1/services/{id}/history?days=90 over that year (in-process ASGI).

Targets: <= 200 KB per service-month on SQLite; page and history p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import quote

import psycopg

from _common import generate_reports, table_row, write_catalog
from outagewatch.catalog import Catalog
from outagewatch.runtime.replay import replay
from outagewatch.settings import PipelineSettings
from outagewatch.store import Commit
from outagewatch.store.postgres import PostgresStore
from outagewatch.store.sqlite import SQLiteStore

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_RATIO = 0.8


class TimedStore:
    """A store whose commits are timed (everything else is passed through)."""

    def __init__(self, inner: SQLiteStore | PostgresStore) -> None:
        self.inner = inner
        self.commit_s = 0.0
        self.commits = 0

    def commit(self, c: Commit) -> None:
        t0 = time.perf_counter()
        self.inner.commit(c)
        self.commit_s += time.perf_counter() - t0
        self.commits += 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def run_once(
    open_store: Callable[[], SQLiteStore | PostgresStore], catalog: Catalog, path: Path
) -> tuple[float, float, int, int]:
    """(wall s, commit s, commits, incidents) of one replay into a fresh store."""
    store = TimedStore(open_store())
    try:
        t0 = time.perf_counter()
        replay(store, catalog, PipelineSettings(), [str(path)])  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        incidents = len(store.inner.incidents())
    finally:
        store.inner.close()
    return wall, store.commit_s, store.commits, incidents


def pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    schema = f"ow_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", drop


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--history-only", action="store_true", help="only the history case")
    ap.add_argument("--no-history", action="store_true", help="skip the history case")
    ap.add_argument("--sample-days", type=int, default=None, help="replayed days (default 7)")
    ap.add_argument("--year-days", type=int, default=None, help="days of history (default 365)")
    ap.add_argument("--per-hour", type=int, default=80, help="reports per service-hour")
    ap.add_argument("--quick", action="store_true", help="100k lines, 2 days, 20 services")
    ap.add_argument("--lines", type=int, default=None, help="report lines (default 1,000,000)")
    ap.add_argument("--days", type=float, default=None, help="days of traffic (default 8)")
    ap.add_argument("--services", type=int, default=None, help="services (default 120)")
    ap.add_argument("--runs", type=int, default=2, help="replays per store; the best counts")
    ap.add_argument("--pg", default=os.environ.get("OUTAGEWATCH_BENCH_PG", DEFAULT_PG))
    args = ap.parse_args(argv)
    rows: list[str] = []
    if not args.no_history:
        from _history import bench_history

        rows += bench_history(
            services=args.services or (4 if args.quick else 100),
            sample_days=args.sample_days or (1 if args.quick else 7),
            year_days=args.year_days or (35 if args.quick else 365),
            per_hour=args.per_hour,
            pg=args.pg,
            requests=20 if args.quick else 300,
        )
    if args.history_only:
        print("\n".join(rows))
        return 0
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    days = args.days or (2.0 if args.quick else 8.0)
    services = args.services or (20 if args.quick else 120)
    work = Path(tempfile.mkdtemp(prefix="ow-bench-store-"))
    try:
        ndjson, cat = work / "reports.ndjson", work / "catalog.toml"
        write_catalog(cat, services)
        generate_reports(ndjson, lines, days, services)
        catalog = Catalog.load(str(cat))
        # Warm-up (JIT compilation, caches), untimed, so that the first store is not penalised.
        run_once(partial(SQLiteStore, str(work / "warmup.db")), catalog, ndjson)
        best: dict[str, tuple[float, float, int, int]] = {}
        for run in range(args.runs):
            for kind in ("sqlite", "postgresql"):
                if kind == "sqlite":
                    r = run_once(partial(SQLiteStore, str(work / f"run{run}.db")), catalog, ndjson)
                else:
                    url, drop = pg_schema(args.pg)
                    try:
                        r = run_once(partial(PostgresStore, url), catalog, ndjson)
                    finally:
                        drop()
                wall, commit_s, commits, incidents = r
                print(
                    f"{kind:10s} run {run + 1}: {lines / wall:>10,.0f} events/s "
                    f"({wall:.2f} s, commits {commit_s:.2f} s in {commits}, "
                    f"{incidents} incidents)",
                    file=sys.stderr,
                )
                if kind not in best or wall < best[kind][0]:
                    best[kind] = r
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sq, pg = best["sqlite"], best["postgresql"]
    ratio = sq[0] / pg[0]
    figure = (
        f"SQLite {lines / sq[0]:,.0f} events/s (commits {sq[1]:.2f} s), PostgreSQL "
        f"{lines / pg[0]:,.0f} events/s (commits {pg[1]:.2f} s): {ratio:.0%} of SQLite; "
        f"{lines:,} lines, {services} services, {days:g} d, best of {args.runs}"
    )
    rows.append(
        table_row("replay by store, PostgreSQL vs SQLite", figure, "PostgreSQL >= 80% of SQLite")
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""History that lasts (issue 20): the day-block codec, compaction and retention on every store
(SQLite and PostgreSQL, the fixtures of test_store), the 90-day history, export and backup."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import test_store
from outagewatch.history.compactor import compact
from outagewatch.history.export import export
from outagewatch.history.view import days_view
from outagewatch.store import codec
from outagewatch.store.base import CHUNK_DTYPE
from outagewatch.store.counts import daily_reports, iter_days
from outagewatch.store.rollup import Retention
from test_store import AnyStore, Backend, commit, doc

# The store suite's fixtures: every test taking `store` runs on SQLite and on PostgreSQL.
backend = test_store.backend
store = test_store.store

DAY = 86_400
D0 = 20_000  # 2024-10-04, a UTC day number
T0 = D0 * DAY


def rows_of(n: int, seed: int = 1, buckets: int = 1440) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = {(int(m), c, p) for m, c, p in zip(
        rng.integers(0, buckets, n), rng.choice([b"US", b"GB", b"DE"], n),
        rng.choice([b"login", b"app", b"a-very-long-problem-name-of-32-c"], n), strict=True,
    )}  # fmt: skip
    out = np.empty(len(keys), CHUNK_DTYPE)
    for i, (m, c, p) in enumerate(sorted(keys)):
        out[i] = (m, c, p, int(rng.integers(1, 70_000)))
    return out


def as_set(rows: np.ndarray) -> set[tuple[int, bytes, bytes, int]]:
    return {(int(r["m"]), bytes(r["c"]), bytes(r["p"]), int(r["n"])) for r in rows}


# ---------------------------------------------------------------------- codec
@pytest.mark.parametrize("n", [0, 1, 7, 2000])
def test_a_block_decodes_to_the_rows_it_was_encoded_from(n: int) -> None:
    rows = rows_of(n)
    assert as_set(codec.decode(codec.encode(rows))) == as_set(rows)


def test_blocks_are_far_smaller_than_packed_rows() -> None:
    rows = rows_of(3000)
    assert len(codec.encode(rows)) < rows.nbytes / 5


def test_coarser_buckets_keep_every_total_and_breakdown() -> None:
    rows = rows_of(2000)
    q = codec.coarsen(rows, 1, 15)
    assert q["m"].max() < 96 and codec.total(q) == codec.total(rows)
    for c in (b"US", b"GB", b"DE"):
        assert q["n"][q["c"] == c].sum() == rows["n"][rows["c"] == c].sum()
    h = codec.coarsen(q, 15, 60)
    assert h["m"].max() < 24 and codec.total(h) == codec.total(rows)
    minute, n = codec.per_minute(h, 60)
    assert n.sum() == codec.total(rows) and minute.max() < 1440


def test_a_damaged_block_is_a_store_error() -> None:
    from outagewatch.errors import StoreError

    with pytest.raises(StoreError, match="damaged"):
        codec.decode(b"not a block")


def test_retention_rejects_a_rollup_span_shorter_than_the_minute_span() -> None:
    with pytest.raises(ValueError, match="minute_days"):
        Retention(minute_days=40, rollup_days=30)


# ---------------------------------------------------------------------- compaction, both stores
def history_rows(days: int, per_day: int = 3) -> list[tuple[int, str, str, str, int]]:
    """Reports of `days` days from D0: a few minutes a day of two services and countries."""
    rows = []
    for d in range(days):
        for k in range(per_day):
            m = (T0 + d * DAY) // 60 + 7 + k * 400
            rows += [
                (m, "x", "US", "app", 2 + k),
                (m, "x", "GB", "login", 1),
                (m, "y", "US", "app", 5),
            ]
    return rows


def test_compaction_keeps_every_count_and_coarsens_old_days(store: AnyStore) -> None:
    store.commit(commit(rows=history_rows(10)))
    before_x = store.minute_counts("x", T0, T0 + 10 * DAY)
    now = T0 + 12 * DAY  # days 0..9 are 3 to 12 days old
    handled = compact(store, now, Retention(minute_days=5, rollup_days=8))
    assert handled >= 20
    assert store.count_bounds() == (D0 * 24, (D0 + 9) * 24 + 23)
    assert store.stored_counts("x", 0, 10**9).raw == []
    blocks = store.stored_counts("x", D0 * 24, (D0 + 9) * 24 + 23).blocks
    assert [res for _, res, _, _ in blocks] == [60] * 5 + [15] * 3 + [1] * 2
    after_x = store.minute_counts("x", T0, T0 + 10 * DAY)
    assert after_x.sum() == before_x.sum()
    # Minute detail where it is kept: the same minutes.
    recent = slice(8 * 1440, 10 * 1440)
    assert after_x[recent].tolist() == before_x[recent].tolist()
    # The per-country breakdown survives every resolution.
    day0 = codec.decode(blocks[0][3])
    assert day0["n"][day0["c"] == b"GB"].sum() == 3
    assert daily_reports(store, "x", D0, D0 + 10).tolist() == [12] * 10
    assert daily_reports(store, "y", D0, D0 + 10).tolist() == [15] * 10
    assert compact(store, now, Retention(5, 8)) == 0  # idempotent: nothing left


def test_a_late_report_after_compaction_is_folded_in(store: AnyStore) -> None:
    store.commit(commit(rows=history_rows(2)))
    now = T0 + 3 * DAY
    compact(store, now, Retention(30, 395))
    late = (T0 + 3600) // 60 + 1
    store.commit(commit(rows=[(late, "x", "US", "app", 4)]))
    assert daily_reports(store, "x", D0, D0 + 2).tolist() == [16, 12]  # raw + block
    compact(store, now, Retention(30, 395))
    assert store.stored_counts("x", 0, 10**9).raw == []
    assert daily_reports(store, "x", D0, D0 + 2).tolist() == [16, 12]
    assert store.minute_counts("x", late * 60, late * 60 + 60).tolist() == [4]


def test_a_replay_commit_folds_old_hours_as_compaction_would(store: AnyStore) -> None:
    """`Commit.fold` (replay): the hours before the commit's last two go straight into day
    blocks, with raw hours stored before for them; the blocks are those of committing raw
    and compacting as of the end of the commit's newest hour, byte for byte."""
    rows = history_rows(4)  # days D0..D0+3; hours 0, 6 and 13 of each day
    early = [((T0 + 1800) // 60, "x", "US", "app", 6)]  # an hour already stored raw
    same = [(m, f"{s}-raw", c, p, n) for m, s, c, p, n in rows + early]
    store.commit(commit(rows=early + [(m, f"{s}-raw", c, p, n) for m, s, c, p, n in early]))
    retention = Retention(minute_days=2, rollup_days=3)
    store.commit(dataclasses.replace(commit(rows=rows), fold=retention))
    store.commit(commit(rows=same[: -len(early)]))
    newest = max(m for m, *_ in rows) // 60
    # The newest hour stays raw (compaction keeps the current and previous hour).
    assert [h for h, _ in store.stored_counts("x", 0, 10**9).raw] == [newest]
    assert compact(store, (newest + 1) * 3600, retention) > 0  # the "-raw" services only
    for s in ("x", "y"):
        folded = store.stored_counts(s, 0, 10**9)
        reference = store.stored_counts(f"{s}-raw", 0, 10**9)
        assert folded == reference
    blocks = store.stored_counts("x", 0, 10**9).blocks
    assert [res for _, res, _, _ in blocks] == [60, 15, 1, 1]  # by age, as of D0 + 3
    assert daily_reports(store, "x", D0, D0 + 4).tolist() == [18, 12, 12, 12]


def test_the_current_and_previous_hour_stay_raw(store: AnyStore) -> None:
    m = (T0 + 5 * 3600) // 60
    store.commit(commit(rows=[(m - 60, "x", "US", "app", 1), (m, "x", "US", "app", 2)]))
    compact(store, T0 + 5 * 3600 + 30, Retention())
    assert [h for h, _ in store.stored_counts("x", 0, 10**9).raw] == [D0 * 24 + 4, D0 * 24 + 5]


def test_days_view_counts_incidents_minutes_and_worst_status() -> None:
    a = doc("a", started=T0 + DAY - 1800, ended=T0 + DAY + 1800)  # across midnight
    a.update(peak_reports_per_minute=500, baseline_reports_per_minute=2.0)
    b = doc("b", started=T0 + DAY + 600, ended=T0 + DAY + 3600)  # overlaps a's second half
    hidden = doc("c", started=T0 + 2 * DAY, ended=T0 + 2 * DAY + 600)
    hidden["suspected_abuse"] = True  # a suspected flood, unconfirmed: not public
    view = days_view([a, b, hidden], np.array([5, 6, 7]), D0, T0 + 3 * DAY)
    assert [d["date"] for d in view] == ["2024-10-04", "2024-10-05", "2024-10-06"]
    assert [d["incidents"] for d in view] == [1, 2, 0]
    assert [d["status"] for d in view] == ["outage", "outage", "ok"]
    assert [d["outage_minutes"] for d in view] == [30, 60, 0]
    assert [d["reports"] for d in view] == [5, 6, 7]


# ---------------------------------------------------------------------- export, both stores
@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
@pytest.mark.slow
def test_exported_counts_sum_to_the_stored_totals(
    store: AnyStore, tmp_path: Path, fmt: str
) -> None:
    import pandas as pd

    store.commit(commit(rows=history_rows(6)))
    compact(store, T0 + 8 * DAY, Retention(minute_days=3, rollup_days=5))
    store.commit(commit(rows=[((T0 + 7 * DAY) // 60, "x", "FR", "app", 11)]))  # raw, recent
    out = tmp_path / f"c.{fmt}"
    n = export(store, "counts", fmt, str(out))
    if fmt == "csv":
        df = pd.read_csv(out)
    elif fmt == "ndjson":
        df = pd.read_json(out, lines=True)
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(out).num_rows == n
        df = pd.read_parquet(out)
    assert list(df.columns) == ["service", "start", "minutes", "country", "problem", "reports"]
    assert len(df) == n
    stored = {s: int(daily_reports(store, s, D0, D0 + 8).sum()) for s in store.count_services()}
    assert df.groupby("service")["reports"].sum().to_dict() == stored == {"x": 83, "y": 90}
    assert sorted(df["minutes"].unique().tolist()) == [1, 15, 60]
    assert df[df.country == "FR"]["reports"].sum() == 11


def test_export_selects_a_service_and_a_time_span(store: AnyStore, tmp_path: Path) -> None:
    store.commit(commit(rows=history_rows(4)))
    out = tmp_path / "c.ndjson"
    export(store, "counts", "ndjson", str(out), service="x", since=T0 + DAY, until=T0 + 3 * DAY)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["service"] for x in lines} == {"x"}
    assert sum(x["reports"] for x in lines) == 24
    assert lines[0]["start"] == "2024-10-05T00:07:00Z" and lines[0]["minutes"] == 1


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_export_incidents(store: AnyStore, tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    store.commit(commit(incidents=[doc("i1", started=T0), doc("i2", started=T0 + DAY)]))
    out = tmp_path / f"i.{fmt}"
    assert export(store, "incidents", fmt, str(out)) == 2
    if fmt == "ndjson":
        ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    else:
        df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        ids = df["id"].tolist()
        assert df["total_reports"].tolist() == [10, 10]
    assert ids == ["i1", "i2"]  # oldest first


# ---------------------------------------------------------------------- command line
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outagewatch.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_backup_of_postgresql_says_to_use_pg_dump(tmp_path: Path) -> None:
    done = cli("--db", "postgresql://nobody@127.0.0.1:1/none", "backup", str(tmp_path / "b"))
    assert done.returncode == 2 and "pg_dump" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_export_and_backup_refuse_bad_input_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    done = cli("--db", str(db), "export", "--what", "counts", "--format", "csv",
               "--out", str(tmp_path / "o.csv"), "--since", "yesterday")  # fmt: skip
    assert done.returncode == 2 and "--since" in done.stderr and "Traceback" not in done.stderr
    done = cli("--db", str(db), "export", "--what", "counts", "--format", "csv",
               "--out", str(tmp_path / "o.csv"), "--service", "nope")  # fmt: skip
    assert done.returncode == 2 and "nope" in done.stderr
    done = cli("--db", str(tmp_path / "missing.db"), "backup", str(tmp_path / "b.db"))
    assert done.returncode == 2 and "no such SQLite database" in done.stderr
    (tmp_path / "taken.db").write_bytes(b"")
    done = cli("--db", str(db), "backup", str(tmp_path / "taken.db"))
    assert done.returncode == 2 and "already exists" in done.stderr


@pytest.mark.slow
def test_replay_compacts_and_export_sums_to_what_it_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    import pandas as pd

    from outagewatch.cli import main
    from outagewatch.sim.simulate import demo_traffic, simulate
    from outagewatch.store.sqlite import SQLiteStore

    traffic = [t for t in demo_traffic() if t.service == "x"]
    sim = simulate(traffic, T0, 1440 + 240, seed=11)
    events = tmp_path / "e.ndjson"
    events.write_bytes(b"\n".join(sim.lines) + b"\n")
    db = str(tmp_path / "r.db")
    assert main(["--db", db, "replay", "--no-progress", str(events)]) == 0
    found = re.search(r"reports counted after dedup: ([\d,]+)", capsys.readouterr().out)
    assert found is not None
    counted = int(found.group(1).replace(",", ""))
    out = tmp_path / "c.csv"
    assert (
        main(["--db", db, "export", "--what", "counts", "--format", "csv", "--out", str(out)]) == 0
    )
    assert int(pd.read_csv(out)["reports"].sum()) == counted > 0
    s = SQLiteStore(db)
    try:
        # The replay ends in hour 27 of D0: only the last replayed hour is still raw.
        assert [h for h, _ in s.stored_counts("x", 0, 10**9).raw] == [D0 * 24 + 27]
        assert [d for d, _, _, _ in s.stored_counts("x", D0 * 24, (D0 + 3) * 24 + 23).blocks] == [
            D0,
            D0 + 1,
        ]
    finally:
        s.close()


def test_a_read_during_compaction_counts_every_report_once(
    store: AnyStore, backend: Backend
) -> None:
    """Compaction moves raw hours into day blocks in one transaction; a reader (another
    connection, as the server's pages and API are) sees either side of it, never both —
    the pages once showed a day's counts doubled while it was being compacted."""
    days = 12
    store.commit(commit(rows=history_rows(days)))
    total = int(store.minute_counts("x", T0, T0 + days * DAY).sum())
    reader = backend.open()
    seen: list[tuple[int, int, int]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append((
                int(reader.minute_counts("x", T0, T0 + days * DAY).sum()),
                int(daily_reports(reader, "x", D0, D0 + days).sum()),
                sum(int(codec.total(rows)) for _, _, rows in iter_days(reader, "x", D0, D0 + days)),
            ))  # fmt: skip

    thread = threading.Thread(target=read)
    thread.start()
    try:
        now = T0 + (days + 2) * DAY
        for _ in range(days * 24):  # one raw hour per step: many moments to read between
            if store.compact_step(now, Retention(minute_days=1, rollup_days=3), budget=2) == 0:
                break
    finally:
        done.set()
        thread.join()
        reader.close()
    assert seen and all(s == (total, total, total) for s in seen), {s for s in seen}


def test_postgresql_compaction_in_one_schema_does_not_make_another_skip() -> None:
    """Compaction takes an advisory lock so that one process of a store compacts at a time;
    stores in other schemas of the same database (other deployments, parallel tests) have
    their own tables and must still compact (a database-wide key made them skip: this
    file's export test failed under `pytest -n 2` when another worker compacted)."""
    from outagewatch.store.postgres import PostgresStore
    from services import fresh_pg_schema

    with fresh_pg_schema("cmp1") as one_url, fresh_pg_schema("cmp2") as two_url:
        one, two = PostgresStore(one_url), PostgresStore(two_url)
        try:
            for s in (one, two):
                s.commit(commit(rows=history_rows(6)))
            retention = Retention(minute_days=3, rollup_days=5)
            with one._tx("holding the compaction lock") as cx:
                assert one._compact_lock(cx)
                assert compact(one, T0 + 8 * DAY, retention) == 0  # its own: one at a time
                assert compact(two, T0 + 8 * DAY, retention) > 0
            res = sorted({r for _, r, _, _ in two.stored_counts("x", 0, 10**9).blocks})
            assert res == [15, 60]  # coarsened by age, as of D0 + 8
        finally:
            one.close()
            two.close()

"""One store suite, run against every store: SQLite and PostgreSQL, the same assertions.

Migrations, atomic commits, minute chunks, incident queries. PostgreSQL is the real server
(tests/services.py starts it when needed); every test gets its own schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from outagewatch.errors import StoreError
from outagewatch.events import OtherEvent, iso
from outagewatch.incidents.lifecycle import State, Transition
from outagewatch.pipeline.pipeline import CountRows
from outagewatch.store import Commit, open_store
from outagewatch.store.base import DeliveryQuery, DeliveryUpdate, IncidentQuery, incident_matches
from outagewatch.store.postgres import MIGRATIONS, PostgresStore
from outagewatch.store.sql import migrations
from outagewatch.store.sqlite import SQLiteStore
from services import fresh_pg_schema, postgres_url

H0 = 1_741_593_600  # 2025-03-10T08:00:00Z, a whole hour
M0 = H0 // 60

AnyStore = SQLiteStore | PostgresStore


@dataclass
class Backend:
    """One store implementation under test, with raw access to its database for checks."""

    kind: str
    url: str  # what `--db` would say
    migrations_folder: str
    rows: Callable[[str], list[tuple[Any, ...]]]  # run raw SQL, return the rows
    set_version: Callable[[int], None]

    def open(self) -> AnyStore:
        return SQLiteStore(self.url) if self.kind == "sqlite" else PostgresStore(self.url)

    def version(self) -> int:
        (row,) = self.rows(
            "PRAGMA user_version"
            if self.kind == "sqlite"
            else "SELECT max(version) FROM schema_version"
        )
        return int(row[0])

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])

    def latest(self) -> int:
        return migrations(self.migrations_folder)[-1][0]


def _sqlite_backend(path: str) -> Backend:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(path)
        try:
            return list(con.execute(sql).fetchall())
        finally:
            con.close()

    def set_version(v: int) -> None:
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA user_version = {v}")
        con.commit()
        con.close()

    return Backend("sqlite", path, "migrations", rows, set_version)


def _pg_backend(url: str) -> Backend:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as con:
            return list(con.execute(sql.encode()).fetchall())

    def set_version(v: int) -> None:
        with psycopg.connect(url) as con:
            con.execute("INSERT INTO schema_version(version) VALUES (%s)", (v,))

    return Backend("postgresql", url, MIGRATIONS, rows, set_version)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite_backend(str(tmp_path / "ow.db"))
    else:
        with fresh_pg_schema("store") as url:
            yield _pg_backend(url)


@pytest.fixture
def store(backend: Backend) -> Iterator[AnyStore]:
    s = backend.open()
    yield s
    s.close()


def counts(rows: list[tuple[int, str, str, str, int]]) -> CountRows:
    """CountRows from (minute, service, country, problem, count) tuples."""
    services: list[str] = []
    countries: list[str] = []
    problems: list[str] = []

    def idx(vocab: list[str], v: str) -> int:
        if v not in vocab:
            vocab.append(v)
        return vocab.index(v)

    return CountRows(
        minute=np.array([r[0] for r in rows], np.int64),
        service=np.array([idx(services, r[1]) for r in rows], np.int32),
        country=np.array([idx(countries, r[2]) for r in rows], np.int32),
        problem=np.array([idx(problems, r[3]) for r in rows], np.int32),
        count=np.array([r[4] for r in rows], np.int64),
        services=services,
        countries=countries,
        problems=problems,
    )


def doc(
    iid: str,
    service: str = "x",
    status: str = "ongoing",
    started: int = H0,
    ended: int | None = None,
    total: int = 10,
) -> dict[str, Any]:
    return {
        "id": iid,
        "service": service,
        "status": status,
        "started_at": iso(started),
        "detected_at": iso(started + 120),
        "peak_at": iso(started + 300),
        "ended_at": None if ended is None else iso(ended),
        "peak_reports_per_minute": 50,
        "baseline_reports_per_minute": 1.5,
        "total_reports": total,
        "countries": [{"country": "US", "reports": total}],
        "problems": [{"problem": "app", "reports": total}],
        "probe_confirmed": None,
        "suspected_abuse": False,
        "causes": [],
        "cluster": None,
    }


def commit(
    state: bytes = b"state",
    incidents: list[dict[str, Any]] | None = None,
    transitions: list[Transition] | None = None,
    rows: list[tuple[int, str, str, str, int]] | None = None,
    others: list[OtherEvent] | None = None,
) -> Commit:
    return Commit(
        state=state,
        incidents=incidents or [],
        transitions=transitions or [],
        counts=counts(rows or []),
        others=others or [],
    )


# ---------------------------------------------------------------------- migrations
def test_migrations_set_user_version_to_the_latest(store: AnyStore, backend: Backend) -> None:
    known = migrations(backend.migrations_folder)
    assert known, "there is at least one migration"
    assert [v for v, _ in known] == sorted({v for v, _ in known})
    assert backend.version() == known[-1][0]


def test_reopening_an_existing_db_keeps_its_data(backend: Backend) -> None:
    s = backend.open()
    s.save_catalog('[services.a]\nname = "A"\n')
    s.commit(commit(state=b"abc", incidents=[doc("i1")], rows=[(M0, "x", "US", "app", 3)]))
    s.close()
    again = backend.open()
    try:
        assert backend.version() == backend.latest()
        assert again.load_catalog() == '[services.a]\nname = "A"\n'
        assert again.load_state() == b"abc"
        assert [d["id"] for d in again.incidents()] == ["i1"]
        assert again.minute_counts("x", H0, H0 + 60).tolist() == [3]
    finally:
        again.close()


def test_db_of_a_newer_version_is_refused(backend: Backend) -> None:
    backend.open().close()
    latest = backend.latest()
    backend.set_version(latest + 1)
    with pytest.raises(StoreError) as info:
        backend.open()
    msg = str(info.value)
    assert (backend.url if backend.kind == "sqlite" else "postgresql://") in msg
    assert str(latest + 1) in msg
    assert "\n" not in msg


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreError) as info:
        SQLiteStore(str(p))
    assert str(p) in str(info.value)


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    postgres_url()  # only where PostgreSQL can run: the error below must come from the driver
    url = "postgresql://ow:s3cret@127.0.0.1:5432/no_such_database_here"
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    msg = str(info.value)
    assert "no_such_database_here" in msg
    assert "s3cret" not in msg
    assert "\n" not in msg


def test_open_store_selects_the_store_by_url(backend: Backend) -> None:
    s = open_store(backend.url)
    try:
        assert isinstance(s, SQLiteStore if backend.kind == "sqlite" else PostgresStore)
    finally:
        s.close()


def test_state_is_kept_per_key(store: AnyStore) -> None:
    store.commit(commit(state=b"one"))
    store.commit(Commit(b"p3", [], [], counts([]), state_key="partition/3"))
    assert store.load_state() == b"one"
    assert store.load_state("partition/3") == b"p3"
    assert store.load_state("partition/4") is None


def test_fresh_db_is_empty(store: AnyStore) -> None:
    assert store.load_catalog() is None
    assert store.load_state() is None
    assert store.incidents() == []
    assert store.minute_counts("x", H0, H0 + 3600).tolist() == [0] * 60


def test_catalog_is_replaced(store: AnyStore) -> None:
    store.save_catalog("one")
    store.save_catalog("two")
    assert store.load_catalog() == "two"


# ---------------------------------------------------------------------- atomic commits
def test_commit_writes_everything(store: AnyStore, backend: Backend) -> None:
    tr = Transition("i1", "x", "opened", State.QUIET, State.ONGOING, H0 + 120.0, {"why": "surge"})
    other = OtherEvent("metric", "x", H0 + 5.0, b'{"type":"metric"}')
    store.commit(
        commit(
            state=b"s1",
            incidents=[doc("i1")],
            transitions=[tr],
            rows=[(M0, "x", "US", "app", 2)],
            others=[other],
        )
    )
    assert store.load_state() == b"s1"
    assert [d["id"] for d in store.incidents()] == ["i1"]
    assert store.incidents()[0] == doc("i1")
    assert store.transitions("i1") == [
        {
            "action": "opened",
            "from": "quiet",
            "to": "ongoing",
            "at": H0 + 120.0,
            "detail": {"why": "surge"},
        }
    ]
    assert backend.count("events") == 1
    assert store.minute_counts("x", H0, H0 + 120).tolist() == [2, 0]


def test_failed_commit_leaves_nothing_written(
    store: AnyStore, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.commit(commit(state=b"before", rows=[(M0, "x", "US", "app", 1)]))

    def boom(cx: object, c: Commit) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_write_incidents", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.commit(
            commit(
                state=b"after",
                incidents=[doc("i1")],
                rows=[(M0, "x", "US", "app", 5), (M0 + 1, "y", "DE", "login", 7)],
                others=[OtherEvent("probe", "x", H0 + 1.0, b"{}")],
            )
        )
    monkeypatch.undo()
    # Nothing of the failed commit is visible, from this connection or another one.
    assert store.load_state() == b"before"
    assert store.minute_counts("x", H0, H0 + 120).tolist() == [1, 0]
    assert store.minute_counts("y", H0, H0 + 120).tolist() == [0, 0]
    assert store.incidents() == []
    assert backend.count("events") == 0
    assert backend.count("minute_counts") == 1
    # ...and the store still works.
    store.commit(commit(state=b"later", rows=[(M0, "x", "US", "app", 4)]))
    assert store.load_state() == b"later"
    assert store.minute_counts("x", H0, H0 + 60).tolist() == [5]


# ---------------------------------------------------------------------- minute chunks
def test_minute_chunks_of_two_commits_sum_up(store: AnyStore) -> None:
    store.commit(
        commit(
            rows=[
                (M0 + 1, "x", "US", "app", 3),
                (M0 + 1, "x", "GB", "app", 1),
                (M0 + 2, "x", "US", "login", 2),
                (M0 + 59, "x", "US", "app", 4),
                (M0 + 5, "facebook", "US", "app", 100),
            ]
        )
    )
    store.commit(
        commit(
            rows=[
                (M0 + 1, "x", "US", "app", 10),
                (M0 + 3, "x", "FR", "other", 6),
                (M0 + 60, "x", "US", "app", 8),  # the next hour
                (M0 + 5, "facebook", "US", "app", 1),
            ]
        )
    )
    got = store.minute_counts("x", H0, H0 + 3 * 3600)
    assert got.dtype == np.int64
    expected = np.zeros(180, np.int64)
    expected[[1, 2, 3, 59, 60]] = [14, 2, 6, 4, 8]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        store.minute_counts("facebook", H0, H0 + 600), [0, 0, 0, 0, 0, 101, 0, 0, 0, 0]
    )


def test_merged_chunk_keeps_country_and_problem_apart(store: AnyStore, backend: Backend) -> None:
    from outagewatch.store.base import unpack

    store.commit(commit(rows=[(M0, "x", "US", "app", 3), (M0, "x", "GB", "app", 1)]))
    store.commit(commit(rows=[(M0, "x", "GB", "app", 2), (M0, "x", "US", "login", 5)]))
    rows = backend.rows("SELECT hour, data FROM minute_counts WHERE service = 'x'")
    assert len(rows) == 1
    assert rows[0][0] == H0 // 3600
    chunk = unpack(bytes(rows[0][1]))
    got = {(int(r["m"]), r["c"].decode(), r["p"].decode()): int(r["n"]) for r in chunk}
    assert got == {(0, "US", "app"): 3, (0, "GB", "app"): 3, (0, "US", "login"): 5}


def test_minute_counts_window_edges(store: AnyStore) -> None:
    store.commit(
        commit(
            rows=[
                (M0 - 1, "x", "US", "app", 1),
                (M0, "x", "US", "app", 2),
                (M0 + 61, "x", "US", "app", 3),
            ]
        )
    )
    assert store.minute_counts("x", H0, H0 + 61 * 60).sum() == 2  # [start, end): M0+61 is out
    assert store.minute_counts("x", H0 - 60, H0 + 62 * 60).tolist()[0] == 1
    assert store.minute_counts("x", H0 - 60, H0 + 62 * 60).tolist()[-1] == 3
    assert store.minute_counts("x", H0 + 60 * 61, H0 + 60 * 62).tolist() == [3]
    assert store.minute_counts("x", H0, H0).tolist() == []
    assert store.minute_counts("nosuch", H0, H0 + 120).tolist() == [0, 0]


def test_empty_counts_commit_is_fine(store: AnyStore) -> None:
    store.commit(commit(state=b"only state"))
    assert store.load_state() == b"only state"


# ---------------------------------------------------------------------- incidents
def test_incident_filters_and_newest_first(store: AnyStore) -> None:
    day = 86_400
    docs = [
        doc("a", "x", "resolved", H0, H0 + 3600),
        doc("b", "x", "ongoing", H0 + 2 * day),
        doc("c", "facebook", "resolved", H0 + day, H0 + day + 600),
        doc("d", "facebook", "ongoing", H0 + 3 * day),
        doc("e", "x", "resolved", H0 + day, H0 + day + 60),  # same start as c
    ]
    store.commit(commit(incidents=docs))

    def ids(**kw: Any) -> list[str]:
        return [d["id"] for d in store.incidents(IncidentQuery(**kw))]

    assert ids() == ["d", "b", "c", "e", "a"]  # equal starts (c, e): ordered by id
    assert ids(service="x") == ["b", "e", "a"]
    assert ids(service="facebook") == ["d", "c"]
    assert ids(service="nosuch") == []
    assert ids(status="ongoing") == ["d", "b"]
    assert ids(status="resolved") == ["c", "e", "a"]
    assert ids(service="x", status="resolved") == ["e", "a"]
    # since: still going on at or after that time
    assert ids(since=H0 + day + 600) == ["d", "b", "c"]
    assert ids(since=H0 + day + 601) == ["d", "b"]
    assert ids(since=H0 + 3600) == ["d", "b", "c", "e", "a"]
    # until: started at or before that time
    assert ids(until=H0 + day) == ["c", "e", "a"]
    assert ids(until=H0 + day - 1) == ["a"]
    assert ids(since=H0 + day + 60, until=H0 + 2 * day) == ["b", "c", "e"]
    assert ids(since=H0 + 4 * day, until=H0 + 5 * day) == ["d", "b"]
    # limit: the newest that many, in the database (pages and the feed ask for few)
    assert ids(limit=2) == ["d", "b"]
    assert ids(limit=3, service="x") == ["b", "e", "a"]
    assert ids(limit=1, status="resolved") == ["c"]
    assert ids(limit=0) == []


def test_resolved_incident_is_not_overwritten_by_a_stale_ongoing_doc(store: AnyStore) -> None:
    store.commit(commit(incidents=[doc("i1", total=10)]))
    store.commit(commit(incidents=[doc("i1", status="resolved", ended=H0 + 1800, total=40)]))
    store.commit(commit(incidents=[doc("i1", status="ongoing", total=25)]))  # stale
    (got,) = store.incidents()
    assert got["status"] == "resolved"
    assert got["ended_at"] == iso(H0 + 1800)
    assert got["total_reports"] == 40
    assert [d["id"] for d in store.incidents(IncidentQuery(status="ongoing"))] == []
    assert [d["id"] for d in store.incidents(IncidentQuery(since=H0 + 1801))] == []


def test_ongoing_incident_is_updated(store: AnyStore) -> None:
    store.commit(commit(incidents=[doc("i1", total=10)]))
    store.commit(commit(incidents=[doc("i1", total=30)]))
    assert [d["total_reports"] for d in store.incidents()] == [30]
    store.commit(commit(incidents=[doc("i1", status="resolved", ended=H0 + 60, total=31)]))
    store.commit(commit(incidents=[doc("i1", status="resolved", ended=H0 + 120, total=32)]))
    (got,) = store.incidents()
    assert (got["status"], got["ended_at"], got["total_reports"]) == ("resolved", iso(H0 + 120), 32)


def test_fractional_since_excludes_an_incident_that_ended_before(store: AnyStore) -> None:
    store.commit(commit(incidents=[doc("i1", status="resolved", ended=H0 + 600)]))
    assert [d["id"] for d in store.incidents(IncidentQuery(since=H0 + 600))] == ["i1"]
    assert [d["id"] for d in store.incidents(IncidentQuery(since=H0 + 600.5))] == []


def test_the_sql_filter_and_incident_matches_agree(store: AnyStore) -> None:
    """Live adds the engine's unstored incidents with `incident_matches`: the same selection
    as `incidents_where` makes of stored ones."""
    docs = [
        doc("a", started=H0, ended=H0 + 600, status="resolved"),
        doc("b", service="y", started=H0 + 300),
        doc("c", started=H0 + 900, ended=H0 + 1200, status="resolved"),
        doc("d", started=H0 + 1500),
    ]
    store.commit(commit(incidents=docs))
    for service in (None, "x", "y"):
        for status in (None, "ongoing", "resolved"):
            for since in (None, H0 + 599.5, H0 + 600, H0 + 601, H0 + 1300):
                for until in (None, H0 - 1, H0 + 300, H0 + 1000):
                    q = IncidentQuery(service=service, since=since, until=until, status=status)
                    got = {d["id"] for d in store.incidents(q)}
                    want = {d["id"] for d in docs if incident_matches(d, q)}
                    assert got == want, (service, status, since, until)


# ---------------------------------------------------------------------- alerts
def test_subscriptions_and_the_delivery_log(store: AnyStore) -> None:
    """The alert tables behave the same on both stores: idempotent keys, queue order,
    filters of the log."""
    sub = {
        "id": "s1",
        "service": "x",
        "group": None,
        "min_severity": "problems",
        "channel": "webhook",
        "config": {"url": "https://hooks.example/a"},
        "created_at": 1.0,
    }
    store.add_subscription(sub)
    store.add_subscription({**sub, "id": "s2", "service": None, "group": "meta", "created_at": 2.0})
    assert [s["id"] for s in store.subscriptions()] == ["s1", "s2"]
    assert store.subscriptions()[0]["config"] == {"url": "https://hooks.example/a"}

    def queue(key: str, sub_id: str, incident: str, kind: str, at: float) -> int | None:
        return store.add_delivery(
            {
                "key": key,
                "subscription": sub_id,
                "incident": incident,
                "kind": kind,
                "channel": "webhook",
                "payload": {"kind": kind},
                "created_at": at,
            }
        )

    a = queue("s1:i1:opened", "s1", "i1", "opened", 10.0)
    b = queue("s1:i1:resolved", "s1", "i1", "resolved", 5.0)  # queued later, earlier time
    c = queue("s2:i2:opened", "s2", "i2", "opened", 11.0)
    assert a is not None and b is not None and c is not None
    assert queue("s1:i1:opened", "s1", "i1", "opened", 12.0) is None  # the key exists
    assert store.delivery_keys(["s1:i1:opened", "nope"]) == {"s1:i1:opened"}
    store.update_delivery(c, DeliveryUpdate(status="sent", attempts=1, sent_at=13.0))
    # Pending ones come back in the order they were queued (a subscriber's order).
    assert [d["id"] for d in store.pending_deliveries()] == [a, b]
    one = store.delivery(a)
    assert one is not None and one["payload"] == {"kind": "opened"} and one["status"] == "pending"
    assert [d["id"] for d in store.deliveries()] == [c, b, a]  # newest first

    def ids(q: DeliveryQuery) -> list[int]:
        return [d["id"] for d in store.deliveries(q)]

    assert ids(DeliveryQuery(subscription="s1")) == [b, a]
    assert ids(DeliveryQuery(subscription="s1", status="pending", limit=1)) == [b]
    assert ids(DeliveryQuery(incident="i2", status="sent")) == [c]
    assert "payload" not in store.deliveries()[0]
    assert store.delete_subscription("s2") is True
    assert store.delete_subscription("s2") is False
    assert [s["id"] for s in store.subscriptions()] == ["s1"]


def test_tokens_updates_and_maintenance_windows(store: AnyStore) -> None:
    """The operating tables (contract §8) behave the same on both stores."""
    tok = {"id": "t1", "name": "partner", "scopes": ["ingest", "read"], "hash": "ab" * 32}
    store.add_token({**tok, "created_at": 2.0})
    store.add_token({**tok, "id": "t0", "hash": "cd" * 32, "scopes": ["admin"], "created_at": 1.0})
    assert [(t["id"], t["scopes"]) for t in store.tokens()] == [
        ("t0", ["admin"]),
        ("t1", ["ingest", "read"]),
    ]
    assert store.tokens()[1]["hash"] == "ab" * 32
    assert store.delete_token("t0") is True and store.delete_token("t0") is False
    assert [t["id"] for t in store.tokens()] == ["t1"]

    store.add_update("i1", 20.0, "investigating", "Looking")
    store.add_update("i2", 15.0, "identified", "Found")
    store.add_update("i1", 10.0, "resolved", "Fixed")  # posted later: listed later
    found = store.updates(["i1", "i2", "i3", "i1"])
    assert found == {
        "i1": [
            {"at": 20.0, "status": "investigating", "text": "Looking"},
            {"at": 10.0, "status": "resolved", "text": "Fixed"},
        ],
        "i2": [{"at": 15.0, "status": "identified", "text": "Found"}],
    }
    assert store.updates([]) == {}

    def window(wid: str, start: float, end: float) -> dict[str, Any]:
        return {
            "id": wid,
            "service": "meta",
            "starts_at": start,
            "ends_at": end,
            "title": wid,
            "created_at": 0.0,
        }

    store.add_maintenance(window("later", 300.0, 400.0))
    store.add_maintenance(window("past", 0.0, 100.0))
    store.add_maintenance(window("now", 150.0, 250.0))
    assert [w["id"] for w in store.maintenance()] == ["past", "now", "later"]
    assert [w["id"] for w in store.maintenance(200.0)] == ["now", "later"]
    assert store.maintenance(200.0)[0] == window("now", 150.0, 250.0)
    assert store.delete_maintenance("now") is True and store.delete_maintenance("now") is False
    assert [w["id"] for w in store.maintenance(200.0)] == ["later"]

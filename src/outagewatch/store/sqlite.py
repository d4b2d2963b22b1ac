"""SQLite store: one file, WAL, versioned migrations (PRAGMA user_version).

The SQL it shares with PostgreSQL is in store/sql.py (`SQLStore`); here are the connections
and what SQLite does its own way: counts merged per service, compaction, the journal.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from outagewatch.errors import StoreError
from outagewatch.store.base import Commit, chunks

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import CountRows
from outagewatch.store.sql import SQLITE, Cx, SQLStore, merged, migrations


class SQLiteStore(SQLStore):
    dialect = SQLITE

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the SQLite database: {exc}") from None

    def _migrate(self) -> None:
        current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        known = migrations("sqlite")
        latest = known[-1][0] if known else 0
        if current > latest:
            raise StoreError(
                f"{self.path}: database schema version {current} is newer than this "
                f"outagewatch knows ({latest}); upgrade outagewatch"
            )
        for version, sql in known:
            if version <= current:
                continue
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _statements(sql):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {int(version)}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        # An alert worker thread may still be writing (its task was cancelled, its thread
        # runs on): close the alerts connection under its lock, after which alert calls
        # raise StoreError instead of touching a closed connection (which can crash).
        alerts_db, lock = self._alerts_db, self._alerts_lock  # see "alerts" below
        if lock is not None:
            with lock:
                self._alerts_closed = True
                if alerts_db is not None and alerts_db is not self.db:
                    alerts_db.close()
                self.db.close()
        else:
            self._alerts_closed = True
            self.db.close()

    # ---------------------------------------------------------------- SQLStore's hooks
    @contextmanager
    def _read(self, what: str) -> Iterator[Cx]:
        try:
            yield Cx(self.db, SQLITE)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {what} failed: {exc}") from None

    @contextmanager
    def _tx(self, what: str) -> Iterator[Cx]:
        """One write transaction (BEGIN IMMEDIATE: the writer's lock from the start)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield Cx(db, SQLITE)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {what} failed: {exc}") from None

    # Alerts, tokens, updates, maintenance and the catalog use their own connection (same
    # file), so a write from another thread never lands inside a pipeline commit's
    # transaction.
    _alerts_db: sqlite3.Connection | None = None
    _alerts_lock: threading.Lock | None = None
    _alerts_closed = False

    def _alerts(self) -> tuple[sqlite3.Connection, threading.Lock]:
        if self._alerts_db is None or self._alerts_lock is None:
            if self.path in ("", ":memory:") or self.path.startswith("file:"):
                self._alerts_db = self.db
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=10000")
                self._alerts_db = conn
            self._alerts_lock = threading.Lock()
        return self._alerts_db, self._alerts_lock

    @contextmanager
    def _small(self, what: str) -> Iterator[Cx]:
        db, lock = self._alerts()
        try:
            with lock:
                if self._alerts_closed:
                    raise StoreError(f"{self.path}: alerts: the store is closed")
                yield Cx(db, SQLITE)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: alerts: {exc}") from None

    # ---------------------------------------------------------------- writes
    def commit(self, c: Commit) -> None:
        """Write one pipeline step atomically."""
        with self._tx("write") as cx:
            self._write_step(cx, c)

    def _write_state(self, cx: Cx, c: Commit, position: int | None) -> None:
        cx.execute(
            "INSERT INTO state(key, value) VALUES (%s, %s) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (c.state_key, c.state),
        )

    def _write_counts(self, cx: Cx, counts: CountRows) -> None:
        new = list(chunks(counts))
        if not new:
            return
        existing: dict[tuple[str, int], bytes] = {}
        hours_of: dict[str, list[int]] = {}
        for s, h, _ in new:
            hours_of.setdefault(s, []).append(h)
        for sid, hours in sorted(hours_of.items()):
            for hour, data in cx.execute(
                "SELECT hour, data FROM minute_counts WHERE service = %s "
                "AND hour BETWEEN %s AND %s",
                (sid, min(hours), max(hours)),
            ):
                existing[(sid, int(hour))] = bytes(data)
        cx.many(
            "INSERT INTO minute_counts(service, hour, data) VALUES (%s, %s, %s) "
            "ON CONFLICT(service, hour) DO UPDATE SET data = excluded.data",
            merged(new, existing),
        )

    # ---------------------------------------------------------------- journal
    def append_journal(self, batches: Sequence[bytes], received: float) -> list[int]:
        with self._tx("journal write") as cx:
            return [
                int(
                    cx.one(
                        "INSERT INTO journal(received, lines) VALUES (%s, %s) RETURNING seq",
                        (received, b),
                    )[0]
                )
                for b in batches
            ]


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our DDL strings)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

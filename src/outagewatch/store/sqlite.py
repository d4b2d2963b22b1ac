"""SQLite store: one file, WAL, versioned migrations (PRAGMA user_version)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from outagewatch.errors import StoreError
from outagewatch.store.base import Commit, chunks, merge_chunks, migrations, unpack

_STATE_KEY = "pipeline"


class SQLiteStore:
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
        known = migrations()
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
        self.db.close()

    # ---------------------------------------------------------------- catalog, state
    def load_catalog(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'catalog'").fetchone()
        return None if row is None else str(row[0])

    def save_catalog(self, text: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES ('catalog', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (text,),
        )

    def load_state(self, key: str = _STATE_KEY) -> bytes | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    # ---------------------------------------------------------------- writes
    def commit(self, c: Commit) -> None:
        """Write one pipeline step atomically."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write_counts(c)
                self._write_incidents(c)
                if c.others:
                    db.executemany(
                        "INSERT INTO events(type, service, ts, body) VALUES (?, ?, ?, ?)",
                        [(e.type, e.service, e.ts, e.body) for e in c.others],
                    )
                db.execute(
                    "INSERT INTO state(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (c.state_key, c.state),
                )
                if c.journal_seq is not None:
                    db.execute(
                        "INSERT INTO meta(key, value) VALUES ('journal_seq', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(c.journal_seq),),
                    )
                    db.execute("DELETE FROM journal WHERE seq <= ?", (c.journal_seq,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from None

    def _write_counts(self, c: Commit) -> None:
        new = list(chunks(c.counts))
        if not new:
            return
        db = self.db
        existing: dict[tuple[str, int], bytes] = {}
        services = sorted({s for s, _, _ in new})
        for sid in services:
            hours = [h for s, h, _ in new if s == sid]
            for row in db.execute(
                "SELECT hour, data FROM minute_counts WHERE service = ? AND hour BETWEEN ? AND ?",
                (sid, min(hours), max(hours)),
            ):
                existing[(sid, int(row[0]))] = bytes(row[1])
        rows = []
        for sid, hour, chunk in new:
            old = existing.get((sid, hour))
            merged = chunk if old is None else merge_chunks(unpack(old), chunk)
            rows.append((sid, hour, merged.tobytes()))
        db.executemany(
            "INSERT INTO minute_counts(service, hour, data) VALUES (?, ?, ?) "
            "ON CONFLICT(service, hour) DO UPDATE SET data = excluded.data",
            rows,
        )

    def _write_incidents(self, c: Commit) -> None:
        db = self.db
        for tr in c.transitions:
            db.execute(
                "INSERT INTO transitions(incident, service, action, from_state, to_state, at, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    tr.incident,
                    tr.service,
                    tr.action,
                    tr.from_state.value,
                    tr.to_state.value,
                    tr.at,
                    orjson.dumps(tr.detail),
                ),
            )
        for doc in c.incidents:
            started = _epoch(doc["started_at"])
            ended = None if doc["ended_at"] is None else _epoch(doc["ended_at"])
            # Guarded by the old state: a resolved incident is never re-opened by a stale write.
            db.execute(
                "INSERT INTO incidents(id, service, status, started_at, ended_at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "status = excluded.status, ended_at = excluded.ended_at, doc = excluded.doc "
                "WHERE incidents.status = 'ongoing' OR excluded.status = 'resolved'",
                (doc["id"], doc["service"], doc["status"], started, ended, orjson.dumps(doc)),
            )

    # ---------------------------------------------------------------- journal
    def append_journal(self, batches: Sequence[bytes], received: float) -> list[int]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                seqs = [
                    int(
                        db.execute(
                            "INSERT INTO journal(received, lines) VALUES (?, ?) RETURNING seq",
                            (received, b),
                        ).fetchone()[0]
                    )
                    for b in batches
                ]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: journal write failed: {exc}") from None
        return seqs

    def journal_after(self, seq: int) -> list[tuple[int, bytes]]:
        rows = self.db.execute("SELECT seq, lines FROM journal WHERE seq > ? ORDER BY seq", (seq,))
        return [(int(s), bytes(b)) for s, b in rows]

    def journal_seq(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'journal_seq'").fetchone()
        return 0 if row is None else int(row[0])

    # ---------------------------------------------------------------- reads
    def incidents(
        self,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Incidents newest first. `since`/`until` select incidents overlapping that span."""
        sql = "SELECT doc FROM incidents WHERE 1 = 1"
        args: list[Any] = []
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        if since is not None:
            sql += " AND (ended_at IS NULL OR ended_at >= ?)"
            args.append(float(since))
        if until is not None:
            sql += " AND started_at <= ?"
            args.append(float(until))
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY started_at DESC, id"
        return [orjson.loads(r[0]) for r in self.db.execute(sql, args)]

    def minute_counts(self, service: str, start: float, end: float) -> NDArray[np.int64]:
        """Counted reports per minute for [start, end) (epoch seconds, whole minutes)."""
        m0, m1 = int(start // 60), int(end // 60)
        out = np.zeros(max(m1 - m0, 0), np.int64)
        for hour, data in self.db.execute(
            "SELECT hour, data FROM minute_counts WHERE service = ? AND hour BETWEEN ? AND ?",
            (service, m0 // 60, (m1 - 1) // 60),
        ):
            chunk = unpack(bytes(data))
            minute = int(hour) * 60 + chunk["m"].astype(np.int64)
            sel = (minute >= m0) & (minute < m1)
            np.add.at(out, minute[sel] - m0, chunk["n"][sel])
        return out

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def transitions(self, incident: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT action, from_state, to_state, at, detail FROM transitions "
            "WHERE incident = ? ORDER BY seq",
            (incident,),
        )
        return [
            {"action": a, "from": f, "to": t, "at": at, "detail": orjson.loads(d)}
            for a, f, t, at, d in rows
        ]


def _epoch(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp())


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our DDL strings)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

"""SQLite store: one file, WAL, versioned migrations (PRAGMA user_version)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from outagewatch.errors import StoreError
from outagewatch.store.base import (
    SELECT_INPUTS,
    UPSERT_INPUT,
    Commit,
    InputMark,
    chunks,
    equal_filters,
    incidents_where,
    input_mark,
    input_rows,
    merge_chunks,
    migrations,
    unpack,
)
from outagewatch.store.counts import Block, add_day_blocks
from outagewatch.store.rollup import DayRow, Retention, fold
from outagewatch.store.visitors import VisitorRows

_STATE_KEY = "pipeline"


class SQLiteStore(VisitorRows):
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

    def replay_inputs(self, state_key: str = _STATE_KEY) -> list[InputMark]:
        rows = self.db.execute(SELECT_INPUTS.replace("%s", "?"), (state_key,)).fetchall()
        return [input_mark(r) for r in rows]

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
                if c.inputs:
                    db.executemany(UPSERT_INPUT.replace("%s", "?"), input_rows(c))
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
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Incidents newest first. `since`/`until` select incidents overlapping that span;
        `limit`: at most that many (the newest)."""
        where, args = incidents_where("?", service, since, until, status)
        sql = f"SELECT doc FROM incidents WHERE {where} ORDER BY started_at DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
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
        if m1 > m0:
            add_day_blocks(out, m0, self.count_days(service, m0 // 1440, (m1 - 1) // 1440))
        return out

    # ---------------------------------------------------------------- history (issue 20)
    def count_days(self, service: str, day0: int, day1: int) -> list[Block]:
        """(day, res, total, data) of the service's day blocks of days day0..day1."""
        rows = self.db.execute(
            "SELECT day, res, total, data FROM count_days WHERE service = ? "
            "AND day BETWEEN ? AND ? ORDER BY day",
            (service, day0, day1),
        )
        return [(int(d), int(r), int(t), bytes(b)) for d, r, t, b in rows]

    def day_totals(self, service: str, day0: int, day1: int) -> list[tuple[int, int]]:
        rows = self.db.execute(
            "SELECT day, total FROM count_days WHERE service = ? AND day BETWEEN ? AND ?",
            (service, day0, day1),
        )
        return [(int(d), int(t)) for d, t in rows]

    def raw_hours(self, service: str, hour0: int, hour1: int) -> list[tuple[int, bytes]]:
        """(hour, packed chunk) of the raw (not yet compacted) hours hour0..hour1."""
        rows = self.db.execute(
            "SELECT hour, data FROM minute_counts WHERE service = ? AND hour BETWEEN ? AND ? "
            "ORDER BY hour",
            (service, hour0, hour1),
        )
        return [(int(h), bytes(b)) for h, b in rows]

    def count_services(self) -> list[str]:
        rows = self.db.execute(
            "SELECT service FROM count_days UNION SELECT service FROM minute_counts ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def compact_step(self, now: float, retention: Retention, budget: int = 256) -> int:
        """One bounded step of compaction (history.rollup) in one short transaction; the
        number of raw hours and blocks it handled (0: nothing left to do)."""
        db = self.db
        d15, d60 = retention.coarse_limits(now)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                raw = [
                    (str(s), int(h), bytes(b))
                    for s, h, b in db.execute(
                        "SELECT service, hour, data FROM minute_counts WHERE hour < ? "
                        "ORDER BY service, hour LIMIT ?",
                        (retention.raw_limit(now), budget),
                    )
                ]
                blocks: dict[tuple[str, int], DayRow] = {}
                for sid, day in sorted({(s, h // 24) for s, h, _ in raw}):
                    for row in db.execute(
                        "SELECT service, day, res, total, data FROM count_days "
                        "WHERE service = ? AND day = ?",
                        (sid, day),
                    ):
                        blocks[(sid, day)] = (row[0], row[1], row[2], row[3], bytes(row[4]))
                due = db.execute(
                    "SELECT service, day, res, total, data FROM count_days "
                    "WHERE (res = 1 AND day < ?) OR (res = 15 AND day < ?) LIMIT ?",
                    (d15, d60, budget),
                ).fetchall()
                for row in due:
                    blocks[(row[0], row[1])] = (row[0], row[1], row[2], row[3], bytes(row[4]))
                if not raw and not due:
                    db.execute("COMMIT")
                    return 0
                db.executemany(
                    "INSERT INTO count_days(service, day, res, total, data) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(service, day) DO UPDATE SET "
                    "res = excluded.res, total = excluded.total, data = excluded.data",
                    fold(raw, list(blocks.values()), now, retention),
                )
                db.executemany(
                    "DELETE FROM minute_counts WHERE service = ? AND hour = ?",
                    [(s, h) for s, h, _ in raw],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: compaction failed: {exc}") from None
        return len(raw) + len(due)

    def count_bounds(self) -> tuple[int, int] | None:
        """(first hour, last hour) with stored counts, raw or compacted; None when none."""
        row = self.db.execute(
            "SELECT min(h0), max(h1) FROM (SELECT min(hour) AS h0, max(hour) AS h1 "
            "FROM minute_counts UNION ALL SELECT min(day) * 24, max(day) * 24 + 23 "
            "FROM count_days)"
        ).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def events(self, kind: str, service: str, start: float, end: float) -> list[dict[str, Any]]:
        """Stored events of one type and service with `start <= ts < end`, oldest first."""
        rows = self.db.execute(
            "SELECT body FROM events WHERE service = ? AND ts >= ? AND ts < ? AND type = ? "
            "ORDER BY ts, seq",
            (service, float(start), float(end), kind),
        )
        return [orjson.loads(r[0]) for r in rows]

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

    # ================================================================ alerts (issue 6)
    # Subscriptions and the delivery log. They use their own connection (same file), so an
    # alert written from another thread never lands inside a pipeline commit's transaction.
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

    def _alerts_exec(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        db, lock = self._alerts()
        try:
            with lock:
                if self._alerts_closed:
                    raise StoreError(f"{self.path}: alerts: the store is closed")
                return db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: alerts: {exc}") from None

    def add_subscription(self, sub: Mapping[str, Any]) -> None:
        """Store a subscription: id, service, group, min_severity, channel, config, created_at."""
        self._alerts_exec(
            "INSERT INTO subscriptions(id, service, grp, min_severity, channel, config, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                sub["id"],
                sub.get("service"),
                sub.get("group"),
                sub["min_severity"],
                sub["channel"],
                orjson.dumps(sub["config"]).decode(),
                float(sub["created_at"]),
            ),
        )

    def subscriptions(self) -> list[dict[str, Any]]:
        rows = self._alerts_exec(
            "SELECT id, service, grp, min_severity, channel, config, created_at "
            "FROM subscriptions ORDER BY created_at, id"
        ).fetchall()
        return [
            {
                "id": i,
                "service": s,
                "group": g,
                "min_severity": m,
                "channel": c,
                "config": orjson.loads(cfg),
                "created_at": t,
            }
            for i, s, g, m, c, cfg, t in rows
        ]

    def delete_subscription(self, sub_id: str) -> bool:
        """Delete a subscription (its delivery log stays). False when there was none."""
        cur = self._alerts_exec("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
        return cur.rowcount > 0

    def add_delivery(self, d: Mapping[str, Any]) -> int | None:
        """Queue one alert (status pending) unless its `key` is already known.

        Returns the new delivery's id, or None when the key existed (the alert was queued
        before, perhaps before a restart): the idempotency guard.
        """
        cur = self._alerts_exec(
            "INSERT INTO deliveries(key, subscription, incident, kind, channel, status, "
            "attempts, next_at, payload, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) "
            "ON CONFLICT(key) DO NOTHING",
            (
                d["key"],
                d["subscription"],
                d["incident"],
                d["kind"],
                d["channel"],
                float(d["created_at"]),
                orjson.dumps(d["payload"]).decode(),
                float(d["created_at"]),
            ),
        )
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid is not None else None

    def delivery_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` are already in the delivery log."""
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = list(keys[i : i + 500])
            marks = ",".join("?" * len(part))
            rows = self._alerts_exec(
                f"SELECT key FROM deliveries WHERE key IN ({marks})", part
            ).fetchall()
            found.update(str(r[0]) for r in rows)
        return found

    def update_delivery(
        self,
        delivery_id: int,
        *,
        status: str,
        attempts: int,
        next_at: float | None,
        last_error: str | None,
        sent_at: float | None,
    ) -> None:
        self._alerts_exec(
            "UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, "
            "sent_at = ? WHERE id = ?",
            (status, attempts, next_at, last_error, sent_at, delivery_id),
        )

    def pending_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries still to attempt, in the order they were queued (with their payloads)."""
        return self._deliveries("WHERE status = 'pending' ORDER BY id", ())

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        found = self._deliveries("WHERE id = ?", (delivery_id,))
        return found[0] if found else None

    def deliveries(
        self,
        subscription: str | None = None,
        incident: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first (without payloads)."""
        where, args = equal_filters(
            {"subscription": subscription, "incident": incident, "status": status}, "?"
        )
        rows = self._deliveries(f"WHERE {where} ORDER BY id DESC LIMIT ?", (*args, int(limit)))
        for r in rows:
            del r["payload"]
        return rows

    def _deliveries(self, tail: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        cols = (
            "id",
            "key",
            "subscription",
            "incident",
            "kind",
            "channel",
            "status",
            "attempts",
            "next_at",
            "last_error",
            "payload",
            "created_at",
            "sent_at",
        )
        rows = self._alerts_exec(f"SELECT {', '.join(cols)} FROM deliveries {tail}", args)
        out = []
        for row in rows.fetchall():
            d = dict(zip(cols, row, strict=True))
            d["payload"] = orjson.loads(d["payload"])
            out.append(d)
        return out

    # ---------------------------------------------------------------- operations (§8)
    # Tokens, incident updates and maintenance windows go through the alerts connection:
    # small writes from the event loop, never inside a pipeline commit.
    def add_token(self, tok: Mapping[str, Any]) -> None:
        """Store a token: id, name, scopes (list), hash (SHA-256 hex), created_at."""
        self._alerts_exec(
            "INSERT INTO api_tokens(id, name, scopes, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (tok["id"], tok["name"], " ".join(tok["scopes"]), tok["hash"], tok["created_at"]),
        )

    def tokens(self) -> list[dict[str, Any]]:
        rows = self._alerts_exec(
            "SELECT id, name, scopes, hash, created_at FROM api_tokens ORDER BY created_at, id"
        ).fetchall()
        return [
            {"id": i, "name": n, "scopes": s.split(), "hash": h, "created_at": t}
            for i, n, s, h, t in rows
        ]

    def delete_token(self, token_id: str) -> bool:
        cur = self._alerts_exec("DELETE FROM api_tokens WHERE id = ?", (token_id,))
        return cur.rowcount > 0

    def add_update(self, incident: str, at: float, status: str, text: str) -> None:
        """Append an operator's update to an incident."""
        self._alerts_exec(
            "INSERT INTO incident_updates(incident, at, status, text) VALUES (?, ?, ?, ?)",
            (incident, float(at), status, text),
        )

    def updates(self, incidents: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The updates of these incidents, oldest first: {incident: [{at, status, text}]}."""
        out: dict[str, list[dict[str, Any]]] = {}
        ids = list(dict.fromkeys(incidents))
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            rows = self._alerts_exec(
                "SELECT incident, at, status, text FROM incident_updates "
                f"WHERE incident IN ({', '.join('?' * len(part))}) ORDER BY seq",
                part,
            ).fetchall()
            for inc, at, status, text in rows:
                out.setdefault(inc, []).append({"at": at, "status": status, "text": text})
        return out

    def add_maintenance(self, w: Mapping[str, Any]) -> None:
        """Store a window: id, service (a service or group id), starts_at, ends_at, title,
        created_at (epoch seconds)."""
        self._alerts_exec(
            "INSERT INTO maintenance(id, service, starts_at, ends_at, title, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (w["id"], w["service"], w["starts_at"], w["ends_at"], w["title"], w["created_at"]),
        )

    def maintenance(self, ending_after: float | None = None) -> list[dict[str, Any]]:
        """Windows that end after `ending_after` (all when None), soonest start first."""
        rows = self._alerts_exec(
            "SELECT id, service, starts_at, ends_at, title, created_at FROM maintenance "
            "WHERE ends_at > ? ORDER BY starts_at, id",
            (float("-inf") if ending_after is None else float(ending_after),),
        ).fetchall()
        cols = ("id", "service", "starts_at", "ends_at", "title", "created_at")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def delete_maintenance(self, window_id: str) -> bool:
        cur = self._alerts_exec("DELETE FROM maintenance WHERE id = ?", (window_id,))
        return cur.rowcount > 0

    # ---------------------------------------------------------------- visitors (issue 19)
    # The SQL is in store/visitors.py (VisitorRows); it runs on the alerts connection.
    def _visitor_sql(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[Any], int]:
        cur = self._alerts_exec(sql, args)
        return cur.fetchall(), cur.rowcount


def _epoch(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp())


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our DDL strings)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

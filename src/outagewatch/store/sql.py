"""The SQL both stores share, written once: statements, the row <-> object code, and the
migration sequence. A `Dialect` says where SQLite and PostgreSQL differ in spelling
(placeholders, byte-order collation, JSON columns, column types); `SQLStore` holds every
operation whose SQL is the same on both, over three hooks each store gives: `_read` (a
connection for a read), `_small` (one for a small write or read outside a pipeline commit:
alerts, tokens, updates, maintenance) and `_tx` (one transaction). What only one database
can do well (packed counts merged with `unnest`, compaction under an advisory lock, leases)
stays in store/postgres.py and store/sqlite.py.

Every statement here is written with psycopg's `%s` placeholder; `Dialect.q` turns it into
SQLite's `?`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from outagewatch.events import epoch_of
from outagewatch.store.base import (
    EVERY_INCIDENT,
    LATEST_DELIVERIES,
    Block,
    Commit,
    DeliveryQuery,
    DeliveryUpdate,
    IncidentQuery,
    InputMark,
    StoredCounts,
    incidents_where,
    merge_chunks,
    unpack,
)
from outagewatch.store.counts import add_day_blocks
from outagewatch.store.rollup import HOUR_S, DayRow, Drained, RawRow, Retention, fold
from outagewatch.store.visitors import VisitorRows

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import CountRows


@dataclass(frozen=True)
class Dialect:
    """How one database spells what the shared SQL needs."""

    name: str  # "sqlite" or "postgresql"
    mark: str  # the driver's placeholder
    collate: str  # appended to ids in ORDER BY: byte order, as SQLite sorts text
    jsonb: str  # the cast of a JSON parameter ("" when JSON is stored as text)
    skip_locked: str  # after a SELECT: lock its rows, skipping those a commit holds
    json_text: str  # the cast that reads a JSON column back as text
    folder: str  # this dialect's own migrations, where its SQL differs (see `migrations`)
    types: tuple[tuple[str, str], ...] = ()  # (regex of SQLite DDL, this dialect's) in migrations

    def q(self, sql: str) -> str:
        """`sql` with this driver's placeholders."""
        return sql if self.mark == "%s" else sql.replace("%s", self.mark)

    def json(self, value: Any) -> bytes | str:
        """A JSON parameter: bytes as SQLite has always stored them, text for jsonb."""
        data = orjson.dumps(value)
        return data.decode() if self.jsonb else data

    def ddl(self, sql: str) -> str:
        """A shared migration (written for SQLite) in this dialect's types; its lines
        `--postgresql: ...` are SQL for that dialect only (a comment to the others)."""
        for a, b in self.types:
            sql = re.sub(a, b, sql)
        return re.sub(rf"(?m)^--{self.name}: ", "", sql)


SQLITE = Dialect("sqlite", "?", "", "", "", "", "migrations")
POSTGRES = Dialect(
    "postgresql",
    "%s",
    ' COLLATE "C"',
    "::jsonb",
    " FOR UPDATE SKIP LOCKED",
    "::text",
    "migrations_pg",
    (
        (
            r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
            "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        ),
        (r"\bREAL\b", "DOUBLE PRECISION"),
        (r"\bBLOB\b", "BYTEA"),
        (r"\) WITHOUT ROWID", ")"),
    ),
)
DIALECTS = {"sqlite": SQLITE, "migrations": SQLITE, "postgresql": POSTGRES}
DIALECTS["migrations_pg"] = POSTGRES


def migrations(dialect: str = "sqlite") -> list[tuple[int, str]]:
    """(version, SQL) of every migration of one dialect, in order: one numbered sequence.

    `migrations/NNNN_*.sql` is written for SQLite and serves PostgreSQL too (its types
    translated by `Dialect.ddl`), unless `migrations_pg/` has a file of the same number:
    PostgreSQL's own SQL for that version (where the two differ beyond types)."""
    d = DIALECTS[dialect]
    root = resources.files("outagewatch.store")
    found: dict[int, str] = {}
    for folder in dict.fromkeys(("migrations", d.folder)):  # the dialect's own files win
        for entry in root.joinpath(folder).iterdir():
            if entry.name.endswith(".sql"):
                sql = entry.read_text("utf-8")
                found[int(entry.name.split("_", 1)[0])] = d.ddl(sql) if folder != d.folder else sql
    return sorted(found.items())


class Cx:
    """A connection in use (sqlite3 or psycopg), taking statements with `%s` placeholders."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(self.dialect.q(sql), args)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, args).fetchall())

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.execute(sql, args).fetchone()

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self.raw.cursor()
        try:
            cur.executemany(self.dialect.q(sql), rows)
        finally:
            cur.close()

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` is one of `values` (at most 500): the condition and its arguments."""
        if self.dialect.name == "postgresql":
            return f"{column} = ANY(%s)", [list(values)]
        return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def epoch(ts: str) -> int:
    """Whole epoch seconds of an RFC 3339 time (an incident's started_at, ended_at)."""
    return int(epoch_of(ts))


def parts(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# ------------------------------------------------------------------ statements
UPSERT_META = (
    "INSERT INTO meta(key, value) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
UPSERT_INPUT = (
    "INSERT INTO replay_inputs(state_key, id, name, head, byte_offset, lines, digest, "
    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (state_key, id) DO UPDATE "
    "SET name = excluded.name, head = excluded.head, byte_offset = excluded.byte_offset, "
    "lines = excluded.lines, digest = excluded.digest, updated_at = excluded.updated_at"
)
SELECT_INPUTS = (
    "SELECT id, name, head, byte_offset, lines, digest, updated_at FROM replay_inputs "
    "WHERE state_key = %s ORDER BY id"
)
DELIVERY_COLS = (
    "id", "key", "subscription", "incident", "kind", "channel", "status", "attempts",
    "next_at", "last_error", "payload", "created_at", "sent_at",
)  # fmt: skip
MAINTENANCE_COLS = ("id", "service", "starts_at", "ends_at", "title", "created_at")
SUBSCRIPTION_COLS = (
    "id", "service", "group:grp", "min_severity", "channel", "config", "created_at",
)  # fmt: skip
TOKEN_COLS = ("id", "name", "scopes", "hash", "created_at")


def input_mark(row: Sequence[Any]) -> InputMark:
    i, name, head, offset, lines, digest, at = row
    return InputMark(str(i), str(name), bytes(head), int(offset), int(lines), bytes(digest), at)


Chunk = tuple[str, int, NDArray[np.void]]


def merged(new: Sequence[Chunk], existing: Mapping[tuple[str, int], bytes]) -> list[Any]:
    """(service, hour, data) of new count chunks summed with the stored ones."""
    out = []
    for sid, hour, chunk in new:
        old = existing.get((sid, hour))
        data = chunk if old is None else merge_chunks(unpack(old), chunk)
        out.append((sid, hour, data.tobytes()))
    return out


class SQLStore(VisitorRows):
    """Every store operation whose SQL is the same on SQLite and PostgreSQL (visitors' rows:
    store/visitors.py, through `_visitor_sql`)."""

    dialect: Dialect

    # The hooks (see the module's docstring); each wraps driver errors in StoreError.
    def _read(self, what: str) -> AbstractContextManager[Cx]:
        raise NotImplementedError

    def _small(self, what: str) -> AbstractContextManager[Cx]:
        raise NotImplementedError

    def _tx(self, what: str) -> AbstractContextManager[Cx]:
        raise NotImplementedError

    def _write_counts(self, cx: Cx, counts: CountRows) -> None:
        raise NotImplementedError

    def _write_state(self, cx: Cx, c: Commit, position: int | None) -> None:
        raise NotImplementedError

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._read("read") as cx:
            return cx.rows(sql, args)

    # ---------------------------------------------------------------- catalog, state
    def load_catalog(self) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = 'catalog'")
        return str(rows[0][0]) if rows else None

    def save_catalog(self, text: str) -> None:
        with self._small("saving the catalog") as cx:
            cx.execute(UPSERT_META, ("catalog", text))

    def load_state(self, key: str = "pipeline") -> bytes | None:
        rows = self._rows("SELECT value FROM state WHERE key = %s", (key,))
        return bytes(rows[0][0]) if rows else None

    def replay_inputs(self, state_key: str = "pipeline") -> list[InputMark]:
        return [input_mark(r) for r in self._rows(SELECT_INPUTS, (state_key,))]

    # ---------------------------------------------------------------- one pipeline step
    def _write_step(self, cx: Cx, c: Commit, position: int | None = None) -> None:
        """Everything of one commit, inside the caller's transaction."""
        counts = c.counts
        if c.fold is not None:
            counts = self._fold_on_commit(cx, counts, c.fold)
        self._write_counts(cx, counts)
        self._write_incidents(cx, c)
        if c.others:
            cx.many(
                "INSERT INTO events(type, service, ts, body) VALUES (%s, %s, %s, %s)",
                [(e.type, e.service, e.ts, e.body) for e in c.others],
            )
        self._write_state(cx, c, position)
        if c.inputs:
            cx.many(
                UPSERT_INPUT,
                [
                    (c.state_key, m.id, m.name, m.head, m.offset, m.lines, m.digest, m.updated_at)
                    for m in c.inputs
                ],
            )
        if c.journal_seq is not None:
            cx.execute(UPSERT_META, ("journal_seq", str(c.journal_seq)))
            cx.execute("DELETE FROM journal WHERE seq <= %s", (c.journal_seq,))

    def _write_incidents(self, cx: Cx, c: Commit) -> None:
        d = self.dialect
        if c.transitions:
            cx.many(
                "INSERT INTO transitions(incident, service, action, from_state, to_state, at, "
                f"detail) VALUES (%s, %s, %s, %s, %s, %s, %s{d.jsonb})",
                [
                    (
                        tr.incident,
                        tr.service,
                        tr.action,
                        tr.from_state.value,
                        tr.to_state.value,
                        tr.at,
                        d.json(tr.detail),
                    )
                    for tr in c.transitions
                ],
            )
        if c.incidents:
            # Guarded by the old state: a resolved incident is never re-opened by a stale write.
            cx.many(
                "INSERT INTO incidents(id, service, status, started_at, ended_at, doc) "
                f"VALUES (%s, %s, %s, %s, %s, %s{d.jsonb}) ON CONFLICT (id) DO UPDATE SET "
                "status = excluded.status, ended_at = excluded.ended_at, doc = excluded.doc "
                "WHERE incidents.status = 'ongoing' OR excluded.status = 'resolved'",
                [
                    (
                        doc["id"],
                        doc["service"],
                        doc["status"],
                        epoch(doc["started_at"]),
                        None if doc["ended_at"] is None else epoch(doc["ended_at"]),
                        d.json(doc),
                    )
                    for doc in c.incidents
                ],
            )

    # ---------------------------------------------------------------- journal
    def journal_after(self, seq: int) -> list[tuple[int, bytes]]:
        rows = self._rows("SELECT seq, lines FROM journal WHERE seq > %s ORDER BY seq", (seq,))
        return [(int(s), bytes(b)) for s, b in rows]

    def journal_seq(self) -> int:
        rows = self._rows("SELECT value FROM meta WHERE key = 'journal_seq'")
        return int(rows[0][0]) if rows else 0

    # ---------------------------------------------------------------- reads
    def incidents(self, query: IncidentQuery = EVERY_INCIDENT) -> list[dict[str, Any]]:
        """Incidents newest first. `since`/`until` select incidents overlapping that span;
        `limit`: at most that many (the newest)."""
        d = self.dialect
        where, args = incidents_where("%s", query)
        sql = f"SELECT doc{d.json_text} FROM incidents WHERE {where} "
        sql += f"ORDER BY started_at DESC, id{d.collate}"
        if query.limit is not None:
            sql += " LIMIT %s"
            args.append(int(query.limit))
        return [orjson.loads(r[0]) for r in self._rows(sql, args)]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        sql = f"SELECT doc{self.dialect.json_text} FROM incidents WHERE id = %s"
        rows = self._rows(sql, (incident_id,))
        return dict(orjson.loads(rows[0][0])) if rows else None

    def transitions(self, incident: str) -> list[dict[str, Any]]:
        rows = self._rows(
            f"SELECT action, from_state, to_state, at, detail{self.dialect.json_text} "
            "FROM transitions WHERE incident = %s ORDER BY seq",
            (incident,),
        )
        return [
            {"action": a, "from": f, "to": t, "at": at, "detail": orjson.loads(d)}
            for a, f, t, at, d in rows
        ]

    def events(self, kind: str, service: str, start: float, end: float) -> list[dict[str, Any]]:
        """Stored events of one type and service with `start <= ts < end`, oldest first."""
        rows = self._rows(
            "SELECT body FROM events WHERE service = %s AND ts >= %s AND ts < %s "
            "AND type = %s ORDER BY ts, seq",
            (service, float(start), float(end), kind),
        )
        return [orjson.loads(bytes(r[0])) for r in rows]

    def minute_counts(self, service: str, start: float, end: float) -> NDArray[np.int64]:
        """Counted reports per minute for [start, end) (epoch seconds, whole minutes)."""
        m0, m1 = int(start // 60), int(end // 60)
        out = np.zeros(max(m1 - m0, 0), np.int64)
        if m1 <= m0:
            return out
        stored = self.stored_counts(service, m0 // 60, (m1 - 1) // 60)
        for hour, data in stored.raw:
            chunk = unpack(data)
            minute = hour * 60 + chunk["m"].astype(np.int64)
            sel = (minute >= m0) & (minute < m1)
            np.add.at(out, minute[sel] - m0, chunk["n"][sel])
        add_day_blocks(out, m0, stored.blocks)
        return out

    # ---------------------------------------------------------------- history (issue 20)
    def stored_counts(self, service: str, hour0: int, hour1: int) -> StoredCounts:
        """The day blocks of days hour0 // 24 .. hour1 // 24 and the raw hours hour0..hour1,
        in one statement: one snapshot on either database (two reads could fall either side
        of a compaction and count its hours twice, or not at all)."""
        rows = self._rows(
            "SELECT day, res, total, data FROM count_days WHERE service = %s "
            "AND day BETWEEN %s AND %s UNION ALL "
            "SELECT hour, 0, 0, data FROM minute_counts WHERE service = %s "
            "AND hour BETWEEN %s AND %s",
            (service, hour0 // 24, hour1 // 24, service, hour0, hour1),
        )
        blocks: list[Block] = []
        raw: list[tuple[int, bytes]] = []
        for key, res, total, data in rows:
            if res:  # a block's resolution is 1, 15 or 60 minutes; 0 marks a raw hour
                blocks.append((int(key), int(res), int(total), bytes(data)))
            else:
                raw.append((int(key), bytes(data)))
        return StoredCounts(sorted(blocks), sorted(raw))

    def count_services(self) -> list[str]:
        rows = self._rows(
            f"SELECT service{self.dialect.collate} AS s FROM count_days UNION "
            "SELECT service FROM minute_counts ORDER BY s"
        )
        return [str(r[0]) for r in rows]

    def count_bounds(self) -> tuple[int, int] | None:
        """(first hour, last hour) with stored counts, raw or compacted; None when none."""
        rows = self._rows(
            "SELECT min(h0), max(h1) FROM (SELECT min(hour) AS h0, max(hour) AS h1 "
            "FROM minute_counts UNION ALL SELECT CAST(min(day) AS BIGINT) * 24, "
            "CAST(max(day) AS BIGINT) * 24 + 23 FROM count_days) AS b"
        )
        row = rows[0] if rows else None
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def compact_step(self, now: float, retention: Retention, budget: int = 256) -> int:
        """One bounded step of compaction (history.rollup) in one short transaction; the
        number of raw hours and blocks it handled (0: nothing left, or another process is
        compacting). Raw rows a commit holds are skipped where the database can (the next
        step takes them)."""
        d = self.dialect
        d15, d60 = retention.coarse_limits(now)
        with self._tx("compaction") as cx:
            if not self._compact_lock(cx):
                return 0
            raw = [
                (str(s), int(h), bytes(b))
                for s, h, b in cx.rows(
                    "SELECT service, hour, data FROM minute_counts WHERE hour < %s "
                    f"ORDER BY service{d.collate}, hour LIMIT %s{d.skip_locked}",
                    (retention.raw_limit(now), budget),
                )
            ]
            due = cx.rows(
                "SELECT service, day, res, total, data FROM count_days "
                "WHERE (res = 1 AND day < %s) OR (res = 15 AND day < %s) LIMIT %s",
                (d15, d60, budget),
            )
            if not raw and not due:
                return 0
            self._fold_into_blocks(cx, raw, due, now, retention)
            cx.many(
                "DELETE FROM minute_counts WHERE service = %s AND hour = %s",
                [(s, h) for s, h, _ in raw],
            )
        return len(raw) + len(due)

    def _fold_into_blocks(
        self,
        cx: Cx,
        raw: Sequence[RawRow],
        due: Sequence[Any],
        now: float,
        retention: Retention,
        drained: Drained | None = None,
    ) -> None:
        """Fold the raw hours `raw` and the `drained` rows into their days' blocks (read
        here), and recode the blocks `due` for coarsening (rows of count_days), at
        `retention` as of `now`."""
        blocks: dict[tuple[str, int], DayRow] = {}
        days = {(s, h // 24) for s, h, _ in raw} | set([] if drained is None else drained.days)
        found = [
            row
            for sid, day in sorted(days)
            for row in cx.rows(
                "SELECT service, day, res, total, data FROM count_days "
                "WHERE service = %s AND day = %s",
                (sid, day),
            )
        ]
        for row in [*found, *due]:
            blocks[(row[0], row[1])] = (row[0], row[1], row[2], row[3], bytes(row[4]))
        cx.many(
            "INSERT INTO count_days(service, day, res, total, data) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (service, day) DO UPDATE SET "
            "res = excluded.res, total = excluded.total, data = excluded.data",
            fold(raw, list(blocks.values()), now, retention, drained),
        )

    def _fold_on_commit(self, cx: Cx, counts: CountRows, retention: Retention) -> CountRows:
        """`Commit.fold`: the counts of the hours before the commit's newest folded into
        their day blocks (with any raw rows stored for those services and hours, which are
        deleted), as a compaction step as of the end of the commit's newest hour would;
        returns the counts left to write raw. When another process is compacting
        (PostgreSQL), nothing is folded here: compaction takes the raw hours later."""
        if len(counts) == 0:
            return counts
        hour = counts.minute // 60
        newest = int(hour.max())
        now = float((newest + 1) * HOUR_S)
        limit = retention.raw_limit(now)
        old = hour < limit
        if not old.any() or not self._compact_lock(cx):
            return counts
        folding = counts.select(old)  # folded as columns, not packed (`rollup.fold`)
        # Each service's first and last hour folded: stored raw hours between are read.
        svc, hours = folding.service.astype(np.intp), hour[old]
        lows = np.full(len(counts.services), np.iinfo(np.int64).max)
        highs = np.full(len(counts.services), -1)
        np.minimum.at(lows, svc, hours)
        np.maximum.at(highs, svc, hours)
        span = {
            counts.services[i]: (int(lows[i]), int(highs[i]))
            for i in np.flatnonzero(highs >= 0).tolist()
        }
        stored = [
            (str(s), int(h), bytes(b))
            for sid, (lo, hi) in sorted(span.items())
            for s, h, b in cx.rows(
                "SELECT service, hour, data FROM minute_counts "
                f"WHERE service = %s AND hour BETWEEN %s AND %s{self.dialect.skip_locked}",
                (sid, lo, hi),
            )
        ]
        self._fold_into_blocks(cx, stored, (), now, retention, Drained.of(folding))
        if stored:
            cx.many(
                "DELETE FROM minute_counts WHERE service = %s AND hour = %s",
                [(s, h) for s, h, _ in stored],
            )
        return counts.select(~old)

    def _compact_lock(self, cx: Cx) -> bool:
        """Whether this process may compact now (PostgreSQL: one at a time)."""
        return True

    # ================================================================ alerts (issue 6)
    def add_subscription(self, sub: Mapping[str, Any]) -> None:
        """Store a subscription: id, service, group, min_severity, channel, config, created_at."""
        with self._small("alerts") as cx:
            cx.execute(
                "INSERT INTO subscriptions(id, service, grp, min_severity, channel, config, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        rows = self._dicts(
            "alerts",
            "subscriptions",
            SUBSCRIPTION_COLS,
            f"ORDER BY created_at, id{self.dialect.collate}",
            (),
        )
        for r in rows:
            r["config"] = orjson.loads(r["config"])
        return rows

    def delete_subscription(self, sub_id: str) -> bool:
        """Delete a subscription (its delivery log stays). False when there was none."""
        return self._delete("alerts", "subscriptions", sub_id)

    def add_delivery(self, d: Mapping[str, Any]) -> int | None:
        """Queue one alert (status pending) unless its `key` is already known.

        Returns the new delivery's id, or None when the key existed (the alert was queued
        before, perhaps before a restart): the idempotency guard.
        """
        with self._small("alerts") as cx:
            row = cx.one(
                "INSERT INTO deliveries(key, subscription, incident, kind, channel, status, "
                "attempts, next_at, payload, created_at) VALUES (%s, %s, %s, %s, %s, 'pending', "
                "0, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING id",
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
        return None if row is None else int(row[0])

    def delivery_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` are already in the delivery log."""
        found: set[str] = set()
        with self._small("alerts") as cx:
            for part in parts(list(keys)):
                cond, args = cx.any_of("key", part)
                found.update(
                    str(r[0]) for r in cx.rows(f"SELECT key FROM deliveries WHERE {cond}", args)
                )
        return found

    def update_delivery(self, delivery_id: int, change: DeliveryUpdate) -> None:
        with self._small("alerts") as cx:
            cx.execute(
                "UPDATE deliveries SET status = %s, attempts = %s, next_at = %s, "
                "last_error = %s, sent_at = %s WHERE id = %s",
                (
                    change.status,
                    change.attempts,
                    change.next_at,
                    change.last_error,
                    change.sent_at,
                    delivery_id,
                ),
            )

    def pending_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries still to attempt, in the order they were queued (with their payloads)."""
        return self._deliveries("WHERE status = 'pending' ORDER BY id", ())

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        found = self._deliveries("WHERE id = %s", (delivery_id,))
        return found[0] if found else None

    def deliveries(self, query: DeliveryQuery = LATEST_DELIVERIES) -> list[dict[str, Any]]:
        """The delivery log, newest first (without payloads)."""
        filters = {
            "subscription": query.subscription,
            "incident": query.incident,
            "status": query.status,
        }
        cols = [c for c, v in filters.items() if v is not None]
        where = " AND ".join(f"{c} = %s" for c in cols) or "1 = 1"
        args = [filters[c] for c in cols]
        rows = self._deliveries(
            f"WHERE {where} ORDER BY id DESC LIMIT %s", (*args, int(query.limit))
        )
        for r in rows:
            del r["payload"]
        return rows

    def _deliveries(self, tail: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        rows = self._dicts("alerts", "deliveries", DELIVERY_COLS, tail, args)
        for r in rows:
            r["payload"] = orjson.loads(r["payload"])
        return rows

    def _dicts(
        self, what: str, table: str, cols: Sequence[str], tail: str, args: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Rows of `table` as dicts keyed by `cols` (`key:column` where they differ)."""
        keys = [c.split(":")[0] for c in cols]
        select = ", ".join(c.split(":")[-1] for c in cols)
        with self._small(what) as cx:
            rows = cx.rows(f"SELECT {select} FROM {table} {tail}", args)
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ---------------------------------------------------------------- operations
    # Tokens, incident updates and maintenance windows: small writes from the event loop,
    # never inside a pipeline commit.
    def add_token(self, tok: Mapping[str, Any]) -> None:
        """Store a token: id, name, scopes (list), hash (SHA-256 hex), created_at."""
        with self._small("tokens") as cx:
            cx.execute(
                "INSERT INTO api_tokens(id, name, scopes, hash, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (tok["id"], tok["name"], " ".join(tok["scopes"]), tok["hash"], tok["created_at"]),
            )

    def tokens(self) -> list[dict[str, Any]]:
        rows = self._dicts(
            "tokens", "api_tokens", TOKEN_COLS, f"ORDER BY created_at, id{self.dialect.collate}", ()
        )
        for r in rows:
            r["scopes"] = r["scopes"].split()
        return rows

    def delete_token(self, token_id: str) -> bool:
        return self._delete("tokens", "api_tokens", token_id)

    def add_update(self, incident: str, at: float, status: str, text: str) -> None:
        """Append an operator's update to an incident."""
        with self._small("updates") as cx:
            cx.execute(
                "INSERT INTO incident_updates(incident, at, status, text) VALUES (%s, %s, %s, %s)",
                (incident, float(at), status, text),
            )

    def updates(self, incidents: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The updates of these incidents, oldest first: {incident: [{at, status, text}]}."""
        out: dict[str, list[dict[str, Any]]] = {}
        ids = list(dict.fromkeys(incidents))
        if not ids:
            return out
        with self._small("updates") as cx:
            for part in parts(ids):
                cond, args = cx.any_of("incident", part)
                for inc, at, status, text in cx.rows(
                    f"SELECT incident, at, status, text FROM incident_updates WHERE {cond} "
                    "ORDER BY seq",
                    args,
                ):
                    out.setdefault(inc, []).append({"at": at, "status": status, "text": text})
        return out

    def add_maintenance(self, w: Mapping[str, Any]) -> None:
        """Store a window: id, service (a service or group id), starts_at, ends_at, title,
        created_at (epoch seconds)."""
        with self._small("maintenance") as cx:
            cx.execute(
                f"INSERT INTO maintenance({', '.join(MAINTENANCE_COLS)}) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [w[c] for c in MAINTENANCE_COLS],
            )

    def maintenance(self, ending_after: float | None = None) -> list[dict[str, Any]]:
        """Windows that end after `ending_after` (all when None), soonest start first."""
        after = float("-inf") if ending_after is None else float(ending_after)
        tail = f"WHERE ends_at > %s ORDER BY starts_at, id{self.dialect.collate}"
        return self._dicts("maintenance", "maintenance", MAINTENANCE_COLS, tail, (after,))

    def delete_maintenance(self, window_id: str) -> bool:
        return self._delete("maintenance", "maintenance", window_id)

    def _visitor_sql(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[Any], int]:
        """store/visitors.py's statements (`?` placeholders) on the small-writes connection."""
        with self._small("visitors") as cx:
            cur = cx.execute(sql.replace("?", "%s"), args)
            rows = cur.fetchall() if cur.description is not None else []
            return rows, int(cur.rowcount)

    def _delete(self, what: str, table: str, row_id: str) -> bool:
        """Delete the row `row_id` of `table`; False when there was none."""
        with self._small(what) as cx:
            return int(cx.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,)).rowcount) > 0

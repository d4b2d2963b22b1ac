"""PostgreSQL store: psycopg 3 with a connection pool, versioned migrations (migrations_pg/).

The same interface and the same semantics as the SQLite store, plus what several workers
sharing one database need: a pipeline state per partition with the bus position folded into
it, worker liveness, and partition leases. A lease is held by one worker at a time; taking
it increments its epoch, and a commit made under a lease (`fence`) locks the lease row and
checks owner and epoch in the same transaction, so a worker that lost its lease cannot write.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
import psycopg
from numpy.typing import NDArray
from psycopg_pool import ConnectionPool, PoolTimeout

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

MIGRATIONS = "migrations_pg"
_MIGRATION_LOCK = 0x6F77_6D69  # pg_advisory_xact_lock key: one migrator at a time
_COMPACT_LOCK = 0x6F77_636F  # pg_try_advisory_xact_lock key: one compaction step at a time
POOL_MAX = 4
CONNECT_TIMEOUT_S = 10


class LeaseLostError(StoreError):
    """A commit under a lease that another worker has taken since (nothing was written)."""

    code = "lease_lost"


@dataclass(frozen=True)
class Lease:
    """A lease held: `name` (e.g. "partition/3"), its `owner` and the `epoch` of the take."""

    name: str
    owner: str
    epoch: int


def redact(url: str) -> str:
    """The URL without its password, fit for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://?"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


class PostgresStore(VisitorRows):
    def __init__(self, url: str, *, pool_max: int = POOL_MAX) -> None:
        self.url = url
        self.name = redact(url)
        self._tx: psycopg.Connection[Any] | None = None  # the connection of the open commit
        self._lock = threading.Lock()  # one commit at a time per store object
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as con:
                self._migrate(con)
        except psycopg.Error as exc:
            raise StoreError(
                f"{self.name}: cannot open the PostgreSQL database: {_msg(exc)}"
            ) from None
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_max,
            open=False,
            num_workers=1,
            timeout=30.0,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            self.pool.close()
            raise StoreError(f"{self.name}: cannot connect to PostgreSQL: {exc}") from None

    def _migrate(self, con: psycopg.Connection[Any]) -> None:
        known = migrations(MIGRATIONS)
        latest = known[-1][0] if known else 0
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row is not None and row[0] is not None else 0
            if current > latest:
                raise StoreError(
                    f"{self.name}: database schema version {current} is newer than this "
                    f"outagewatch knows ({latest}); upgrade outagewatch"
                )
            for version, sql in known:
                if version > current:
                    con.execute(sql.encode())
                    con.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))

    def schema_version(self) -> int:
        row = self._one("SELECT max(version) FROM schema_version")
        return 0 if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction; PostgreSQL errors become StoreError."""
        try:
            with self.pool.connection() as con:
                yield con
        except StoreError:
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"{self.name}: {what} failed: {_msg(exc)}") from None

    def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._conn("read") as con:
            return con.execute(sql, args).fetchone()

    # ---------------------------------------------------------------- catalog, state
    def load_catalog(self) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = 'catalog'")
        return None if row is None else str(row[0])

    def save_catalog(self, text: str) -> None:
        with self._conn("saving the catalog") as con:
            con.execute(
                "INSERT INTO meta(key, value) VALUES ('catalog', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (text,),
            )

    def load_state(self, key: str = "pipeline") -> bytes | None:
        row = self._one("SELECT value FROM state WHERE key = %s", (key,))
        return None if row is None else bytes(row[0])

    def replay_inputs(self, state_key: str = "pipeline") -> list[InputMark]:
        with self._conn("read") as con:
            return [input_mark(r) for r in con.execute(SELECT_INPUTS, (state_key,))]

    def load_position(self, key: str) -> int:
        """The bus position committed with `key`'s state (0 when none)."""
        row = self._one("SELECT position FROM state WHERE key = %s", (key,))
        return 0 if row is None or row[0] is None else int(row[0])

    # ---------------------------------------------------------------- writes
    def commit(self, c: Commit, *, fence: Lease | None = None, position: int | None = None) -> None:
        """Write one pipeline step atomically.

        `fence`: write only while that lease is still held (else `LeaseLostError`, nothing written).
        `position`: the last bus position folded into the state, stored with it.
        """
        with self._lock, self._conn("write") as con:
            self._tx = con
            try:
                if fence is not None:
                    held = con.execute(
                        "SELECT 1 FROM leases WHERE name = %s AND owner = %s AND epoch = %s "
                        "FOR UPDATE",
                        (fence.name, fence.owner, fence.epoch),
                    ).fetchone()
                    if held is None:
                        raise LeaseLostError(
                            f"{self.name}: lease {fence.name} (epoch {fence.epoch}) is no "
                            f"longer held by {fence.owner}; nothing was written"
                        )
                self._write_counts(c)
                self._write_incidents(c)
                if c.others:
                    with con.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO events(type, service, ts, body) VALUES (%s, %s, %s, %s)",
                            [(e.type, e.service, e.ts, e.body) for e in c.others],
                        )
                con.execute(
                    "INSERT INTO state(key, value, position) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "position = coalesce(excluded.position, state.position)",
                    (c.state_key, c.state, position),
                )
                if c.inputs:
                    with con.cursor() as cur:
                        cur.executemany(UPSERT_INPUT, input_rows(c))
                if c.journal_seq is not None:
                    con.execute(
                        "INSERT INTO meta(key, value) VALUES ('journal_seq', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (str(c.journal_seq),),
                    )
                    con.execute("DELETE FROM journal WHERE seq <= %s", (c.journal_seq,))
            except BaseException:
                con.rollback()
                raise
            finally:
                self._tx = None

    def _write_counts(self, c: Commit) -> None:
        con = self._tx
        assert con is not None
        new = list(chunks(c.counts))
        if not new:
            return
        keys = sorted({(s, h) for s, h, _ in new})
        existing: dict[tuple[str, int], bytes] = {}
        for sid, hour, data in con.execute(
            "SELECT m.service, m.hour, m.data FROM minute_counts m "
            "JOIN unnest(%s::text[], %s::bigint[]) AS k(service, hour) "
            "ON m.service = k.service AND m.hour = k.hour ORDER BY 1, 2 FOR UPDATE OF m",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ):
            existing[(sid, int(hour))] = bytes(data)
        services, hours, blobs = [], [], []
        for sid, hour, chunk in new:
            old = existing.get((sid, hour))
            merged = chunk if old is None else merge_chunks(unpack(old), chunk)
            services.append(sid)
            hours.append(hour)
            blobs.append(merged.tobytes())
        con.execute(
            "INSERT INTO minute_counts(service, hour, data) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bytea[]) "
            "ON CONFLICT (service, hour) DO UPDATE SET data = excluded.data",
            (services, hours, blobs),
        )

    def _write_incidents(self, c: Commit) -> None:
        con = self._tx
        assert con is not None
        with con.cursor() as cur:
            if c.transitions:
                cur.executemany(
                    "INSERT INTO transitions(incident, service, action, from_state, to_state, "
                    "at, detail) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
                    [
                        (
                            tr.incident,
                            tr.service,
                            tr.action,
                            tr.from_state.value,
                            tr.to_state.value,
                            tr.at,
                            orjson.dumps(tr.detail).decode(),
                        )
                        for tr in c.transitions
                    ],
                )
            if c.incidents:
                # Guarded by the old state: a resolved incident is never re-opened by a stale
                # write.
                cur.executemany(
                    "INSERT INTO incidents(id, service, status, started_at, ended_at, doc) "
                    "VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (id) DO UPDATE SET "
                    "status = excluded.status, ended_at = excluded.ended_at, doc = excluded.doc "
                    "WHERE incidents.status = 'ongoing' OR excluded.status = 'resolved'",
                    [
                        (
                            d["id"],
                            d["service"],
                            d["status"],
                            _epoch(d["started_at"]),
                            None if d["ended_at"] is None else _epoch(d["ended_at"]),
                            orjson.dumps(d).decode(),
                        )
                        for d in c.incidents
                    ],
                )

    # ---------------------------------------------------------------- journal
    def append_journal(self, batches: Sequence[bytes], received: float) -> list[int]:
        if not batches:
            return []
        with self._conn("journal write") as con:
            rows = con.execute(
                "INSERT INTO journal(received, lines) SELECT %s, b FROM unnest(%s::bytea[]) "
                "WITH ORDINALITY AS u(b, i) ORDER BY i RETURNING seq",
                (received, list(batches)),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def journal_after(self, seq: int) -> list[tuple[int, bytes]]:
        with self._conn("journal read") as con:
            rows = con.execute(
                "SELECT seq, lines FROM journal WHERE seq > %s ORDER BY seq", (seq,)
            ).fetchall()
        return [(int(s), bytes(b)) for s, b in rows]

    def journal_seq(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key = 'journal_seq'")
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
        where, args = incidents_where("%s", service, since, until, status)
        sql = f"SELECT doc::text FROM incidents WHERE {where}"
        sql += ' ORDER BY started_at DESC, id COLLATE "C"'
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        with self._conn("read") as con:
            return [orjson.loads(r[0]) for r in con.execute(sql, args)]

    def minute_counts(self, service: str, start: float, end: float) -> NDArray[np.int64]:
        """Counted reports per minute for [start, end) (epoch seconds, whole minutes)."""
        m0, m1 = int(start // 60), int(end // 60)
        out = np.zeros(max(m1 - m0, 0), np.int64)
        if m1 <= m0:
            return out
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT hour, data FROM minute_counts WHERE service = %s "
                "AND hour BETWEEN %s AND %s",
                (service, m0 // 60, (m1 - 1) // 60),
            ).fetchall()
        for hour, data in rows:
            chunk = unpack(bytes(data))
            minute = int(hour) * 60 + chunk["m"].astype(np.int64)
            sel = (minute >= m0) & (minute < m1)
            np.add.at(out, minute[sel] - m0, chunk["n"][sel])
        add_day_blocks(out, m0, self.count_days(service, m0 // 1440, (m1 - 1) // 1440))
        return out

    # ---------------------------------------------------------------- history (issue 20)
    def count_days(self, service: str, day0: int, day1: int) -> list[Block]:
        """(day, res, total, data) of the service's day blocks of days day0..day1."""
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT day, res, total, data FROM count_days WHERE service = %s "
                "AND day BETWEEN %s AND %s ORDER BY day",
                (service, day0, day1),
            ).fetchall()
        return [(int(d), int(r), int(t), bytes(b)) for d, r, t, b in rows]

    def day_totals(self, service: str, day0: int, day1: int) -> list[tuple[int, int]]:
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT day, total FROM count_days WHERE service = %s AND day BETWEEN %s AND %s",
                (service, day0, day1),
            ).fetchall()
        return [(int(d), int(t)) for d, t in rows]

    def raw_hours(self, service: str, hour0: int, hour1: int) -> list[tuple[int, bytes]]:
        """(hour, packed chunk) of the raw (not yet compacted) hours hour0..hour1."""
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT hour, data FROM minute_counts WHERE service = %s "
                "AND hour BETWEEN %s AND %s ORDER BY hour",
                (service, hour0, hour1),
            ).fetchall()
        return [(int(h), bytes(b)) for h, b in rows]

    def count_services(self) -> list[str]:
        with self._conn("read") as con:
            rows = con.execute(
                'SELECT service COLLATE "C" AS s FROM count_days UNION '
                "SELECT service FROM minute_counts ORDER BY s"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def compact_step(self, now: float, retention: Retention, budget: int = 256) -> int:
        """One bounded step of compaction (history.rollup) in one short transaction; the
        number of raw hours and blocks it handled (0: nothing left, or another process is
        compacting). Raw rows a commit holds are skipped (the next step takes them)."""
        d15, d60 = retention.coarse_limits(now)
        with self._conn("compaction") as con:
            got = con.execute("SELECT pg_try_advisory_xact_lock(%s)", (_COMPACT_LOCK,)).fetchone()
            if got is None or not got[0]:
                return 0
            raw = [
                (str(s), int(h), bytes(b))
                for s, h, b in con.execute(
                    "SELECT service, hour, data FROM minute_counts WHERE hour < %s "
                    'ORDER BY service COLLATE "C", hour LIMIT %s FOR UPDATE SKIP LOCKED',
                    (retention.raw_limit(now), budget),
                ).fetchall()
            ]
            keys = sorted({(s, h // 24) for s, h, _ in raw})
            blocks: dict[tuple[str, int], DayRow] = {}
            for row in con.execute(
                "SELECT c.service, c.day, c.res, c.total, c.data FROM count_days c "
                "JOIN unnest(%s::text[], %s::int[]) AS k(service, day) "
                "ON c.service = k.service AND c.day = k.day",
                ([k[0] for k in keys], [k[1] for k in keys]),
            ).fetchall():
                blocks[(row[0], row[1])] = (row[0], row[1], row[2], row[3], bytes(row[4]))
            due = con.execute(
                "SELECT service, day, res, total, data FROM count_days "
                "WHERE (res = 1 AND day < %s) OR (res = 15 AND day < %s) LIMIT %s",
                (d15, d60, budget),
            ).fetchall()
            for row in due:
                blocks[(row[0], row[1])] = (row[0], row[1], row[2], row[3], bytes(row[4]))
            if not raw and not due:
                return 0
            out = fold(raw, list(blocks.values()), now, retention)
            con.execute(
                "INSERT INTO count_days(service, day, res, total, data) "
                "SELECT * FROM unnest(%s::text[], %s::int[], %s::int[], %s::bigint[], "
                "%s::bytea[]) ON CONFLICT (service, day) DO UPDATE SET "
                "res = excluded.res, total = excluded.total, data = excluded.data",
                tuple(list(col) for col in zip(*out, strict=True)),
            )
            con.execute(
                "DELETE FROM minute_counts m USING unnest(%s::text[], %s::bigint[]) "
                "AS k(service, hour) WHERE m.service = k.service AND m.hour = k.hour",
                ([s for s, _, _ in raw], [h for _, h, _ in raw]),
            )
        return len(raw) + len(due)

    def count_bounds(self) -> tuple[int, int] | None:
        """(first hour, last hour) with stored counts, raw or compacted; None when none."""
        row = self._one(
            "SELECT min(h0), max(h1) FROM (SELECT min(hour) AS h0, max(hour) AS h1 "
            "FROM minute_counts UNION ALL SELECT min(day)::bigint * 24, "
            "max(day)::bigint * 24 + 23 FROM count_days) AS b"
        )
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def events(self, kind: str, service: str, start: float, end: float) -> list[dict[str, Any]]:
        """Stored events of one type and service with `start <= ts < end`, oldest first."""
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT body FROM events WHERE service = %s AND ts >= %s AND ts < %s "
                "AND type = %s ORDER BY ts, seq",
                (service, float(start), float(end), kind),
            ).fetchall()
        return [orjson.loads(bytes(r[0])) for r in rows]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT doc::text FROM incidents WHERE id = %s", (incident_id,))
        return None if row is None else dict(orjson.loads(row[0]))

    def transitions(self, incident: str) -> list[dict[str, Any]]:
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT action, from_state, to_state, at, detail::text FROM transitions "
                "WHERE incident = %s ORDER BY seq",
                (incident,),
            ).fetchall()
        return [
            {"action": a, "from": f, "to": t, "at": at, "detail": orjson.loads(d)}
            for a, f, t, at, d in rows
        ]

    # ---------------------------------------------------------------- alerts
    # ---------------------------------------------------------------- operations (§8)
    def add_token(self, tok: Mapping[str, Any]) -> None:
        """Store a token: id, name, scopes (list), hash (SHA-256 hex), created_at."""
        with self._conn("tokens") as con:
            con.execute(
                "INSERT INTO api_tokens(id, name, scopes, hash, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (tok["id"], tok["name"], " ".join(tok["scopes"]), tok["hash"], tok["created_at"]),
            )

    def tokens(self) -> list[dict[str, Any]]:
        with self._conn("tokens") as con:
            rows = con.execute(
                "SELECT id, name, scopes, hash, created_at FROM api_tokens "
                'ORDER BY created_at, id COLLATE "C"'
            ).fetchall()
        return [
            {"id": i, "name": n, "scopes": s.split(), "hash": h, "created_at": t}
            for i, n, s, h, t in rows
        ]

    def delete_token(self, token_id: str) -> bool:
        with self._conn("tokens") as con:
            cur = con.execute("DELETE FROM api_tokens WHERE id = %s", (token_id,))
            return cur.rowcount > 0

    def add_update(self, incident: str, at: float, status: str, text: str) -> None:
        """Append an operator's update to an incident."""
        with self._conn("updates") as con:
            con.execute(
                "INSERT INTO incident_updates(incident, at, status, text) VALUES (%s, %s, %s, %s)",
                (incident, float(at), status, text),
            )

    def updates(self, incidents: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The updates of these incidents, oldest first: {incident: [{at, status, text}]}."""
        out: dict[str, list[dict[str, Any]]] = {}
        ids = list(dict.fromkeys(incidents))
        if not ids:
            return out
        with self._conn("updates") as con:
            rows = con.execute(
                "SELECT incident, at, status, text FROM incident_updates "
                "WHERE incident = ANY(%s) ORDER BY seq",
                (ids,),
            ).fetchall()
        for inc, at, status, text in rows:
            out.setdefault(inc, []).append({"at": at, "status": status, "text": text})
        return out

    def add_maintenance(self, w: Mapping[str, Any]) -> None:
        """Store a window: id, service (a service or group id), starts_at, ends_at, title,
        created_at (epoch seconds)."""
        with self._conn("maintenance") as con:
            con.execute(
                "INSERT INTO maintenance(id, service, starts_at, ends_at, title, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (w["id"], w["service"], w["starts_at"], w["ends_at"], w["title"], w["created_at"]),
            )

    def maintenance(self, ending_after: float | None = None) -> list[dict[str, Any]]:
        """Windows that end after `ending_after` (all when None), soonest start first."""
        with self._conn("maintenance") as con:
            rows = con.execute(
                "SELECT id, service, starts_at, ends_at, title, created_at FROM maintenance "
                'WHERE ends_at > %s ORDER BY starts_at, id COLLATE "C"',
                (float("-inf") if ending_after is None else float(ending_after),),
            ).fetchall()
        cols = ("id", "service", "starts_at", "ends_at", "title", "created_at")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def delete_maintenance(self, window_id: str) -> bool:
        with self._conn("maintenance") as con:
            cur = con.execute("DELETE FROM maintenance WHERE id = %s", (window_id,))
            return cur.rowcount > 0

    # ---------------------------------------------------------------- visitors (issue 19)
    # The SQL is in store/visitors.py (VisitorRows), with `?` placeholders.
    def _visitor_sql(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[Any], int]:
        with self._conn("visitors") as con:
            cur = con.execute(sql.replace("?", "%s").encode(), args)
            rows = cur.fetchall() if cur.description is not None else []
            return rows, cur.rowcount

    def add_subscription(self, sub: Mapping[str, Any]) -> None:
        """Store a subscription: id, service, group, min_severity, channel, config, created_at."""
        with self._conn("alerts") as con:
            con.execute(
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
        with self._conn("alerts") as con:
            rows = con.execute(
                "SELECT id, service, grp, min_severity, channel, config, created_at "
                'FROM subscriptions ORDER BY created_at, id COLLATE "C"'
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
        with self._conn("alerts") as con:
            cur = con.execute("DELETE FROM subscriptions WHERE id = %s", (sub_id,))
            return cur.rowcount > 0

    def add_delivery(self, d: Mapping[str, Any]) -> int | None:
        """Queue one alert (status pending) unless its `key` is already known: its id, or
        None when the key existed (the idempotency guard)."""
        with self._conn("alerts") as con:
            row = con.execute(
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
            ).fetchone()
        return None if row is None else int(row[0])

    def delivery_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` are already in the delivery log."""
        with self._conn("alerts") as con:
            rows = con.execute(
                "SELECT key FROM deliveries WHERE key = ANY(%s)", (list(keys),)
            ).fetchall()
        return {str(r[0]) for r in rows}

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
        with self._conn("alerts") as con:
            con.execute(
                "UPDATE deliveries SET status = %s, attempts = %s, next_at = %s, "
                "last_error = %s, sent_at = %s WHERE id = %s",
                (status, attempts, next_at, last_error, sent_at, delivery_id),
            )

    def pending_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries still to attempt, in the order they were queued (with their payloads)."""
        return self._deliveries("WHERE status = 'pending' ORDER BY id", ())

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        found = self._deliveries("WHERE id = %s", (delivery_id,))
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
            {"subscription": subscription, "incident": incident, "status": status}, "%s"
        )
        rows = self._deliveries(f"WHERE {where} ORDER BY id DESC LIMIT %s", (*args, int(limit)))
        for r in rows:
            del r["payload"]
        return rows

    _DELIVERY_COLS = (
        "id", "key", "subscription", "incident", "kind", "channel", "status", "attempts",
        "next_at", "last_error", "payload", "created_at", "sent_at",
    )  # fmt: skip

    def _deliveries(self, tail: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        cols = self._DELIVERY_COLS
        with self._conn("alerts") as con:
            rows = con.execute(
                f"SELECT {', '.join(cols)} FROM deliveries {tail}".encode(), args
            ).fetchall()
        out = []
        for row in rows:
            d = dict(zip(cols, row, strict=True))
            d["payload"] = orjson.loads(d["payload"])
            out.append(d)
        return out

    # ---------------------------------------------------------------- workers and leases
    def heartbeat(self, worker: str, ttl: float) -> list[str]:
        """Mark `worker` alive for `ttl` seconds; returns the ids of the live workers, sorted."""
        with self._conn("heartbeat") as con:
            con.execute(
                "INSERT INTO workers(id, expires_at) VALUES (%s, clock_timestamp() + "
                "make_interval(secs => %s)) ON CONFLICT (id) DO UPDATE SET "
                "expires_at = excluded.expires_at",
                (worker, ttl),
            )
            con.execute(
                "DELETE FROM workers WHERE expires_at < clock_timestamp() - interval '1 day'"
            )
            rows = con.execute(
                "SELECT id FROM workers WHERE expires_at > clock_timestamp() ORDER BY id"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def leave(self, worker: str) -> None:
        """`worker` stops: all its leases are released and it no longer counts as live."""
        with self._conn("leaving") as con:
            con.execute("UPDATE leases SET expires_at = '-infinity' WHERE owner = %s", (worker,))
            con.execute("DELETE FROM workers WHERE id = %s", (worker,))

    def renew(self, worker: str, ttl: float) -> list[Lease]:
        """Extend every lease `worker` holds (expired or not, as long as nobody took it)."""
        with self._conn("lease renewal") as con:
            rows = con.execute(
                "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                "WHERE owner = %s AND expires_at > '-infinity' RETURNING name, epoch",
                (ttl, worker),
            ).fetchall()
        return sorted((Lease(str(n), worker, int(e)) for n, e in rows), key=lambda x: x.name)

    def acquire(self, worker: str, names: Sequence[str], ttl: float, limit: int) -> list[Lease]:
        """Take up to `limit` of the leases in `names` that are free or expired (in order)."""
        got: list[Lease] = []
        if limit <= 0:
            return got
        with self._conn("lease acquisition") as con:
            for name in names:
                row = con.execute(
                    "INSERT INTO leases(name, owner, epoch, expires_at) VALUES (%s, %s, 1, "
                    "clock_timestamp() + make_interval(secs => %s)) ON CONFLICT (name) DO UPDATE "
                    "SET owner = excluded.owner, epoch = leases.epoch + 1, "
                    "expires_at = excluded.expires_at "
                    "WHERE leases.expires_at < clock_timestamp() RETURNING epoch",
                    (name, worker, ttl),
                ).fetchone()
                con.commit()
                if row is not None:
                    got.append(Lease(name, worker, int(row[0])))
                    if len(got) >= limit:
                        break
        return got

    def release(self, worker: str, names: Sequence[str]) -> None:
        """Give up leases now (others may take them at once); the epoch is kept."""
        with self._conn("lease release") as con:
            self._release(con, worker, names)

    @staticmethod
    def _release(con: psycopg.Connection[Any], worker: str, names: Sequence[str]) -> None:
        con.execute(
            "UPDATE leases SET expires_at = '-infinity' WHERE owner = %s AND name = ANY(%s)",
            (worker, list(names)),
        )

    def leases(self) -> list[tuple[str, str, int, bool]]:
        """(name, owner, epoch, live) of every lease ever taken, by name."""
        with self._conn("read") as con:
            rows = con.execute(
                "SELECT name, owner, epoch, expires_at > clock_timestamp() FROM leases "
                "ORDER BY name"
            ).fetchall()
        return [(str(n), str(o), int(e), bool(live)) for n, o, e, live in rows]


def _epoch(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp())


def _msg(exc: BaseException) -> str:
    """One line from a driver error."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

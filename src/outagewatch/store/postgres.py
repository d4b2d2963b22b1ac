"""PostgreSQL store: psycopg 3 with a connection pool; the migration sequence of store/sql.py.

The same interface and the same semantics as the SQLite store, plus what several workers
sharing one database need: a pipeline state per partition with the bus position folded into
it, worker liveness, and partition leases. A lease is held by one worker at a time; taking
it increments its epoch, and a commit made under a lease (`fence`) locks the lease row and
checks owner and epoch in the same transaction, so a worker that lost its lease cannot write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from outagewatch.errors import StoreError
from outagewatch.incidents.lifecycle import State, Transition
from outagewatch.store.base import Commit, chunks

if TYPE_CHECKING:
    from outagewatch.pipeline.pipeline import CountRows
from outagewatch.store.sql import POSTGRES, Cx, SQLStore, merged, migrations

MIGRATIONS = "postgresql"  # the dialect whose migrations apply (store/sql.py)
_MIGRATION_LOCK = 0x6F77_6D69  # pg_advisory_xact_lock key: one migrator at a time
_COMPACT_LOCK = 0x6F77_636F  # pg_try_advisory_xact_lock key (with the schema's): one step at a time
_CLUSTER_LOCK = 0x6F77_636C  # pg_advisory_xact_lock key: one cross-partition clustering at a time
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


class PostgresStore(SQLStore):
    dialect = POSTGRES

    def __init__(self, url: str, *, pool_max: int = POOL_MAX) -> None:
        self.url = url
        self.name = redact(url)
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

    def _all(self, sql: str, args: Sequence[Any] = (), what: str = "read") -> list[tuple[Any, ...]]:
        with self._conn(what) as con:
            return con.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- SQLStore's hooks
    @contextmanager
    def _read(self, what: str) -> Iterator[Cx]:
        with self._conn(what) as con:
            yield Cx(con, POSTGRES)

    _small = _read
    _tx = _read  # a pooled connection is one transaction: committed on leaving, else rolled back

    # ---------------------------------------------------------------- state
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
                self._write_step(Cx(con, POSTGRES), c, position)
            except BaseException:
                con.rollback()
                raise

    def _write_state(self, cx: Cx, c: Commit, position: int | None) -> None:
        cx.execute(
            "INSERT INTO state(key, value, position) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "position = coalesce(excluded.position, state.position)",
            (c.state_key, c.state, position),
        )

    def _write_counts(self, cx: Cx, counts: CountRows) -> None:
        new = list(chunks(counts))
        if not new:
            return
        keys = sorted({(s, h) for s, h, _ in new})
        existing: dict[tuple[str, int], bytes] = {}
        for sid, hour, data in cx.execute(
            "SELECT m.service, m.hour, m.data FROM minute_counts m "
            "JOIN unnest(%s::text[], %s::bigint[]) AS k(service, hour) "
            "ON m.service = k.service AND m.hour = k.hour ORDER BY 1, 2 FOR UPDATE OF m",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ):
            existing[(sid, int(hour))] = bytes(data)
        rows = merged(new, existing)
        cx.execute(
            "INSERT INTO minute_counts(service, hour, data) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bytea[]) "
            "ON CONFLICT (service, hour) DO UPDATE SET data = excluded.data",
            tuple(list(col) for col in zip(*rows, strict=True)),
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

    def _compact_lock(self, cx: Cx) -> bool:
        # One compaction step at a time across the processes of this store (the others skip
        # theirs). Keyed by the schema too: stores in other schemas of the same database
        # (other deployments, parallel tests) compact their own tables and must not make
        # this one skip a step.
        got = cx.one(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema()))", (_COMPACT_LOCK,)
        )
        return got is not None and bool(got[0])

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
        rows = self._all(
            "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE owner = %s AND expires_at > '-infinity' RETURNING name, epoch",
            (ttl, worker),
            "lease renewal",
        )
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
        rows = self._all(
            "SELECT name, owner, epoch, expires_at > clock_timestamp() FROM leases ORDER BY name"
        )
        return [(str(n), str(o), int(e), bool(live)) for n, o, e, live in rows]

    # ---------------------------------------------------------------- scale-out leader
    # One API node at a time holds the lease LEADER_LEASE (the same `leases` rows and
    # `acquire`/`renew`/`release` as the partitions) and runs the probes, the status-page
    # polls and the alert dispatcher (runtime/leader.py). What it writes is fenced by that
    # lease, checked in the same statement: a deposed leader writes nothing.
    _HELD = (
        "EXISTS (SELECT 1 FROM leases WHERE name = %s AND owner = %s AND epoch = %s "
        "AND expires_at > clock_timestamp())"
    )

    def transitions_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Transition]]:
        """(seq, transition) of the stored transitions after `seq`, in order."""
        rows = self._all(
            "SELECT seq, incident, service, action, from_state, to_state, at, detail::text "
            "FROM transitions WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [
            (int(q), Transition(i, s, a, State(f), State(t), float(at), orjson.loads(d)))
            for q, i, s, a, f, t, at, d in rows
        ]

    def last_transition_seq(self) -> int:
        row = self._one("SELECT coalesce(max(seq), 0) FROM transitions")
        return 0 if row is None else int(row[0])

    def leader_cursor(self, name: str) -> int | None:
        """How far the leader's `name` follower has read (None: never started)."""
        row = self._one("SELECT value FROM meta WHERE key = %s", (f"leader/{name}",))
        return None if row is None else int(row[0])

    def save_leader_cursor(self, name: str, value: int, fence: Lease) -> bool:
        """Store the cursor while `fence` is held (False: not held, nothing written)."""
        return self.put_shared(f"leader/{name}", str(int(value)), fence)

    def put_shared(self, key: str, value: str, fence: Lease) -> bool:
        """Write `key` of the shared `meta` rows while `fence` is held (False: not held,
        nothing written): what one process publishes for the others."""
        with self._conn("publishing to the shared store") as con:
            row = con.execute(
                "INSERT INTO meta(key, value) SELECT %s, %s WHERE " + self._HELD + " "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING key",
                (key, value, fence.name, fence.owner, fence.epoch),
            ).fetchone()
        return row is not None

    def shared(self, prefix: str) -> dict[str, str]:
        """The shared `meta` rows whose key starts with `prefix`."""
        rows = self._all(
            "SELECT key, value FROM meta WHERE starts_with(key, %s) ORDER BY key", (prefix,)
        )
        return {str(k): str(v) for k, v in rows}

    def claim_delivery(self, delivery_id: int, attempts: int, fence: Lease) -> bool:
        """Claim attempt `attempts + 1` of a pending delivery for the holder of `fence`: one
        statement compares the attempts counted so far and checks the lease, so one attempt
        is made by one leader only. The row says the attempt is in flight until its outcome
        is written (a leader killed meanwhile leaves it so: the next retries it with the
        same idempotency key)."""
        note = f"in flight: attempt {attempts + 1} by {fence.owner} (epoch {fence.epoch})"
        with self._conn("claiming a delivery") as con:
            row = con.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = %s "
                "WHERE id = %s AND status = 'pending' AND attempts = %s AND " + self._HELD + " "
                "RETURNING id",
                (note, delivery_id, attempts, fence.name, fence.owner, fence.epoch),
            ).fetchone()
        return row is not None

    def recluster(
        self,
        lo: float,
        hi: float,
        assign: Callable[[list[dict[str, Any]]], Mapping[str, dict[str, Any] | None]],
    ) -> int:
        """Clusters across partitions: `assign` (docs -> id -> cluster) over the incidents
        overlapping [lo, hi], its answer written into their docs; one at a time (an advisory
        lock), so the last one after a commit has seen every commit before it. How many
        docs changed."""
        changed = 0
        with self._conn("clustering across partitions") as con:
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_CLUSTER_LOCK,))
            rows = con.execute(
                "SELECT doc::text FROM incidents WHERE started_at <= %s "
                "AND (ended_at IS NULL OR ended_at >= %s) ORDER BY id",
                (hi, lo),
            ).fetchall()
            docs = [dict(orjson.loads(r[0])) for r in rows]
            want = assign(docs)
            for d in docs:
                cluster = want.get(str(d["id"]))
                if cluster != d.get("cluster"):
                    con.execute(
                        "UPDATE incidents SET doc = jsonb_set(doc, '{cluster}', %s::jsonb) "
                        "WHERE id = %s",
                        (orjson.dumps(cluster).decode(), d["id"]),
                    )
                    changed += 1
        return changed


def _msg(exc: BaseException) -> str:
    """One line from a driver error."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

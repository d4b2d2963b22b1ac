"""One writer per store: `serve` (without a bus), `demo` and `replay` hold this lock.

Two writers on one store would overwrite each other's pipeline state, and one's commit would
drop the other's journal rows. Readers (`incidents`, the pages of another process) need no
lock: SQLite's WAL lets them read while the writer writes.

- SQLite: an exclusive `flock` on a file beside the database (`<db>.lock`), which names its
  holder (process id, host, command, since when). The operating system releases it when the
  holder dies, `kill -9` included, so a dead writer never blocks the next one.
- PostgreSQL: a session advisory lock, keyed by the schema the store lives in, on a
  connection kept open for the writer's life (PostgreSQL releases it when that connection
  ends, also when the process dies); the holder is named by the connection's
  `application_name`. Scale-out workers do not take it: they write per-partition states
  under leases (worker.py), and API nodes with a bus write no state.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from outagewatch.errors import StoreError
from outagewatch.events import iso
from outagewatch.store import is_postgres_url

_PG_KEY = "SELECT hashtext('outagewatch writer ' || current_schema())::bigint"


def _holder(command: str) -> str:
    since = iso(time.time())  # the host's name as gethostname gives it (no socket import)
    return f"outagewatch {command}, pid {os.getpid()} on {os.uname().nodename}, since {since}"


class WriterLock:
    """Held from `acquire` to `release` (or the end of the process)."""

    def __init__(self, release: Any) -> None:
        self._release = release

    @classmethod
    def acquire(cls, db: str, command: str, shown: str) -> WriterLock:
        """Take the writer lock of the store `db` for `command`, or raise StoreError naming
        who holds it (`shown`: the database as it may be shown)."""
        if is_postgres_url(db):
            return cls._acquire_pg(db, command, shown)
        if db in ("", ":memory:") or db.startswith("file:"):
            return cls(lambda: None)  # private to this process
        path = f"{db}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the writer lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise StoreError(
                f"{shown}: another process is writing to this database ({who or 'unknown'}); "
                "one writer at a time (readers such as `incidents` may run alongside)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder(command) + "\n").encode(), 0)

        def release() -> None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the last descriptor drops the flock

        return cls(release)

    @classmethod
    def _acquire_pg(cls, url: str, command: str, shown: str) -> WriterLock:
        import psycopg

        try:
            con = psycopg.connect(
                url, autocommit=True, connect_timeout=10, application_name=_holder(command)[:63]
            )
        except psycopg.Error as exc:
            raise StoreError(f"{shown}: cannot take the writer lock: {exc}") from None
        try:
            row = con.execute(f"SELECT pg_try_advisory_lock(({_PG_KEY}))").fetchone()
            if row is None or not row[0]:
                who = con.execute(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    f"AND l.objid = ((({_PG_KEY}) & 4294967295))::oid "
                    f"AND l.classid = ((({_PG_KEY}) >> 32) & 4294967295)::oid "
                    "AND l.database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ).fetchone()
                con.close()
                raise StoreError(
                    f"{shown}: another process is writing to this database "
                    f"({who[0] if who and who[0] else 'unknown'}); one writer at a time "
                    "(readers such as `incidents` may run alongside)"
                )
        except psycopg.Error as exc:
            con.close()
            raise StoreError(f"{shown}: cannot take the writer lock: {exc}") from None
        return cls(con.close)

    def release(self) -> None:
        release, self._release = self._release, lambda: None
        release()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

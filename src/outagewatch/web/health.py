"""Can the store still take writes? A cheap, real check for `/healthz` and for `serve`'s start.

`/healthz` must not say ok while what the API acknowledges could not be kept. For a SQLite
store, every `CHECK_EVERY_S` at most (off the event loop): the database file is still the
one opened (not deleted or replaced), its WAL file is still there and the same (deleting it
loses what was written since the last checkpoint), both are writable (`access(2)`, which
also sees immutable files and read-only mounts), and a write is possible: a table created
inside a transaction that is rolled back (fails on a read-only file, directory or mount).
When the server's own writer holds the write lock at that moment, writing plainly works.
PostgreSQL reports its own failures on every write; nothing is checked here.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

from outagewatch.store import is_postgres_url

CHECK_EVERY_S = 5.0


def probe_write(path: str) -> str | None:
    """None when a write to the SQLite database at `path` is possible, else why not."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    except sqlite3.Error as exc:
        return f"cannot open the database: {exc}"
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE _outagewatch_write_probe (x)")
        finally:
            db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # someone (our writer) is writing right now: writes work
        return f"cannot write to the database: {exc}"
    except sqlite3.Error as exc:
        return f"cannot write to the database: {exc}"
    finally:
        db.close()
    return None


class StoreHealth:
    def __init__(self, db: str, every_s: float = CHECK_EVERY_S) -> None:
        self.path = None if is_postgres_url(db) or db in ("", ":memory:") else db
        self.every_s = every_s
        self._ids: dict[str, tuple[int, int]] = {}  # path -> (device, inode) when first seen
        self._at = -float("inf")
        self._last: str | None = None
        self._lock = threading.Lock()

    def remember(self) -> None:
        """Note the database and WAL files as they are now (the server has them open)."""
        if self.path is None:
            return
        for p in (self.path, f"{self.path}-wal"):
            try:
                st = os.stat(p)
            except OSError:
                continue
            self._ids[p] = (st.st_dev, st.st_ino)

    def check_now(self) -> str | None:
        """Why the store cannot take writes now, or None."""
        if self.path is None:
            return None
        for p, what in ((self.path, "database file"), (f"{self.path}-wal", "WAL file")):
            try:
                st = os.stat(p)
            except FileNotFoundError:
                return f"the {what} {p} was deleted while the server had it open"
            except OSError as exc:
                return f"the {what} {p} cannot be read: {exc.strerror}"
            seen = self._ids.setdefault(p, (st.st_dev, st.st_ino))
            if seen != (st.st_dev, st.st_ino):
                return f"the {what} {p} was replaced while the server had it open"
            if not os.access(p, os.W_OK):  # also for root: immutable files, read-only mounts
                return f"the {what} {p} is read-only"
        return probe_write(self.path)

    async def problem(self) -> str | None:
        """`check_now`, at most once every `every_s` (in a worker thread)."""
        if self.path is None or time.monotonic() - self._at < self.every_s:
            return self._last
        if not self._lock.acquire(blocking=False):  # a check is running: its last answer
            return self._last
        try:
            self._last = await asyncio.to_thread(self.check_now)
            self._at = time.monotonic()
        finally:
            self._lock.release()
        return self._last

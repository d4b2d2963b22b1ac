"""`outagewatch backup FILE`: a consistent copy of a live SQLite store.

SQLite's online backup copies every page in one step under one read transaction: in WAL mode
a reader never blocks the writers, so `serve` goes on ingesting and committing while the copy
is made, and the copy is the database as of the moment the step began (every report
acknowledged before then is in it: in the counts, or in the journal the next start replays).
PostgreSQL: use `pg_dump`. To restore, stop the server and put the copy in place of the
database file (or point --db at it).
"""

from __future__ import annotations

import os
import sqlite3

from outagewatch.errors import StoreError, UsageError
from outagewatch.store import is_postgres_url


def backup(db: str, target: str) -> int:
    """Copy the SQLite database `db` to the new file `target`; its size in bytes."""
    if is_postgres_url(db):
        raise UsageError(
            "backup copies SQLite stores only; for PostgreSQL use pg_dump "
            "(e.g. pg_dump --format=custom --file=FILE URL)"
        )
    if db in ("", ":memory:") or not os.path.isfile(db):
        raise UsageError(f"{db}: no such SQLite database file")
    if os.path.exists(target):
        raise UsageError(f"{target}: already exists; give a new file name")
    if os.path.abspath(target) == os.path.abspath(db):
        raise UsageError(f"{target}: is the database itself")
    part = target + ".part"
    try:
        src = sqlite3.connect(db)
        try:
            src.execute("PRAGMA busy_timeout=10000")
            dest = sqlite3.connect(part)
            try:
                src.backup(dest)  # all pages in one step: a consistent copy of one moment
                ok = dest.execute("PRAGMA quick_check").fetchone()
                if ok is None or ok[0] != "ok":
                    raise StoreError(f"{target}: the copy failed its check: {ok}")
                dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dest.close()
        finally:
            src.close()
        os.replace(part, target)
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: backup failed: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{target}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return os.path.getsize(target)

"""Stores: where incidents, minute counts and pipeline state live."""

from __future__ import annotations

from outagewatch.errors import StoreError
from outagewatch.store.base import Commit, Store


def open_store(url: str) -> Store:
    """Open the store a `--db` value names: a path (SQLite) or a postgresql:// URL."""
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "PostgreSQL is not supported by this version yet; use a SQLite path for --db"
        )
    from outagewatch.store.sqlite import SQLiteStore

    return SQLiteStore(url)


__all__ = ["Commit", "Store", "StoreError", "open_store"]

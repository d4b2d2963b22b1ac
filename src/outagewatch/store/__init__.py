"""Stores: where incidents, minute counts and pipeline state live."""

from __future__ import annotations

from outagewatch.errors import StoreError
from outagewatch.store.base import Commit, Store


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str) -> Store:
    """Open the store a `--db` value names: a path (SQLite) or a postgresql:// URL."""
    if is_postgres_url(url):
        from outagewatch.store.postgres import PostgresStore

        return PostgresStore(url)
    from outagewatch.store.sqlite import SQLiteStore

    return SQLiteStore(url)


__all__ = ["Commit", "Store", "StoreError", "is_postgres_url", "open_store"]

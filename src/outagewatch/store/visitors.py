"""Rows of visitors' email subscriptions, admin page sessions and site keys (issue 19).

The SQL of both stores lives here, once (`?` placeholders). A store takes part by
inheriting `VisitorRows` and supplying `_visitor_sql(sql, args) -> (rows, rowcount)` (both
do through store/sql.py's `SQLStore`); the tables are migration 8.

Secrets are stored only as SHA-256 hashes: a confirmation token while a subscription waits
for confirmation, the id of an admin session. `site_keys` holds random keys made once and
shared by every node (the HMAC key of unsubscribe links).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_COLS = ("id", "email", "services", "confirm_hash", "created_at", "confirmed_at")
_SELECT = f"SELECT {', '.join(_COLS)} FROM visitor_subscribers"


def _visitor(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(_COLS, row, strict=True))
    d["services"] = str(d["services"]).split()
    return d


class VisitorRows:
    """The methods; a store supplies `_visitor_sql`."""

    def _visitor_sql(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[Any], int]:
        raise NotImplementedError

    # ------------------------------------------------------------ email subscribers
    def add_visitor(self, v: Mapping[str, Any]) -> None:
        """Store a subscriber: id, email, services (ids), confirm_hash, created_at."""
        self._visitor_sql(
            "INSERT INTO visitor_subscribers(id, email, services, confirm_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (v["id"], v["email"], " ".join(v["services"]), v["confirm_hash"], v["created_at"]),
        )

    def visitor(self, visitor_id: str) -> dict[str, Any] | None:
        rows, _ = self._visitor_sql(f"{_SELECT} WHERE id = ?", (visitor_id,))
        return _visitor(rows[0]) if rows else None

    def visitors_of(self, email: str, *, confirmed: bool = True) -> list[dict[str, Any]]:
        """The confirmed subscribers of one address (`confirmed=False`: all its requests),
        oldest first."""
        only = " AND confirmed_at IS NOT NULL" if confirmed else ""
        rows, _ = self._visitor_sql(
            f"{_SELECT} WHERE email = ?{only} ORDER BY created_at, id", (email,)
        )
        return [_visitor(r) for r in rows]

    def confirm_visitor(self, visitor_id: str, confirm_hash: str, at: float) -> bool:
        """Mark confirmed, guarded by the old state (the hash still there): True for the one
        caller that made the change."""
        _, n = self._visitor_sql(
            "UPDATE visitor_subscribers SET confirm_hash = NULL, confirmed_at = ? "
            "WHERE id = ? AND confirm_hash = ?",
            (at, visitor_id, confirm_hash),
        )
        return n > 0

    def delete_visitor(self, visitor_id: str) -> bool:
        _, n = self._visitor_sql("DELETE FROM visitor_subscribers WHERE id = ?", (visitor_id,))
        return n > 0

    def prune_visitors(self, created_before: float) -> int:
        """Forget requests never confirmed that were made before `created_before`."""
        _, n = self._visitor_sql(
            "DELETE FROM visitor_subscribers WHERE confirmed_at IS NULL AND created_at < ?",
            (created_before,),
        )
        return n

    # ------------------------------------------------------------ admin sessions
    def add_session(self, session_hash: str, expires_at: float, token_hash: str) -> None:
        """A session, with the SHA-256 of the token it was opened with (`tokens.hash`)."""
        self._visitor_sql(
            "INSERT INTO admin_sessions(hash, expires_at, token_hash) VALUES (?, ?, ?)",
            (session_hash, expires_at, token_hash),
        )

    def session(self, session_hash: str) -> tuple[float, str] | None:
        """(expires_at, token_hash) of a session, or None when there is no such session."""
        rows, _ = self._visitor_sql(
            "SELECT expires_at, token_hash FROM admin_sessions WHERE hash = ?", (session_hash,)
        )
        return (float(rows[0][0]), str(rows[0][1])) if rows else None

    def delete_session(self, session_hash: str) -> None:
        self._visitor_sql("DELETE FROM admin_sessions WHERE hash = ?", (session_hash,))

    def prune_sessions(self, now: float) -> None:
        self._visitor_sql("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))

    # ------------------------------------------------------------ site keys
    def site_key(self, name: str, fresh: str) -> str:
        """The key called `name`: `fresh` if none was stored yet (the first caller's wins,
        so every node of a deployment gets the same one)."""
        self._visitor_sql(
            "INSERT INTO site_keys(name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, fresh),
        )
        rows, _ = self._visitor_sql("SELECT value FROM site_keys WHERE name = ?", (name,))
        return str(rows[0][0])

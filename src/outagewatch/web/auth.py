"""Who may do what: bearer tokens with scopes (docs/contract.md §8), checked in one place.

    Authorization: Bearer <token>

- `OUTAGEWATCH_TOKEN` (the settings' `token`) is the bootstrap admin.
- `POST /api/v1/tokens` makes named tokens with scopes; the store keeps only the SHA-256 of
  each (a token is 32 random bytes, so a plain hash is enough), and the token itself is
  shown once. A presented token is hashed and compared with every known hash with
  `hmac.compare_digest`, all of them, so the answer takes the same time whichever matched.
- Scopes: `admin` (everything), `ingest` (partner reports without the rate limit, probes,
  metrics, probe config), `read` (`GET /metrics`, the delivery log).
- A missing token is 401, a token that is not known 403, a known token without the scope
  403; all in the JSON error shape (`ApiError`).

Every endpoint that needs a scope depends on `Auth.dependency(scope)`, which also puts the
scope in the OpenAPI document (the `bearer` security scheme and a line in its description).
Tokens made on one API node reach the others within `REFRESH_S` (the list is re-read from
the shared store at most that often).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request, Security
from fastapi.security import HTTPBearer

from outagewatch.store.base import Store
from outagewatch.web.ingest import ApiError

Scope = Literal["admin", "ingest", "read"]
SCOPES: tuple[Scope, ...] = ("admin", "ingest", "read")
SCOPE_HELP: dict[str, str] = {
    "admin": "everything",
    "ingest": "partner reports without the rate limit, probes, metrics, probe config",
    "read": "GET /metrics and the delivery log",
}
REFRESH_S = 5.0
MAX_NAME = 100
TOKEN_PREFIX = "ow_"

# The OpenAPI security scheme every scoped endpoint names.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="`Authorization: Bearer <token>`: OUTAGEWATCH_TOKEN (admin) or a token "
    "made with POST /api/v1/tokens. Scopes: "
    + "; ".join(f"`{k}`: {v}" for k, v in SCOPE_HELP.items()),
    auto_error=False,
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def secret_row(
    id_prefix: str, hash_key: str, fields: dict[str, Any], now: float, token_prefix: str = ""
) -> tuple[str, dict[str, Any]]:
    """A new secret (API token, confirmation link) and the row that stores it: a new id,
    `fields`, the secret's digest under `hash_key` (never the secret) and `created_at`."""
    token = token_prefix + secrets.token_urlsafe(32)
    row = {"id": id_prefix + uuid.uuid4().hex[:16], **fields, hash_key: digest(token)}
    row["created_at"] = now
    return token, row


def bearer(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    if not authorization:
        return None
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    return given


def grants(scopes: frozenset[str], scope: str) -> bool:
    return "admin" in scopes or scope in scopes


@dataclass(frozen=True)
class Known:
    id: str
    name: str
    scopes: frozenset[str]
    hash: str


class Auth:
    """The bootstrap token and the stored tokens; answers "which scopes has this request"."""

    def __init__(
        self,
        bootstrap: str,
        store: Callable[[], Store | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bootstrap = digest(bootstrap) if bootstrap else None
        self._store = store or (lambda: None)
        self._clock = clock
        self._known: list[Known] = []
        self._loaded_at: float | None = None

    # ------------------------------------------------------------------ checking
    def _tokens(self) -> list[Known]:
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= REFRESH_S:
            self.reload()
            self._loaded_at = now
        return self._known

    def reload(self) -> None:
        store = self._store()
        if store is None:
            return
        self._known = [
            Known(t["id"], t["name"], frozenset(t["scopes"]), t["hash"]) for t in store.tokens()
        ]
        self._loaded_at = self._clock()

    def scopes(self, authorization: str | None) -> frozenset[str] | None:
        """The scopes the request's bearer token holds; None when it bears no known token."""
        given = bearer(authorization)
        return None if given is None else self._scopes_of(digest(given))

    def _scopes_of(self, token_hash: str) -> frozenset[str] | None:
        """The scopes of the known token whose SHA-256 is `token_hash` (None: not known)."""
        h = token_hash.encode()
        found: frozenset[str] | None = None
        if self._bootstrap is not None and hmac.compare_digest(h, self._bootstrap.encode()):
            found = frozenset({"admin"})
        for k in self._tokens():  # every one, matched or not: the same time either way
            if hmac.compare_digest(h, k.hash.encode()) and found is None:
                found = k.scopes
        return found

    def holds(self, token_hash: str, scope: str) -> bool:
        """Whether the token whose SHA-256 is `token_hash` is still known (the bootstrap
        token, or a stored one not revoked) and grants `scope`: an admin page session
        lives only as long as the token it was opened with."""
        found = self._scopes_of(token_hash)
        return found is not None and grants(found, scope)

    def allows(self, authorization: str | None, scope: str) -> bool:
        given = bearer(authorization)
        return given is not None and self.holds(digest(given), scope)

    def require(self, authorization: str | None, scope: str) -> None:
        """Raise the contract's 401/403 unless the request holds `scope`."""
        if bearer(authorization) is None:
            if self._bootstrap is None and not self._tokens():
                raise ApiError(
                    403,
                    "forbidden",
                    "no operator token is configured on this server (set OUTAGEWATCH_TOKEN)",
                )
            raise ApiError(
                401,
                "unauthorized",
                f"this endpoint needs a token with the {scope!r} scope: "
                "Authorization: Bearer <token>",
                {"WWW-Authenticate": "Bearer"},
            )
        held = self.scopes(authorization)
        if held is None:
            raise ApiError(403, "forbidden", "the bearer token is not known to this server")
        if not grants(held, scope):
            raise ApiError(
                403,
                "forbidden",
                f"the token's scopes ({', '.join(sorted(held))}) do not include {scope!r}",
            )

    def dependency(self, scope: Scope) -> Callable[..., None]:
        """A FastAPI dependency requiring `scope` (and naming it in the OpenAPI document)."""

        def check(
            request: Request,
            _: Any = Security(BEARER, scopes=[scope]),  # noqa: B008  # names it in /openapi.json
        ) -> None:
            self.require(request.headers.get("authorization"), scope)

        check.__name__ = f"needs_{scope}"
        return check

    # ------------------------------------------------------------------ managing
    def create(self, body: Any, now: float) -> dict[str, Any]:
        """Make a token from `{"name", "scopes"}`: the stored row, and the token (once)."""
        name, scopes = _check_body(body)
        store = self._store()
        if store is None:
            raise ApiError(503, "unavailable", "the store is not open")
        fields = {"name": name, "scopes": scopes}
        token, row = secret_row("tok_", "hash", fields, now, TOKEN_PREFIX)
        store.add_token(row)
        self.reload()
        return {**public(row), "token": token}

    def list(self) -> list[dict[str, Any]]:
        store = self._store()
        return [] if store is None else [public(t) for t in store.tokens()]

    def revoke(self, token_id: str) -> bool:
        store = self._store()
        gone = store is not None and store.delete_token(token_id)
        self.reload()
        return gone


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the API shows of a stored token: never its hash."""
    return {
        "id": row["id"],
        "name": row["name"],
        "scopes": list(row["scopes"]),
        "created_at": row["created_at"],
    }


def _check_body(body: Any) -> tuple[str, list[str]]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"name", "scopes"})
    if unknown:
        raise ApiError(422, "invalid_body", f"{unknown[0]}: unknown field")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ApiError(
            422, "invalid_body", f"name: a non-empty string of at most {MAX_NAME} characters"
        )
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ApiError(422, "invalid_body", f"scopes: a non-empty list of {', '.join(SCOPES)}")
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise ApiError(422, "invalid_body", f"scopes: {bad[0]!r} is not one of {', '.join(SCOPES)}")
    return name.strip(), sorted(set(scopes), key=SCOPES.index)


def document_scopes(app: FastAPI) -> None:
    """State every operation's scope in its OpenAPI description: the scope in its `bearer`
    security requirement (`Auth.dependency`), or that it is public."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = make()
        for path, ops in doc.get("paths", {}).items():
            for op in ops.values():
                needed = [s for req in op.get("security") or () for s in req.get("bearer", ())]
                if needed:
                    line = f"Scope: `{needed[0]}` (`admin` holds every scope)."
                elif path == "/api/v1/reports":
                    line = (
                        "Scope: public, rate-limited per address; a token with the `ingest` "
                        "scope (a partner forwarding reports) is not rate-limited."
                    )
                else:
                    line = "Scope: public (no token)."
                op["description"] = f"{op.get('description', '')}\n\n{line}".strip()
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

"""Route decorators of the admin-scope JSON API (web/operations.py, web/catalog_api.py):
the token check and the error answers each of those routes documents, said once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from outagewatch.web import schemas
from outagewatch.web.auth import Auth

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class AdminRoutes:
    def __init__(self, r: APIRouter, auth: Auth) -> None:
        self.r = r
        self.admin = [Depends(auth.dependency("admin"))]
        self.err: dict[int | str, dict[str, Any]] = {
            c: {"model": schemas.Error} for c in (401, 403, 404, 422, 503)
        }

    def create(self, path: str, model: Any, body: dict[str, Any], summary: str) -> Decorator:
        """POST `path` with a JSON `body` (its schema), answered 201 with `model`."""
        return self.r.post(
            path,
            status_code=201,
            response_model=model,
            responses=self.err,
            dependencies=self.admin,
            openapi_extra=schemas.json_body(body),
            summary=summary,
        )

    def delete(self, path: str, summary: str) -> Decorator:
        """DELETE `path`, answered 204."""
        return self.r.delete(
            path, status_code=204, responses=self.err, dependencies=self.admin, summary=summary
        )

"""The catalog as data (docs/contract.md §8): edit services over HTTP, effective without a restart.

    PUT    /api/v1/services/{id}   admin   a §1 service table as JSON: 201 created, 200 replaced
    DELETE /api/v1/services/{id}   admin   204; its history is kept
    GET    /api/v1/catalog         admin   the whole catalog as TOML (application/toml)

A service is checked by the same loader as the TOML file (`catalog.with_service`), so a bad
one is a 422 whose message is the loader's, naming the service and the key. The changed
catalog is stored (the next start without `--catalog` uses it) and handed to the running
server (`Host.set_catalog`); other API nodes take it from the shared store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outagewatch.catalog import SERVICE_ID, catalog_doc, with_service, without_service
from outagewatch.errors import CatalogError
from outagewatch.web.api import json_response
from outagewatch.web.auth import Auth
from outagewatch.web.ingest import ApiError
from outagewatch.web.routes import AdminRoutes

if TYPE_CHECKING:
    from outagewatch.web.host import Host

SERVICE_BODY: dict[str, Any] = {
    "type": "object",
    "description": "a §1 service table as JSON (name, aliases, group, depends_on, problems, "
    "metrics, probes, status_page)",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "aliases": {"type": "array", "items": {"type": "string"}},
        "group": {"type": "string"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "problems": {"type": "array", "items": {"type": "string"}},
        "metrics": {"type": "object", "additionalProperties": {"type": "string"}},
        "probes": {"type": "array", "items": {"type": "object"}},
        "status_page": {"type": "object"},
    },
}


def checked_id(service_id: str) -> str:
    if not SERVICE_ID.fullmatch(service_id):
        raise ApiError(422, "invalid_catalog", f"{service_id!r}: use lower-case [a-z0-9][a-z0-9-]*")
    return service_id


class CatalogEdits:
    """Adding, replacing and removing services, one edit at a time (each starts from the
    one before): what the API and the admin page both call."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.lock = asyncio.Lock()

    async def put(self, service_id: str, body: Any, where: str) -> tuple[dict[str, Any], bool]:
        """Add or replace a service from a §1 table: (the stored service, created?).
        ApiError 422 with the loader's message for a bad one."""
        sid = checked_id(service_id)
        host = self.host
        async with self.lock:
            if host.live is None:
                raise ApiError(503, "unavailable", "the server is starting or stopping")
            existed = sid in host.catalog.services
            try:
                catalog = with_service(host.catalog, sid, body, where)
            except CatalogError as exc:
                raise ApiError(422, "invalid_catalog", str(exc)) from None
            await host.set_catalog(catalog)
        return {"id": sid, **catalog_doc(catalog)["services"][sid]}, not existed

    async def delete(self, service_id: str) -> None:
        host = self.host
        async with self.lock:
            if host.live is None:
                raise ApiError(503, "unavailable", "the server is starting or stopping")
            if service_id not in host.catalog.services:
                raise ApiError(404, "not_found", f"no service {service_id!r} in the catalog")
            try:
                path = f"DELETE /api/v1/services/{service_id}"
                catalog = without_service(host.catalog, service_id, path)
            except CatalogError as exc:
                raise ApiError(422, "invalid_catalog", str(exc)) from None
            await host.set_catalog(catalog)


def build_router(host: Host, auth: Auth, edits: CatalogEdits | None = None) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["catalog"])
    routes = AdminRoutes(r, auth)
    admin, err = routes.admin, routes.err
    edit = edits or CatalogEdits(host)

    @r.put(
        "/services/{service_id}",
        responses={**err, 201: {"description": "created"}},
        dependencies=admin,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SERVICE_BODY}},
            }
        },
        summary="Add or replace a service (effective at once)",
    )
    async def put_service(request: Request, service_id: str) -> Response:
        sid = checked_id(service_id)
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(422, "invalid_body", "the body is not valid JSON") from None
        doc, created = await edit.put(sid, body, f"PUT /api/v1/services/{sid}")
        return json_response(doc, 201 if created else 200)

    @routes.delete("/services/{service_id}", "Remove a service (its history is kept)")
    async def delete_service(service_id: str) -> Response:
        await edit.delete(service_id)
        return Response(status_code=204)

    @r.get(
        "/catalog",
        response_class=Response,
        responses={**err, 200: {"content": {"application/toml": {"schema": {"type": "string"}}}}},
        dependencies=admin,
        summary="The whole catalog as TOML",
    )
    async def get_catalog() -> Response:
        # Data, never a page: a browser must not guess it is HTML (names may hold markup).
        headers = {"X-Content-Type-Options": "nosniff"}
        return Response(host.catalog.source, media_type="application/toml", headers=headers)

    return r

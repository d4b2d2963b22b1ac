"""Operating a live server (docs/contract.md §8): tokens, incident updates, maintenance windows.

    POST   /api/v1/tokens                   admin   201 {"id", "name", "scopes", "token"}
    GET    /api/v1/tokens                   admin   [{"id", "name", "scopes", "created_at"}]
    DELETE /api/v1/tokens/{id}              admin   204
    POST   /api/v1/incidents/{id}/updates   admin   201 {"at", "status", "text"}
    POST   /api/v1/maintenance              admin   201 {"id", "service", "starts_at", ...}
    GET    /api/v1/maintenance              public  ongoing and upcoming, soonest first
    DELETE /api/v1/maintenance/{id}         admin   204

An update never changes detection: it is stored beside the incident and shown with it
(`updates` in its JSON, the pages, the feeds) and sent to the subscribers as an `update`
alert. Maintenance windows are handed to the pipeline as data (`Engine.set_maintenance`).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outagewatch.events import iso, parse_ts
from outagewatch.web import schemas
from outagewatch.web.api import json_response
from outagewatch.web.auth import Auth
from outagewatch.web.ingest import ApiError
from outagewatch.web.routes import AdminRoutes

if TYPE_CHECKING:
    from outagewatch.web.host import Host
    from outagewatch.web.live import Live

MAX_TEXT = 5000
MAX_TITLE = 200
MAX_WINDOW_S = 31 * 86_400  # a window longer than a month is a mistake, not maintenance


def window_doc(w: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": w["id"],
        "service": w["service"],
        "starts_at": iso(w["starts_at"]),
        "ends_at": iso(w["ends_at"]),
        "title": w["title"],
    }


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ApiError(422, "invalid_body", "the body is not valid JSON") from None


def _object(body: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(
            422, "invalid_body", f"{unknown[0]}: unknown field; expected {', '.join(fields)}"
        )
    for f in fields:
        if f not in body:
            raise ApiError(422, "invalid_body", f"{f}: missing")
    return body


def _text(body: Mapping[str, Any], field: str, most: int) -> str:
    v = body[field]
    if not isinstance(v, str) or not v.strip() or len(v) > most:
        raise ApiError(
            422, "invalid_body", f"{field}: a non-empty string of at most {most} characters"
        )
    return v.strip()


def _time(body: Mapping[str, Any], field: str) -> float:
    v = body[field]
    ts: float | None = None
    if isinstance(v, bool):
        ts = None
    elif isinstance(v, int | float):
        ts = float(v)
    elif isinstance(v, str):
        ts = parse_ts(v)
    if ts is None or not math.isfinite(ts) or not 0 <= ts < 253_402_300_800:
        raise ApiError(422, "invalid_body", f"{field}: {v!r} is not an RFC 3339 time")
    return ts


def _store(host: Host) -> Any:
    if host.reader is None:
        raise ApiError(503, "unavailable", "the server is starting or stopping")
    return host.reader


async def add_update(host: Host, live: Live, incident_id: str, body: Any) -> dict[str, Any]:
    """Check and store an operator's update `{"status", "text"}` on an incident, send it to
    the subscribers and tell the pages: the update (what POST .../updates and the admin
    page both do). ApiError 404/422 names what is wrong."""
    body = _object(body, ("status", "text"))
    status = body["status"]
    if status not in schemas.UPDATE_STATUSES:
        raise ApiError(
            422,
            "invalid_body",
            f"status: {status!r} is not one of {', '.join(schemas.UPDATE_STATUSES)}",
        )
    text = _text(body, "text", MAX_TEXT)
    doc = live.incident(incident_id)
    if doc is None:
        raise ApiError(404, "not_found", f"no incident {incident_id!r}")
    at = host.clock()
    await asyncio.to_thread(_store(host).add_update, incident_id, at, status, text)
    update = {"at": iso(at), "status": status, "text": text}
    doc = live.incident(incident_id) or doc
    if host.alerter is not None:
        await host.alerter.update(doc, update, len(doc.get("updates") or []))
    await live.changes.bump()
    return update


async def add_window(host: Host, live: Live, body: Any) -> dict[str, Any]:
    """Check and store a maintenance window `{"service", "starts_at", "ends_at", "title"}`
    and hand it to the pipeline and the pages: the window's document (what POST
    /maintenance and the admin page both do). ApiError 422 names what is wrong."""
    body = _object(body, ("service", "starts_at", "ends_at", "title"))
    name = body["service"]
    if not isinstance(name, str):
        raise ApiError(422, "invalid_body", "service: a service id or alias, or a group id")
    svc = live.service_or_none(name)
    groups = {s.group for s in live.catalog.services.values() if s.group}
    if svc is not None:
        target = svc.id
    elif name in groups:
        target = name
    else:
        raise ApiError(422, "invalid_body", f"service: {name!r} is no service or group")
    start, end = _time(body, "starts_at"), _time(body, "ends_at")
    if end <= start:
        raise ApiError(422, "invalid_body", "ends_at: must be after starts_at")
    if end - start > MAX_WINDOW_S:
        raise ApiError(422, "invalid_body", "ends_at: a window lasts at most 31 days")
    now = host.clock()
    if end <= now:
        raise ApiError(422, "invalid_body", "ends_at: the window is already over")
    row = {
        "id": "mw_" + uuid.uuid4().hex[:12],
        "service": target,
        "starts_at": start,
        "ends_at": end,
        "title": _text(body, "title", MAX_TITLE),
        "created_at": now,
    }
    await asyncio.to_thread(_store(host).add_maintenance, row)
    await host.maintenance_changed()
    return window_doc(row)


def build_router(host: Host, auth: Auth) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["operating"])
    routes = AdminRoutes(r, auth)
    admin, err = routes.admin, routes.err

    def store() -> Any:
        return _store(host)

    # ------------------------------------------------------------------ tokens
    @routes.create(
        "/tokens",
        schemas.TokenCreated,
        schemas.TOKEN_BODY,
        "Make a named token with scopes (the token is shown once)",
    )
    async def create_token(request: Request) -> Response:
        body = await _json(request)
        doc = await asyncio.to_thread(auth.create, body, host.clock())
        return json_response(doc, 201)

    @r.get(
        "/tokens",
        response_model=list[schemas.TokenInfo],
        responses=err,
        dependencies=admin,
        summary="The tokens made with POST /tokens (never the tokens themselves)",
    )
    async def list_tokens() -> Response:
        return json_response(await asyncio.to_thread(auth.list))

    @routes.delete("/tokens/{token_id}", "Revoke a token")
    async def revoke_token(token_id: str) -> Response:
        if not await asyncio.to_thread(auth.revoke, token_id):
            raise ApiError(404, "not_found", f"no token {token_id!r}")
        return Response(status_code=204)

    # ------------------------------------------------------------------ updates
    @routes.create(
        "/incidents/{incident_id}/updates",
        schemas.Update,
        schemas.UPDATE_BODY,
        "Post an operator's update on an incident (sent to its subscribers)",
    )
    async def post_update(request: Request, incident_id: str) -> Response:
        update = await add_update(host, request.app.state.live, incident_id, await _json(request))
        return json_response(update, 201)

    # ------------------------------------------------------------------ maintenance
    @routes.create(
        "/maintenance",
        schemas.Window,
        schemas.WINDOW_BODY,
        "Schedule maintenance of a service or a group",
    )
    async def post_maintenance(request: Request) -> Response:
        window = await add_window(host, request.app.state.live, await _json(request))
        return json_response(window, 201)

    @r.get(
        "/maintenance",
        response_model=list[schemas.Window],
        responses=err,
        summary="Maintenance windows going on or to come, soonest first (public)",
    )
    async def list_maintenance() -> Response:
        rows = await asyncio.to_thread(store().maintenance, host.clock())
        return json_response([window_doc(w) for w in rows])

    @routes.delete("/maintenance/{window_id}", "Cancel a maintenance window")
    async def delete_maintenance(window_id: str) -> Response:
        if not await asyncio.to_thread(store().delete_maintenance, window_id):
            raise ApiError(404, "not_found", f"no maintenance window {window_id!r}")
        await host.maintenance_changed()
        return Response(status_code=204)

    return r

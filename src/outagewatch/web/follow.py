"""Visitors follow one service: its Atom feed and an SVG status badge.

    GET /feeds/services/{id}.atom   the service's incidents and the operator's updates
    GET /badges/{id}.svg            "X: outage", coloured by status, for READMEs and wikis

Both are public and take a service id or alias; an unknown one is a 404 in the JSON error
shape. The badge is small and cacheable (`Cache-Control`, `ETag`), so a README that
embeds it costs the server little.
"""

from __future__ import annotations

import hashlib
from html import escape  # &, <, >, " and ': safe in XML text and attributes
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outagewatch.catalog import Service
from outagewatch.incidents.severity import public
from outagewatch.store.base import IncidentQuery
from outagewatch.web import schemas
from outagewatch.web.api import atom_feed, live_of
from outagewatch.web.ingest import ApiError
from outagewatch.web.live import Live

COLOURS = {
    "ok": "#1f9d55",
    "problems": "#d98a00",
    "outage": "#d6342c",
    "maintenance": "#2f6fde",
}
OTHER = "#6b7280"  # any status added later (e.g. unknown)
BADGE_MAX_AGE_S = 60
FEED_ITEMS = 50


def _service(live: Live, name: str) -> Service:
    svc = live.service_or_none(name)
    if svc is None:
        raise ApiError(404, "not_found", f"no service {name!r} in the catalog")
    return svc


def _width(text: str) -> int:
    """Roughly the width in pixels of `text` in 11 px Verdana (as shields.io badges)."""
    wide = sum(1 for ch in text if ch.isupper() or ch in "mwMW@%")
    return round(6.2 * len(text) + 1.6 * wide) + 10


def badge(label: str, value: str, colour: str) -> bytes:
    """A flat two-part SVG badge; `label` and `value` are escaped."""
    label = label[:60]
    lw, vw = _width(label), _width(value)
    w = lw + vw
    lab, val = escape(label), escape(value)
    title = escape(f"{label}: {value}")
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{lw / 2:.1f}" y="14">{lab}</text>'
        f'<text x="{lw + vw / 2:.1f}" y="14">{val}</text></g></svg>'
    )
    return svg.encode()


def build_router() -> APIRouter:
    r = APIRouter(tags=["follow"])
    err: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Error}}

    @r.get(
        "/feeds/services/{service_id}.atom",
        response_class=Response,
        responses={
            **err,
            200: {"content": {"application/atom+xml": {"schema": {"type": "string"}}}},
        },
        summary="One service's incidents and the operator's updates (Atom)",
    )
    async def service_feed(request: Request, service_id: str) -> Response:
        live = live_of(request)
        svc = _service(live, service_id)
        query = IncidentQuery(service=svc.id, limit=FEED_ITEMS)
        docs = [d for d in live.incidents(query) if public(d)]
        body = atom_feed(
            docs,
            live.catalog.services,
            title=f"outagewatch: {svc.name}",
            path=f"/feeds/services/{quote(svc.id)}.atom",
        )
        return Response(body, media_type="application/atom+xml")

    @r.get(
        "/badges/{service_id}.svg",
        response_class=Response,
        responses={
            **err,
            200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}},
            304: {"description": "not modified (If-None-Match)"},
        },
        summary="An SVG badge naming the service and its status",
    )
    async def service_badge(request: Request, service_id: str) -> Response:
        live = live_of(request)
        svc = _service(live, service_id)
        status = live.status(svc, live.public_ongoing().get(svc.id))
        body = badge(svc.name, status, COLOURS.get(status, OTHER))
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"Cache-Control": f"public, max-age={BADGE_MAX_AGE_S}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="image/svg+xml", headers=headers)

    return r

"""The JSON API of docs/contract.md §6, plus /healthz, /metrics and the Atom feed."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from outagewatch.events import parse_ts
from outagewatch.incidents.severity import public
from outagewatch.store.base import IncidentQuery
from outagewatch.web import schemas
from outagewatch.web.health import StoreHealth
from outagewatch.web.ingest import ApiError, Ingest, client_address
from outagewatch.web.live import Live

JSON = "application/json"
MAX_HISTORY_DAYS = 400  # GET /services/{id}/history?days=N (docs/contract.md §8)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


def live_of(request: Request) -> Live:
    live: Live = request.app.state.live
    return live


# ---------------------------------------------------------------------------- clients
def client_ip(request: Request, trusted: Sequence[str]) -> str | None:
    """The client's address; behind a trusted proxy, the last untrusted X-Forwarded-For hop."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


async def _post(ingest: Ingest, kind: str, request: Request) -> Response:
    peer = request.client.host if request.client else None
    status, body, headers = await ingest.handle(kind, request.headers, peer, request.stream())
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _poster(ingest: Ingest, kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def post(request: Request) -> Response:
        return await _post(ingest, kind, request)

    return post


# ---------------------------------------------------------------------------- routes
def build_router(ingest: Ingest) -> APIRouter:
    """The JSON API. The ingest POSTs are answered by `ingest` (also its fast path)."""
    r = APIRouter()
    operator = Depends(ingest.auth.dependency("ingest"))
    err: dict[int | str, dict[str, Any]] = {
        c: {"model": schemas.Error} for c in (401, 403, 404, 408, 413, 415, 422, 429, 503)
    }

    # The ingest POSTs: (kind, path, item schema, operator only, summary).
    for kind, path, item, scoped, summary in (
        ("report", "/api/v1/reports", schemas.REPORT_ITEM, False,
         "Report a problem with a service (one report or a list)"),
        ("probe", "/api/v1/probes", schemas.PROBE_ITEM, True,
         "Post probe results (a token with the ingest scope)"),
        ("metric", "/api/v1/metrics", schemas.METRIC_ITEM, True,
         "Post operator telemetry (a token with the ingest scope)"),
    ):  # fmt: skip
        r.add_api_route(
            path,
            _poster(ingest, kind),
            methods=["POST"],
            name=f"post_{kind}s",
            status_code=202,
            response_model=schemas.Accepted,
            responses=err,
            openapi_extra=schemas.body_schema(item),
            dependencies=[operator] if scoped else None,
            summary=summary,
        )

    @r.get(
        "/api/v1/probes/config",
        response_model=list[schemas.ProbeConfig],
        responses=err,
        dependencies=[operator],
        summary="The probes remote agents run (scope: ingest)",
    )
    async def get_probe_config(request: Request) -> Response:
        from outagewatch.probes.agent import probe_config

        return json_response(probe_config(live_of(request).catalog))

    @r.get("/api/v1/services", response_model=list[schemas.ServiceSummary], responses=err)
    async def get_services(request: Request) -> Response:
        # Every service (a large catalog: ~1 MB of JSON), built off the event loop.
        live = live_of(request)
        body = await run_in_threadpool(lambda: orjson.dumps(live.services()))
        return Response(body, media_type=JSON)

    @r.get("/api/v1/services/{service_id}", response_model=schemas.ServiceDetail, responses=err)
    async def get_service(request: Request, service_id: str) -> Response:
        live = live_of(request)
        svc = live.service_or_none(service_id)
        if svc is None:
            raise ApiError(404, "not_found", f"no service {service_id!r} in the catalog")
        return json_response(live.service(svc))

    @r.get(
        "/api/v1/services/{service_id}/history",
        response_model=schemas.ServiceHistory,
        responses=err,
        summary="One row per UTC day: worst status, incidents, minutes of outage, reports",
    )
    async def get_service_history(
        request: Request,
        service_id: str,
        days: int = Query(90, ge=1, le=MAX_HISTORY_DAYS, description="days up to today"),
    ) -> Response:
        live = live_of(request)
        svc = live.service_or_none(service_id)
        if svc is None:
            raise ApiError(404, "not_found", f"no service {service_id!r} in the catalog")
        return json_response({"id": svc.id, "days": live.history(svc.id, days)})

    @r.get("/api/v1/incidents", response_model=list[schemas.Incident], responses=err)
    async def get_incidents(
        request: Request,
        service: str | None = Query(None, description="service id or alias"),
        since: str | None = Query(None, description="incidents still going on at or after"),
        until: str | None = Query(None, description="incidents started at or before"),
        status: str | None = Query(None, description="ongoing or resolved"),
        limit: int | None = Query(
            None, ge=1, le=10_000, description="at most this many, the newest (default: all)"
        ),
    ) -> Response:
        live = live_of(request)
        sid = None
        if service is not None:
            svc = live.service_or_none(service)
            if svc is None:
                raise ApiError(404, "not_found", f"service: no service {service!r} in the catalog")
            sid = svc.id
        if status is not None and status not in ("ongoing", "resolved"):
            raise ApiError(422, "invalid_query", f"status: {status!r} is not ongoing or resolved")
        query = IncidentQuery(
            service=sid,
            since=_time(since, "since"),
            until=_time(until, "until"),
            status=status,
            limit=limit,
        )
        docs = live.incidents(query)
        return json_response(docs)

    @r.get("/api/v1/incidents/{incident_id}", response_model=schemas.Incident, responses=err)
    async def get_incident(request: Request, incident_id: str) -> Response:
        doc = live_of(request).incident(incident_id)
        if doc is None:
            raise ApiError(404, "not_found", f"no incident {incident_id!r}")
        return json_response(doc)

    @r.get("/healthz", response_model=schemas.Health)
    async def healthz(request: Request) -> Response:
        live = live_of(request)
        health: StoreHealth | None = getattr(request.app.state, "store_health", None)
        problem = await health.problem() if health is not None else None
        if problem is not None:  # acknowledging reports now would be a lie
            return error_response(503, "store_unwritable", problem, {"Retry-After": "30"})
        depth = getattr(live.bus, "depth", 0)
        wm = live.engine.clock_label() if live.engine is not None else None
        return json_response({"status": "ok", "watermark": wm, "queue": depth})

    @r.get("/feeds/incidents.atom", response_class=Response, responses=err)
    async def feed(request: Request) -> Response:
        live = live_of(request)
        docs = [d for d in live.incidents(IncidentQuery(limit=50)) if public(d)]
        return Response(atom_feed(docs, live.catalog.services), media_type="application/atom+xml")

    return r


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        ts: float | None = float(value)
    except ValueError:
        ts = parse_ts(value)
    if ts is None or not math.isfinite(ts):  # "nan", "inf" and "1e999" are no times
        raise ApiError(
            422, "invalid_query", f"{name}: {value!r} is not an RFC 3339 time or epoch seconds"
        )
    return ts


# Characters XML 1.0 cannot carry at all (escaping does not help): C0 controls but tab, LF
# and CR, lone surrogates, U+FFFE and U+FFFF. Removed from every text the feed holds.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """`value` as text an XML document can hold (ElementTree escapes <, & and quotes)."""
    return _NOT_XML.sub("", str(value))


def atom_feed(
    docs: list[dict[str, Any]],
    services: Any,
    *,
    title: str = "outagewatch: incidents",
    path: str = "/feeds/incidents.atom",
) -> bytes:
    """An Atom feed of the incidents and the operator's updates. Links are relative to the
    server's root (readers resolve them against the feed's own address), never built from
    the request's Host header, which any client chooses; ids are URNs, the same whatever
    address the feed came from."""
    ns = "http://www.w3.org/2005/Atom"
    ET.register_namespace("", ns)
    feed = ET.Element(f"{{{ns}}}feed")
    ET.SubElement(feed, f"{{{ns}}}title").text = xml_text(title)
    ET.SubElement(feed, f"{{{ns}}}id").text = "urn:outagewatch:feeds:" + quote(
        path.removeprefix("/feeds/").removesuffix(".atom"), safe="/"
    )
    ET.SubElement(feed, f"{{{ns}}}link", rel="self", href=path)
    updated = max((_updated(d) for d in docs), default="1970-01-01T00:00:00Z")
    ET.SubElement(feed, f"{{{ns}}}updated").text = updated
    author = ET.SubElement(feed, f"{{{ns}}}author")
    ET.SubElement(author, f"{{{ns}}}name").text = "outagewatch"
    for d in docs:
        svc = services.get(d["service"])
        name = xml_text(svc.name if svc is not None else d["service"])
        iid = xml_text(d["id"])
        e = ET.SubElement(feed, f"{{{ns}}}entry")
        state = "ongoing" if d["status"] == "ongoing" else "resolved"
        ET.SubElement(
            e, f"{{{ns}}}title"
        ).text = f"{name}: problems since {d['started_at'][11:16]} UTC ({state})"
        ET.SubElement(e, f"{{{ns}}}id").text = f"urn:outagewatch:incidents:{quote(iid)}"
        ET.SubElement(e, f"{{{ns}}}link", href=f"/incidents/{quote(iid, safe='')}")
        ET.SubElement(e, f"{{{ns}}}updated").text = _updated(d)
        ET.SubElement(e, f"{{{ns}}}published").text = d["detected_at"]
        countries = ", ".join(c["country"] for c in d["countries"][:5]) or "-"
        cause = d["causes"][0]["kind"] if d.get("causes") else "not known yet"
        ET.SubElement(e, f"{{{ns}}}summary").text = xml_text(
            f"{d['total_reports']:,} reports, peak {d['peak_reports_per_minute']}/min "
            f"(usual {d['baseline_reports_per_minute']}/min); countries: {countries}; "
            f"likely cause: {cause}"
        )
        for u in d.get("updates") or ():  # the operator's updates, oldest first
            e = ET.SubElement(feed, f"{{{ns}}}entry")
            ET.SubElement(e, f"{{{ns}}}title").text = f"{name}: {xml_text(u['status'])} (update)"
            ET.SubElement(
                e, f"{{{ns}}}id"
            ).text = f"urn:outagewatch:incidents:{quote(iid)}:update:{quote(str(u['at']))}"
            ET.SubElement(e, f"{{{ns}}}link", href=f"/incidents/{quote(iid, safe='')}")
            ET.SubElement(e, f"{{{ns}}}updated").text = u["at"]
            ET.SubElement(e, f"{{{ns}}}published").text = u["at"]
            ET.SubElement(e, f"{{{ns}}}summary").text = xml_text(u["text"])
    out: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return out


def _updated(d: dict[str, Any]) -> str:
    times = [str(d["ended_at"] or d["peak_at"] or d["detected_at"])]
    times += [str(u["at"]) for u in d.get("updates") or ()]
    return max(times)


__all__ = ["build_router", "client_ip", "error_response"]

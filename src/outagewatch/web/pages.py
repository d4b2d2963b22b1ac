"""Server-rendered pages: home, service, incident, the no-JS report form and live updates.

Every page reads through `Live` (the same numbers as the JSON API) and renders with Jinja2,
autoescaping everything. Charts, sparklines and the outage map are inline SVG computed
here, so the pages work without JavaScript; `static/live.js` only adds instant search and
swaps `<main>` when the server announces a change on `/events` (SSE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import jinja2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from outagewatch import __version__
from outagewatch.errors import BusError
from outagewatch.events import epoch_of
from outagewatch.geo import COUNTRIES
from outagewatch.history.view import history_summary
from outagewatch.incidents.severity import public, severity
from outagewatch.store.base import IncidentQuery
from outagewatch.web.api import client_ip
from outagewatch.web.live import Live
from outagewatch.web.probeviews import vantage_rows

if TYPE_CHECKING:
    from outagewatch.settings import Settings

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
VISITOR_COOKIE = "ow_visitor"
SPARK_MINUTES = 180
CHART_MINUTES = 1440
HISTORY_DAYS = 90  # the service page's bar of days
MAP_RECENT_MINUTES = 120
HEARTBEAT_S = 15.0
MAX_FORM_BYTES = 4096
PAGE_SIZE = 60  # services a home page shows; more are on the next pages (or searched)
HOME_CACHE_S = 2.0  # a rendered home page is reused this long (same query, page, incidents)
HOME_CACHE_ENTRIES = 256
STATUS_ORDER = {"outage": 0, "problems": 1, "unknown": 2, "maintenance": 3, "ok": 4}
STATUS_LABEL = {
    "ok": "No problems",
    "problems": "Problems",
    "outage": "Outage",
    "unknown": "Unknown",
    "maintenance": "Maintenance",
}


# ---------------------------------------------------------------------------- map data
@dataclass(frozen=True)
class Country:
    id: str
    name: str
    d: str


@dataclass(frozen=True)
class WorldMap:
    view_box: str
    countries: tuple[Country, ...]
    names: Mapping[str, str]


@lru_cache(maxsize=1)
def world_map() -> WorldMap:
    doc = json.loads((STATIC / "world-map.json").read_text("utf-8"))
    countries = tuple(Country(c["id"], c["name"], c["d"]) for c in doc["countries"])
    names = {c.id: c.name for c in countries if len(c.id) == 2}
    return WorldMap(str(doc["viewBox"]), countries, names)


def country_name(code: str) -> str:
    return world_map().names.get(code, code)


@dataclass(frozen=True)
class MapCountry:
    id: str
    name: str
    d: str
    reports: int
    share: float
    step: int  # 0 = no reports, 1..5 = share class


@dataclass(frozen=True)
class MapView:
    view_box: str
    countries: list[MapCountry]
    total: int
    basis: str  # what the shares are of, in words


def share_step(share: float) -> int:
    """Colour class of a country's share of the reports: 0 (none) to 5 (half or more)."""
    if share <= 0:
        return 0
    for step, upper in enumerate((0.02, 0.05, 0.15, 0.3), start=1):
        if share < upper:
            return step
    return 5


def map_view(counts: Mapping[str, int], basis: str) -> MapView:
    wm = world_map()
    total = sum(counts.values())
    out = []
    for c in wm.countries:
        n = int(counts.get(c.id, 0))
        share = n / total if total else 0.0
        out.append(MapCountry(c.id, c.name, c.d, n, share, share_step(share)))
    return MapView(wm.view_box, out, total, basis)


# ---------------------------------------------------------------------------- charts
@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A per-minute chart in a 0..width x 0..height box (y grows downwards)."""

    width: int
    height: int
    reports_path: str  # the area under the reports line
    line_path: str  # the reports line
    band_path: str  # the typical range (baseline band)
    baseline_path: str  # the typical level
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    y_max: float
    reports: list[int]
    first_minute: int
    last_reports: int
    last_x: float
    last_y: float
    total: int
    spans: list[tuple[float, float, str]]  # incident spans: x0, x1, incident id


def band(baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The typical range around a baseline of Poisson-like counts (about 3 sigma)."""
    b = np.nan_to_num(baseline, nan=0.0)
    spread = 3.0 * np.sqrt(np.maximum(b, 0.0))
    return np.maximum(b - spread, 0.0), b + spread + 1.0


def _nice_max(v: float) -> float:
    if v <= 5:
        return 5.0
    mag = 10 ** math.floor(math.log10(v))
    for f in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if f * mag >= v:
            return float(f * mag)
    return float(10 * mag)


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _polyline(xs: np.ndarray, ys: np.ndarray) -> str:
    if len(xs) == 0:
        return ""
    pts = " ".join(f"{_fmt(x)} {_fmt(y)}" for x, y in zip(xs.tolist(), ys.tolist(), strict=True))
    return "M" + pts


def build_chart(
    counts: np.ndarray,
    baseline: np.ndarray,
    first_minute: int,
    *,
    width: int = 1440,
    height: int = 220,
    x_tick_minutes: int = 180,
    spans: Sequence[tuple[int, int | None, str]] = (),
) -> Chart:
    n = len(counts)
    lo, hi = band(baseline)
    has_base = bool(np.isfinite(baseline).any())
    top = float(max(counts.max(initial=0.0), hi.max(initial=0.0) if has_base else 0.0))
    y_max = _nice_max(top)
    xs = np.arange(n, dtype=np.float64) * (width / max(n - 1, 1))

    def y(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = height - np.asarray(v, np.float64) / y_max * height
        return out

    ys = y(counts)
    line = _polyline(xs, ys)
    area = f"{line}L{_fmt(xs[-1])} {height}L0 {height}Z" if n else ""
    band_path = base_path = ""
    if has_base:
        ok = np.isfinite(baseline)
        bx = xs[ok]
        band_path = _polyline(bx, y(hi[ok])) + "L" + _polyline(bx[::-1], y(lo[ok][::-1]))[1:] + "Z"
        base_path = _polyline(bx, y(np.asarray(baseline)[ok]))
    y_ticks = [Tick(height - f * height, _fmt(f * y_max)) for f in (0.25, 0.5, 0.75, 1.0)]
    x_ticks = []
    for k in range(n):
        minute = first_minute + k
        if minute % x_tick_minutes == 0:
            label = dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%H:%M")
            x_ticks.append(Tick(float(xs[k]), label))
    chart_spans = []
    last = first_minute + n - 1
    for m0, m1, iid in spans:
        a = max(m0, first_minute)
        b = min(last if m1 is None else m1, last)
        if b >= a:
            x0 = float(xs[a - first_minute])
            x1 = float(xs[b - first_minute])
            chart_spans.append((x0, max(x1, x0 + 2.0), iid))
    ints = [int(v) for v in counts.tolist()]
    return Chart(
        width=width,
        height=height,
        reports_path=area,
        line_path=line,
        band_path=band_path,
        baseline_path=base_path,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        y_max=y_max,
        reports=ints,
        first_minute=first_minute,
        last_reports=ints[-1] if ints else 0,
        last_x=float(xs[-1]) if n else 0.0,
        last_y=float(ys[-1]) if n else float(height),
        total=sum(ints),
        spans=chart_spans,
    )


@dataclass(frozen=True)
class Spark:
    path: str
    baseline_path: str
    last: int
    total: int


def sparkline(counts: np.ndarray, baseline: np.ndarray, *, bucket: int = 5) -> Spark:
    """A 120x32 sparkline of `counts` summed in `bucket`-minute steps."""
    w, h = 120.0, 32.0
    k = len(counts) // bucket
    c = counts[len(counts) - k * bucket :].reshape(k, bucket).sum(axis=1)
    b = np.nan_to_num(baseline[len(baseline) - k * bucket :], nan=0.0).reshape(k, bucket)
    b = b.sum(axis=1)
    top = max(float(c.max(initial=0.0)), float(b.max(initial=0.0)) * 1.5, 3.0)
    xs = np.arange(k, dtype=np.float64) * (w / max(k - 1, 1))
    path = _polyline(xs, h - 2 - c / top * (h - 4))
    bpath = _polyline(xs, h - 2 - b / top * (h - 4)) if b.any() else ""
    return Spark(path, bpath, int(counts[-1]) if len(counts) else 0, int(counts.sum()))


# ---------------------------------------------------------------------------- helpers
def epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    return epoch_of(ts)


def when(ts: str | float | None) -> str:
    """'2025-03-10 08:31 UTC' for an RFC 3339 time or epoch seconds."""
    if ts is None or ts == "":
        return "-"
    t = epoch(ts) if isinstance(ts, str) else float(ts)
    assert t is not None
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(a: str | None, b: str | None, now: float) -> str:
    t0 = epoch(a)
    if t0 is None:
        return "-"
    t1 = epoch(b) if b else now
    assert t1 is not None
    minutes = max(int((t1 - t0) // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def percent(v: float) -> str:
    if 0 < v < 0.005:
        return "<1%"
    return f"{v * 100:.0f}%"


def detail_items(detail: Any) -> list[tuple[str, str]]:
    """A transition's detail as readable (key, value) pairs: times as UTC, lists joined."""
    if not isinstance(detail, Mapping):
        return [("", str(detail))]

    def show(key: str, v: Any) -> str:
        if key.endswith("_at") and isinstance(v, int | float) and not isinstance(v, bool):
            return when(float(v))
        if isinstance(v, float):
            return _fmt(round(v, 2))
        if isinstance(v, list | tuple):
            return ", ".join(
                show("", x) if not isinstance(x, list | tuple) else " ".join(show("", y) for y in x)
                for x in v
            )
        return "-" if v is None else str(v)

    return [(str(k).replace("_", " "), show(str(k), v)) for k, v in detail.items()]


def visitor_token(secret: bytes, visitor: str) -> str:
    return hmac.new(secret, visitor.encode(), hashlib.sha256).hexdigest()


def preferred_country(accept_language: str) -> str:
    """The region of the first language tag that names one (en-GB -> GB), else US."""
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip()
        bits = tag.replace("_", "-").split("-")
        if len(bits) >= 2 and bits[-1].upper() in COUNTRIES:
            return bits[-1].upper()
    return "US"


def incident_span(doc: Mapping[str, Any]) -> tuple[int, int | None, str]:
    s = epoch(doc["started_at"])
    e = epoch(doc.get("ended_at"))
    assert s is not None
    return int(s // 60), None if e is None else int(e // 60), str(doc["id"])


def breakdown_rows(items: Sequence[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    total = sum(int(i["reports"]) for i in items) or 1
    return [
        {"key": str(i[key]), "reports": int(i["reports"]), "share": int(i["reports"]) / total}
        for i in items
    ]


def rows_of(counts: Mapping[str, int], key: str) -> list[dict[str, Any]]:
    items = [{key: k, "reports": v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return breakdown_rows(items, key)


# ---------------------------------------------------------------------------- the pages
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    env.filters["percent"] = percent
    env.filters["detail_items"] = detail_items
    env.filters["country_name"] = country_name
    env.filters["num"] = lambda v: f"{int(v):,}"
    env.filters["fmt"] = _fmt
    env.filters["urlpart"] = lambda v: quote(str(v), safe="")
    env.globals["STATUS_LABEL"] = STATUS_LABEL
    env.globals["version"] = __version__
    return env


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = environment()
        self.secret = secrets.token_bytes(32)
        self.static_version = _static_version()
        self._home_cache: dict[tuple[str, int, str], tuple[float, str]] = {}
        self._home_lock = threading.Lock()

    # ------------------------------------------------------------ rendering
    def render(
        self,
        request: Request,
        template: str,
        code: int = 200,
        *,
        visitor: str | None = None,
        **ctx: Any,
    ) -> HTMLResponse:
        html = self.render_html(live_of(request), template, **ctx)
        return self.respond(request, html, code, visitor=visitor)

    def render_html(self, live: Live, template: str, **ctx: Any) -> str:
        ctx.setdefault("live_page", False)
        ctx.setdefault("q", "")
        return self.env.get_template(template).render(
            now=when(live.clock()),
            static_version=self.static_version,
            **ctx,
        )

    def respond(
        self, request: Request, html: str, code: int = 200, *, visitor: str | None = None
    ) -> HTMLResponse:
        resp = HTMLResponse(html, status_code=code)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        if visitor is not None and request.cookies.get(VISITOR_COOKIE) != visitor:
            resp.set_cookie(
                VISITOR_COOKIE,
                visitor,
                max_age=365 * 86400,
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
        return resp

    def error(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status, title=title, message=message)

    def no_service(self, request: Request, name: str) -> HTMLResponse:
        return self.error(request, 404, "No such service", f"There is no service “{name}” here.")

    # ------------------------------------------------------------ home
    def home(self, request: Request) -> HTMLResponse:
        """The home page: ongoing incidents, then the services, `PAGE_SIZE` a page (the most
        troubled first), searched by `q` over every service. Rendered in a worker thread
        (build_pages) and kept `HOME_CACHE_S` seconds per (query, page, ongoing incidents),
        so that a large catalog costs neither the event loop nor each reload."""
        live = live_of(request)
        q = request.query_params.get("q", "").strip()[:100]
        page = _page_number(request.query_params.get("page"))
        ongoing = live.public_ongoing()
        key = (q, page, ongoing_fingerprint(ongoing))
        now = time.monotonic()
        with self._home_lock:
            hit = self._home_cache.get(key)
        if hit is not None and now - hit[0] < HOME_CACHE_S:
            return self.respond(request, hit[1])
        html = self._home_html(live, q, page, ongoing)
        with self._home_lock:
            if len(self._home_cache) >= HOME_CACHE_ENTRIES:
                self._home_cache.clear()
            self._home_cache[key] = (now, html)
        return self.respond(request, html)

    def _home_html(self, live: Live, q: str, page: int, ongoing: dict[str, dict[str, Any]]) -> str:
        # Up to the last whole minute: the current one is still filling and would dip.
        m1 = int(live.clock() // 60)
        services = live.services()
        needle = q.lower()
        matched = []
        for s in services:
            search = " ".join([s["id"], s["name"], *s["aliases"]]).lower()
            if not needle or needle in search:
                matched.append((STATUS_ORDER.get(s["status"], 3), s["name"].lower(), search, s))
        matched.sort(key=lambda m: (m[0], m[1]))
        pages = max(1, math.ceil(len(matched) / PAGE_SIZE))
        page = min(page, pages)
        first = (page - 1) * PAGE_SIZE
        cards = []
        for _, _, search, s in matched[first : first + PAGE_SIZE]:
            counts, baseline = live.series(s["id"], m1 - SPARK_MINUTES, m1)
            cards.append(
                {
                    **s,
                    "spark": sparkline(counts, baseline),
                    "search": search,
                    "doc": ongoing.get(s["id"]),
                }
            )
        incidents = sorted(ongoing.values(), key=lambda d: d["started_at"], reverse=True)
        names = {d["service"]: live.catalog.services[d["service"]].name for d in incidents}
        return self.render_html(
            live,
            "home.html",
            q=q,
            cards=cards,
            total=len(services),
            matched=len(matched),
            page=page,
            pages=pages,
            first=first,
            everything=len(cards) == len(services),
            ongoing=incidents,
            names=names,
            live_page=bool(incidents),
            clock=live.clock(),
            duration=duration,
            windows=live.upcoming(),
        )

    # ------------------------------------------------------------ service
    def service(self, request: Request, name: str) -> HTMLResponse:
        live = live_of(request)
        svc = live.service_or_none(name)
        if svc is None:
            return self.no_service(request, name)
        visitor = request.cookies.get(VISITOR_COOKIE) or secrets.token_urlsafe(18)
        now = live.clock()
        m1 = int(now // 60) + 1
        counts, baseline = live.series(svc.id, m1 - CHART_MINUTES, m1)
        doc = live.public_ongoing().get(svc.id)
        recent = [d for d in live.incidents(IncidentQuery(service=svc.id, limit=10)) if public(d)]
        spans = [incident_span(d) for d in recent]
        chart = build_chart(counts, baseline, m1 - CHART_MINUTES, spans=spans)
        if doc is not None:
            countries = {c["country"]: int(c["reports"]) for c in doc["countries"]}
            problems = breakdown_rows(doc["problems"], "problem")
            basis = "reports of the ongoing incident"
        else:
            by_country, by_problem = live.breakdown(svc.id, MAP_RECENT_MINUTES)
            countries = by_country
            problems = rows_of(by_problem, "problem")
            basis = f"reports of the last {MAP_RECENT_MINUTES // 60} hours"
        status, status_detail = live.states([svc], live.public_ongoing())[svc.id]
        latest, history = live.probe_results(svc.id)
        reported = request.query_params.get("reported")
        return self.render(
            request,
            "service.html",
            history_summary=history_summary(live.history(svc.id, HISTORY_DAYS)),
            visitor=visitor,
            svc=svc,
            status=status,
            status_detail=status_detail,
            vantages=vantage_rows(latest, history, now),
            official=live.official_status(svc.id) if svc.status_page is not None else None,
            doc=doc,
            chart=chart,
            map=map_view(countries, basis),
            countries=rows_of(countries, "country")[:10],
            problems=problems,
            recent=recent,
            baseline_now=_last_finite(baseline),
            csrf=visitor_token(self.secret, visitor),
            country_choices=country_choices(),
            preferred=preferred_country(request.headers.get("accept-language", "")),
            reported=reported,
            live_page=doc is not None,
            clock=now,
            duration=duration,
            windows=live.upcoming(svc),
            email_alerts=bool(self.settings.smtp_host and self.settings.public_url),
        )

    async def report(self, request: Request, name: str) -> Response:
        live = live_of(request)
        svc = live.service_or_none(name)
        if svc is None:
            return self.no_service(request, name)
        body = await _read_form(request)
        if body is None:
            return self.error(request, 413, "Too large", "That form was too large.")
        visitor = request.cookies.get(VISITOR_COOKIE, "")
        token = body.get("csrf", "")
        if not visitor or not hmac.compare_digest(token, visitor_token(self.secret, visitor)):
            return self.error(
                request,
                403,
                "Form expired",
                "This form could not be verified (it may have expired or come from another "
                "site). Please open the service page again and resend your report.",
            )
        problem = body.get("problem", "")
        country = body.get("country", "")
        if problem not in svc.all_problems:
            return self.error(
                request, 422, "Unknown problem", f"“{problem}” is not a problem type of {svc.name}."
            )
        item = {"service": svc.id, "problem": problem, "country": country}
        ip = client_ip(request, self.settings.trusted_proxies)
        limiter = getattr(getattr(request.app.state, "ingest", None), "limiter", None)
        if limiter is not None and ip is not None:  # the same budget as POST /api/v1/reports
            wait, headers = limiter.check(ip, 1)
            if wait:
                resp = self.error(
                    request,
                    429,
                    "Too many reports",
                    "Too many reports from your address; please wait a little and try again.",
                )
                resp.headers["Retry-After"] = headers.get("Retry-After", "60")
                return resp
        try:
            prep = await live.submit("report", [item], ip, public=True)
        except BusError:
            resp = self.error(
                request, 503, "Busy", "The server is very busy right now; please try again."
            )
            resp.headers["Retry-After"] = "5"
            return resp
        if not prep.lines:
            reason = str(prep.rejected[0]["reason"]) if prep.rejected else "rejected"
            return self.error(request, 422, "Report not accepted", reason)
        return RedirectResponse(f"/services/{quote(svc.id)}?reported=1#report", status_code=303)

    # ------------------------------------------------------------ incident
    def incident(self, request: Request, incident_id: str) -> HTMLResponse:
        live = live_of(request)
        doc = live.incident(incident_id)
        if doc is None:
            return self.error(
                request, 404, "No such incident", f"There is no incident “{incident_id}”."
            )
        svc = live.catalog.services.get(doc["service"])
        name = svc.name if svc is not None else doc["service"]
        cluster = doc.get("cluster")
        related: list[dict[str, Any]] = []
        if cluster:
            since = epoch(doc["started_at"])
            assert since is not None
            related = [
                d
                for d in live.incidents(IncidentQuery(since=since - 86400))
                if d["id"] != doc["id"] and (d.get("cluster") or {}).get("id") == cluster["id"]
            ]
        names = {sid: s.name for sid, s in live.catalog.services.items()}
        now = live.clock()
        m0, _, _ = incident_span(doc)
        end = epoch(doc.get("ended_at"))
        last = int((end if end is not None else now) // 60) + 1
        first = min(m0 - 60, last - 180)
        counts, baseline = live.series(doc["service"], first, last)
        chart = build_chart(
            counts, baseline, first, x_tick_minutes=60, spans=[incident_span(doc)], height=180
        )
        countries = {c["country"]: int(c["reports"]) for c in doc["countries"]}
        return self.render(
            request,
            "incident.html",
            doc=doc,
            name=name,
            names=names,
            transitions=live.transitions(doc["id"]),
            related=related,
            cluster=cluster,
            chart=chart,
            map=map_view(countries, "reports of this incident"),
            countries=breakdown_rows(doc["countries"], "country"),
            problems=breakdown_rows(doc["problems"], "problem"),
            official=doc.get("official_status"),
            is_public=public(doc),
            live_page=doc["status"] == "ongoing",
            clock=now,
            duration=duration,
        )

    # ------------------------------------------------------------ live updates
    async def events(self, request: Request) -> StreamingResponse:
        """Server-sent events: `version` with "<version> <ongoing>" on every commit, where
        <ongoing> fingerprints the ongoing incidents (pages refresh at once when it changes,
        at a gentler pace otherwise), and a comment as heartbeat."""
        live = live_of(request)

        def message(version: int) -> bytes:
            return f"event: version\ndata: {version} {ongoing_key(live)}\n\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            seen = live.changes.version
            yield b"retry: 5000\n" + message(seen)
            while True:
                if await request.is_disconnected():
                    return
                version = await live.changes.wait(seen, HEARTBEAT_S)
                if version != seen:
                    seen = version
                    yield message(seen)
                    await asyncio.sleep(1.0)  # at most one announcement a second
                else:
                    yield b": heartbeat\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def ongoing_key(live: Live) -> str:
    """A short fingerprint of which incidents are ongoing and how severe they are."""
    return ongoing_fingerprint(live.public_ongoing())


def ongoing_fingerprint(ongoing: Mapping[str, Mapping[str, Any]]) -> str:
    """`ongoing_key` of these public ongoing incidents (by service): a service is not `ok`
    exactly when it has one, so their severities are the statuses that are not `ok`."""
    parts = sorted(f"{d['id']}:{d['status']}" for d in ongoing.values())
    statuses = sorted(f"{sid}={severity(d)}" for sid, d in ongoing.items())
    raw = "|".join(parts + statuses).encode()
    return hashlib.sha256(raw).hexdigest()[:12] if raw else "none"


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 100_000))
    except ValueError:
        return 1


def live_of(request: Request) -> Live:
    live: Live = request.app.state.live
    return live


def _last_finite(values: np.ndarray) -> float | None:
    ok = np.flatnonzero(np.isfinite(values))
    return None if len(ok) == 0 else round(float(values[ok[-1]]), 1)


@lru_cache(maxsize=1)
def country_choices() -> list[tuple[str, str]]:
    return sorted(((c, country_name(c)) for c in COUNTRIES), key=lambda kv: kv[1].lower())


def _static_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC.glob("*")):
        if p.suffix in (".css", ".js"):
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


async def _read_form(request: Request) -> dict[str, str] | None:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items() if v}


def build_pages(app: FastAPI, settings: Settings) -> None:
    pages = Pages(settings)
    app.state.pages = pages
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # The pages render in worker threads: a large catalog or a long history must not hold
    # the event loop (and with it /healthz and ingest).
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request) -> Response:
        return await run_in_threadpool(pages.home, request)

    @app.get("/services/{name}", response_class=HTMLResponse, include_in_schema=False)
    async def service(request: Request, name: str) -> Response:
        return await run_in_threadpool(pages.service, request, name)

    @app.post("/services/{name}/report", include_in_schema=False)
    async def report(request: Request, name: str) -> Response:
        return await pages.report(request, name)

    @app.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
    async def incident(request: Request, incident_id: str) -> Response:
        return await run_in_threadpool(pages.incident, request, incident_id)

    @app.get("/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        return await pages.events(request)


__all__ = ["Pages", "build_chart", "build_pages", "map_view", "share_step"]

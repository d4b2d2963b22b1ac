"""The admin page behind the admin token (issue 19): post updates, schedule maintenance,
edit a service, from a browser.

    GET  /admin               the login form, or (logged in) the page
    POST /admin/login         `token` (any token with the `admin` scope): a session
    POST /admin/logout
    POST /admin/updates       `incident`, `status`, `text`
    POST /admin/maintenance   `service`, `starts_at`, `ends_at` (UTC), `title`
    POST /admin/services      `id`, `service` (a §1 service table as JSON)

- The session cookie holds 32 random bytes; the store keeps only their SHA-256 with an
  expiry (`SESSION_S`), so every API node knows the session and logging out ends it. It
  also keeps the SHA-256 of the token the session was opened with: revoking that token
  (or changing the bootstrap token) ends its sessions, on every node once it has re-read
  the tokens (`auth.REFRESH_S`).
  The cookie is HttpOnly, SameSite=Strict, limited to /admin, and Secure when the page is
  served over https (the request's scheme or an https `OUTAGEWATCH_PUBLIC_URL`).
- Every form POST carries a CSRF token: logged in, an HMAC of the session id (known only
  to the page the session was given, checked against the cookie); on the login form, a
  random value also set as a cookie (double submit). A missing or wrong one is a 403.
- The forms go through the same code as the API (`operations.add_update`,
  `operations.add_window`, `CatalogEdits.put`): the same checks and the same messages.
- Logins are rate-limited per client address (`LOGIN_PER_MINUTE`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from outagewatch.catalog import catalog_doc
from outagewatch.events import iso
from outagewatch.store.base import IncidentQuery
from outagewatch.store.visitors import VisitorRows
from outagewatch.web import schemas
from outagewatch.web.api import client_ip
from outagewatch.web.auth import Auth
from outagewatch.web.catalog_api import CatalogEdits
from outagewatch.web.ingest import ApiError
from outagewatch.web.operations import add_update, add_window
from outagewatch.web.ratelimit import RateLimiter

if TYPE_CHECKING:
    from outagewatch.web.host import Host
    from outagewatch.web.pages import Pages

SESSION_COOKIE = "ow_admin"
LOGIN_COOKIE = "ow_admin_login"
SESSION_S = 8 * 3600
LOGIN_PER_MINUTE = 10
MAX_FORM_BYTES = 64 * 1024
DONE = {
    "update": "The update is posted.",
    "maintenance": "The maintenance window is scheduled.",
    "service": "The service is saved.",
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def csrf_of(session: str) -> str:
    """The CSRF token of a session's forms."""
    return hmac.new(session.encode(), b"outagewatch admin forms", hashlib.sha256).hexdigest()


def utc(value: str) -> str:
    """A `datetime-local` value (read as UTC) as RFC 3339; anything else as given."""
    v = value.strip()
    if len(v) == 16 and v[10] == "T":
        return f"{v}:00Z"
    if len(v) == 19 and v[10] == "T":
        return f"{v}Z"
    return v


class ForbiddenError(Exception):
    """A form POST without a valid session or CSRF token."""


def build_router(host: Host, auth: Auth, edits: CatalogEdits) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    logins = RateLimiter(LOGIN_PER_MINUTE, LOGIN_PER_MINUTE * 10)

    def store() -> VisitorRows:
        found = host.reader
        if not isinstance(found, VisitorRows):
            raise ApiError(503, "unavailable", "the server is starting or stopping")
        return found

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or host.settings.public_url.startswith("https:")

    def pages(request: Request) -> Pages:
        found: Pages = request.app.state.pages
        return found

    async def session_of(request: Request) -> str | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        if not sid or len(sid) > 100:
            return None
        found = await asyncio.to_thread(store().session, digest(sid))
        if found is None or found[0] <= host.clock():
            return None
        # Only while the token it was opened with is known and an admin's (not revoked).
        return sid if auth.holds(found[1], "admin") else None

    async def form_of(request: Request) -> dict[str, str]:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise ApiError(413, "too_large", "the form is too large")
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in fields.items() if v}

    async def checked(request: Request) -> tuple[str, dict[str, str]]:
        """The session and the form of a logged-in POST; ForbiddenError without both."""
        sid = await session_of(request)
        form = await form_of(request)
        if sid is None or not hmac.compare_digest(form.get("csrf", ""), csrf_of(sid)):
            raise ForbiddenError
        return sid, form

    def refused(request: Request, message: str) -> HTMLResponse:
        return pages(request).render(request, "error.html", 403, title="Forbidden", message=message)

    # ------------------------------------------------------------ the pages
    def login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        resp = pages(request).render(
            request, "admin.html", status, logged_in=False, csrf=token, error=error, done=None
        )
        resp.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        return resp

    def admin_page(
        request: Request,
        sid: str,
        status: int = 200,
        error: str | None = None,
        edit: str | None = None,
        form: dict[str, str] | None = None,
        edit_body: str | None = None,
    ) -> Response:
        live = request.app.state.live
        catalog = live.catalog
        now = host.clock()
        incidents = live.incidents(IncidentQuery(since=now - 7 * 86_400, limit=50))
        groups = sorted({s.group for s in catalog.services.values() if s.group})
        sid_edit = edit if edit is not None else request.query_params.get("edit", "")
        body = edit_body or ""
        if edit_body is None and sid_edit in catalog.services:
            body = json.dumps(catalog_doc(catalog)["services"][sid_edit], indent=2)
        done = DONE.get(request.query_params.get("done", ""))
        start = iso(now)[:16]
        return pages(request).render(
            request,
            "admin.html",
            status,
            logged_in=True,
            csrf=csrf_of(sid),
            error=error,
            done=done,
            incidents=incidents,
            services=sorted(catalog.services.values(), key=lambda s: s.name.lower()),
            groups=groups,
            statuses=schemas.UPDATE_STATUSES,
            edit_id=sid_edit,
            edit_body=body,
            form=form or {},
            start=start,
            end=iso(now + 3600)[:16],
        )

    @r.get("/admin")
    async def admin(request: Request) -> Response:
        sid = await session_of(request)
        if sid is None:
            return login_page(request)
        return admin_page(request, sid)

    @r.post("/admin/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        given = request.cookies.get(LOGIN_COOKIE, "")
        if not given or not hmac.compare_digest(form.get("csrf", ""), given):
            return refused(request, "The login form could not be verified; open /admin again.")
        ip = client_ip(request, host.settings.trusted_proxies)
        if ip is not None:
            wait, headers = logins.check(ip, 1)
            if wait:
                resp = login_page(request, 429, "Too many attempts; wait a minute.")
                resp.headers["Retry-After"] = headers["Retry-After"]
                return resp
        token = form.get("token", "").strip()
        token_hash = digest(token)
        if not token or not auth.holds(token_hash, "admin"):
            return login_page(request, 403, "That token is not an admin token of this server.")
        sid = secrets.token_urlsafe(32)
        now = host.clock()
        st = store()
        await asyncio.to_thread(st.prune_sessions, now)
        await asyncio.to_thread(st.add_session, digest(sid), now + SESSION_S, token_hash)
        resp = RedirectResponse("/admin", status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=SESSION_S,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        resp.delete_cookie(LOGIN_COOKIE, path="/admin")
        return resp

    @r.post("/admin/logout")
    async def logout(request: Request) -> Response:
        try:
            sid, _ = await checked(request)
        except ForbiddenError:
            return refused(request, "Not logged in, or the form could not be verified.")
        await asyncio.to_thread(store().delete_session, digest(sid))
        resp = RedirectResponse("/admin", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/admin")
        return resp

    async def act(request: Request, what: str) -> Response:
        try:
            sid, form = await checked(request)
        except ForbiddenError:
            return refused(request, "Not logged in, or the form could not be verified.")
        live = request.app.state.live
        try:
            if what == "update":
                body = {"status": form.get("status", ""), "text": form.get("text", "")}
                await add_update(host, live, form.get("incident", ""), body)
            elif what == "maintenance":
                body = {
                    "service": form.get("service", ""),
                    "starts_at": utc(form.get("starts_at", "")),
                    "ends_at": utc(form.get("ends_at", "")),
                    "title": form.get("title", ""),
                }
                await add_window(host, live, body)
            else:
                sid_edit = form.get("id", "").strip()
                try:
                    parsed = json.loads(form.get("service", ""))
                except ValueError as exc:
                    raise ApiError(
                        422, "invalid_body", f"service: not valid JSON ({exc})"
                    ) from None
                await edits.put(sid_edit, parsed, f"admin page: service {sid_edit}")
        except ApiError as exc:
            if what == "service":
                edit, text = form.get("id", ""), form.get("service", "")
                return admin_page(request, sid, exc.status, exc.message, edit, form, text)
            return admin_page(request, sid, exc.status, exc.message, None, form)
        return RedirectResponse(f"/admin?done={what}", status_code=303)

    @r.post("/admin/updates")
    async def post_update(request: Request) -> Response:
        return await act(request, "update")

    @r.post("/admin/maintenance")
    async def post_maintenance(request: Request) -> Response:
        return await act(request, "maintenance")

    @r.post("/admin/services")
    async def post_service(request: Request) -> Response:
        return await act(request, "service")

    return r

"""Visitors follow services by email: double opt-in, one-click unsubscribe (issue 19).

    POST /api/v1/email-subscriptions  public  {"email", "services"}: 202, a confirmation mail
    POST /subscribe                   the service page's form (HTML answers)
    GET  /subscribe/confirm           a page with a button; POST confirms (mail scanners GET)
    GET  /unsubscribe                 a page with a button; POST unsubscribes (RFC 8058)

- Nothing but the confirmation request goes to an address until its link is followed. The
  link holds a random token; the store keeps only its SHA-256, for `CONFIRM_TTL_S`.
- Confirmed, the visitor gets an email subscription per service in the alerter (config
  `visitor`: the subscriber's id), so alerts go out as every other alert does, and each
  mail carries `List-Unsubscribe` / `List-Unsubscribe-Post` (RFC 8058) with a link whose
  token is an HMAC of the subscriber id under a random site key (`site_keys`): valid for as
  long as the subscription, and nothing per subscriber is stored to check it. Each request
  stays a row (so links in mails already sent stay valid); a later one follows only the
  services the address does not follow yet (one mail per alert), and any of its links
  stops everything sent to the address.
- Subscribing is rate-limited per address (`ADDRESS_PER_HOUR`) and per client address and
  block (`IP_PER_HOUR`, `BLOCK_PER_HOUR`): 429 with `Retry-After`.
- Off unless the SMTP settings and `OUTAGEWATCH_PUBLIC_URL` (the links' base) are set;
  until then the endpoint answers 404.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from outagewatch.alerts.base import NotifierError
from outagewatch.alerts.channels.email import is_address
from outagewatch.store.visitors import VisitorRows
from outagewatch.web import schemas
from outagewatch.web.api import client_ip, json_response
from outagewatch.web.auth import digest, secret_row
from outagewatch.web.ingest import ApiError
from outagewatch.web.ratelimit import Buckets, RateLimiter

if TYPE_CHECKING:
    from outagewatch.web.host import Host
    from outagewatch.web.pages import Pages

log = logging.getLogger(__name__)

CONFIRM_TTL_S = 2 * 86_400
ADDRESS_PER_HOUR = 3
IP_PER_HOUR = 10
BLOCK_PER_HOUR = 30
MAX_SERVICES = 50
MAX_EMAIL = 254
MAX_FORM_BYTES = 8192

SUBSCRIBE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["email", "services"],
    "additionalProperties": False,
    "properties": {
        "email": {"type": "string", "description": "where the alerts go"},
        "services": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SERVICES,
            "items": {"type": "string"},
            "description": "service ids or aliases",
        },
    },
}


class Visitors:
    """Subscribing, confirming and unsubscribing; what the routes and pages call."""

    def __init__(self, host: Host, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.by_address = Buckets(ADDRESS_PER_HOUR, clock, window_s=3600.0)
        self.by_client = RateLimiter(IP_PER_HOUR, BLOCK_PER_HOUR, clock, window_s=3600.0)
        self._key: bytes | None = None
        self._sending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ configuration
    def off(self) -> str | None:
        """Why visitors' email subscriptions are off, or None when they are on."""
        st = self.host.settings
        if not st.smtp_host or not st.public_url:
            return (
                "email subscriptions are off on this server (it needs OUTAGEWATCH_SMTP_HOST "
                "and OUTAGEWATCH_PUBLIC_URL)"
            )
        return None

    def store(self) -> VisitorRows:
        store = self.host.reader
        if not isinstance(store, VisitorRows):
            raise ApiError(503, "unavailable", "the server is starting or stopping")
        return store

    def _site_key(self) -> bytes:
        if self._key is None:
            value = self.store().site_key("unsubscribe", secrets.token_hex(32))
            self._key = bytes.fromhex(value)
        return self._key

    def unsubscribe_token(self, visitor: str) -> str:
        mac = hmac.new(self._site_key(), f"unsubscribe:{visitor}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def _link(self, path: str, **query: str) -> str:
        return f"{self.host.settings.public_url}{path}?{urlencode(query)}"

    def unsubscribe_url(self, visitor: str) -> str:
        return self._link("/unsubscribe", id=visitor, token=self.unsubscribe_token(visitor))

    # ------------------------------------------------------------ subscribing
    def check(self, email: Any, services: Any) -> tuple[str, list[str]]:
        """The address and the service ids, or a 422 naming what is wrong."""
        if not isinstance(email, str) or not email.strip():
            raise ApiError(422, "invalid_body", "email: an email address")
        email = email.strip()
        if len(email) > MAX_EMAIL or not is_address(email):
            raise ApiError(422, "invalid_body", f"email: {email[:80]!r} is not an email address")
        local, _, domain = email.rpartition("@")
        email = f"{local}@{domain.lower()}"
        if (
            not isinstance(services, list)
            or not services
            or len(services) > MAX_SERVICES
            or not all(isinstance(s, str) for s in services)
        ):
            raise ApiError(
                422, "invalid_body", f"services: a list of 1 to {MAX_SERVICES} service ids"
            )
        live = self.host.live
        if live is None:
            raise ApiError(503, "unavailable", "the server is starting or stopping")
        ids: list[str] = []
        for name in services:
            svc = live.service_or_none(name)
            if svc is None:
                raise ApiError(422, "invalid_body", f"services: no service {name[:80]!r}")
            if svc.id not in ids:
                ids.append(svc.id)
        return email, ids

    def limit(self, email: str, ip: str | None) -> None:
        """429 when this client or this address asked too often."""
        if ip is not None:
            wait, headers = self.by_client.check(ip, 1)
            if wait:
                raise ApiError(
                    429,
                    "rate_limited",
                    "too many subscription requests from your address; try again later",
                    {"Retry-After": headers["Retry-After"]},
                )
        wait = self.by_address.take(email.lower(), 1)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "too many subscription requests for this email address; try again later",
                {"Retry-After": str(max(1, int(min(wait, 3600.0))))},
            )

    async def subscribe(self, email: Any, services: Any, ip: str | None) -> tuple[str, list[str]]:
        """Record an unconfirmed subscription and send the confirmation request."""
        why = self.off()
        if why is not None:
            raise ApiError(404, "not_found", why)
        email, ids = self.check(email, services)
        self.limit(email, ip)
        store = self.store()
        now = self.host.clock()
        token, row = secret_row("vs_", "confirm_hash", {"email": email, "services": ids}, now)
        await asyncio.to_thread(store.prune_visitors, now - CONFIRM_TTL_S)
        await asyncio.to_thread(store.add_visitor, row)
        await asyncio.to_thread(self._site_key)
        task = asyncio.create_task(self._send_confirmation(row["id"], email, ids, token))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return email, ids

    async def _send_confirmation(
        self, visitor: str, email: str, services: Sequence[str], token: str
    ) -> None:
        catalog = self.host.catalog.services
        names = ", ".join(catalog[s].name if s in catalog else s for s in services)
        link = self._link("/subscribe/confirm", id=visitor, token=token)
        text = (
            f"Someone (we hope you) asked for email alerts about outages of {names} at "
            f"{self.host.settings.public_url}/.\n\n"
            f"To confirm, open this link within {CONFIRM_TTL_S // 3600} hours:\n{link}\n\n"
            "If you did not ask for this, ignore this mail: nothing more will be sent to you."
        )
        try:
            alerter = self.host.alerter
            if alerter is None:
                raise NotifierError("the alerter is not running")
            await alerter.send_mail(
                email,
                f"Confirm your outage alerts for {names}"[:200],
                text,
                f"confirm:{visitor}",
                unsubscribe=self.unsubscribe_url(visitor),
            )
        except Exception as exc:  # logged without the address: it is the visitor's
            log.warning("the confirmation mail of %s was not sent: %s", visitor, exc)

    async def sent(self) -> None:
        """Wait for the confirmation mails in flight (tests, shutdown)."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    # ------------------------------------------------------------ confirming
    async def confirm(self, visitor: str, token: str) -> dict[str, Any] | None:
        """Confirm with the mailed token: the subscriber (now confirmed), or None when the
        link is wrong or has expired."""
        store = self.store()
        row = await asyncio.to_thread(store.visitor, visitor)
        if row is None:
            return None
        if row["confirmed_at"] is not None:
            return row  # followed twice: still subscribed
        given = digest(token)
        stored = str(row["confirm_hash"] or "")
        now = self.host.clock()
        if not hmac.compare_digest(given, stored) or row["created_at"] + CONFIRM_TTL_S < now:
            return None
        if not await asyncio.to_thread(store.confirm_visitor, visitor, stored, now):
            return await asyncio.to_thread(store.visitor, visitor)  # someone else just did
        # An address's later request follows only what its earlier ones do not (one mail
        # per alert), and stays a row of its own: the links in mails already sent stay valid.
        earlier = await asyncio.to_thread(store.visitors_of, row["email"])
        have = {s for v in earlier if v["id"] != visitor for s in v["services"]}
        alerter = self.host.alerter
        if alerter is not None:
            new = [s for s in row["services"] if s not in have]
            await alerter.follow(visitor, row["email"], new)
        return {**row, "confirm_hash": None, "confirmed_at": now}

    async def unsubscribe(self, visitor: str, token: str) -> bool:
        """Stop every email alert to the subscriber's address: all its requests (confirmed
        or not) and their subscriptions. False when the token is wrong."""
        if not hmac.compare_digest(token.encode(), self.unsubscribe_token(visitor).encode()):
            return False
        store = self.store()
        row = await asyncio.to_thread(store.visitor, visitor)
        ids = [visitor]
        if row is not None:
            rows = await asyncio.to_thread(store.visitors_of, row["email"], confirmed=False)
            ids += [v["id"] for v in rows if v["id"] != visitor]
        alerter = self.host.alerter
        for vid in ids:
            if alerter is not None:
                await alerter.unfollow(vid)
            await asyncio.to_thread(store.delete_visitor, vid)
        return True


# ---------------------------------------------------------------------------- routes
async def _body(request: Request) -> bytes:
    """The request's body, at most MAX_FORM_BYTES (else 413): a subscription is small."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_FORM_BYTES} bytes")
    return bytes(body)


async def _form(request: Request) -> dict[str, list[str]]:
    body = await _body(request)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def build_router(host: Host, visitors: Visitors) -> APIRouter:
    r = APIRouter(tags=["follow"])

    def pages(request: Request) -> Pages:
        found: Pages = request.app.state.pages
        return found

    def page(request: Request, status: int, title: str, message: str, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("form", None)
        return pages(request).render(
            request, "visitor.html", status, title=title, message=message, **ctx
        )

    def ip_of(request: Request) -> str | None:
        return client_ip(request, host.settings.trusted_proxies)

    @r.post(
        "/api/v1/email-subscriptions",
        status_code=202,
        response_model=schemas.EmailSubscription,
        responses={c: {"model": schemas.Error} for c in (404, 413, 422, 429, 503)},
        openapi_extra=schemas.json_body(SUBSCRIBE_BODY),
        summary="Follow services by email (a confirmation mail is sent first)",
        description="Double opt-in: only a confirmation request is mailed until its link is "
        f"followed (within {CONFIRM_TTL_S // 3600} hours). Rate-limited: "
        f"{ADDRESS_PER_HOUR} an hour per email address, {IP_PER_HOUR} an hour per client "
        "address (429 with Retry-After). 404 when the server sends no email.",
    )
    async def subscribe_json(request: Request) -> Response:
        try:
            body = json.loads(await _body(request))
        except (ValueError, RecursionError):
            raise ApiError(422, "invalid_body", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_body", "the body must be a JSON object")
        unknown = sorted(set(body) - {"email", "services"})
        if unknown:
            raise ApiError(422, "invalid_body", f"{unknown[0]}: unknown field")
        email, ids = await visitors.subscribe(
            body.get("email"), body.get("services"), ip_of(request)
        )
        doc = {"email": email, "services": ids, "status": "confirmation_sent"}
        return json_response(doc, 202)

    @r.post("/subscribe", include_in_schema=False)
    async def subscribe_form(request: Request) -> Response:
        try:
            form = await _form(request)
            services = form.get("service", [])
            email, ids = await visitors.subscribe(
                (form.get("email") or [""])[0], services, ip_of(request)
            )
        except ApiError as exc:
            resp = page(request, exc.status, "Not subscribed", exc.message.capitalize() + ".")
            resp.headers.update({k: v for k, v in exc.headers.items() if k == "Retry-After"})
            return resp
        names = ", ".join(host.catalog.services[s].name for s in ids if s in host.catalog.services)
        return page(
            request,
            200,
            "Check your mail",
            f"We sent a link to {email}. Follow it to get email alerts about {names}; "
            "nothing else is sent until you do.",
        )

    def args(request: Request) -> tuple[str, str]:
        q = request.query_params
        return q.get("id", "")[:100], q.get("token", "")[:200]

    def button_page(
        request: Request, path: str, title: str, text: str, button: str, fields: dict[str, str]
    ) -> Response:
        """A page whose one button POSTs the link's id and token back to `path` (the GET
        itself changes nothing)."""
        vid, token = args(request)
        action = path + "?" + urlencode({"id": vid, "token": token})
        form = {"action": action, "button": button, "fields": fields}
        return page(request, 200, title, text, form=form)

    @r.get("/subscribe/confirm", include_in_schema=False)
    async def confirm_page(request: Request) -> Response:
        return button_page(
            request,
            "/subscribe/confirm",
            "Confirm your subscription",
            "Press the button to start getting email alerts.",
            "Confirm my subscription",
            {},
        )

    @r.post("/subscribe/confirm", include_in_schema=False)
    async def confirm(request: Request) -> Response:
        vid, token = args(request)
        try:
            row = await visitors.confirm(vid, token)
        except ApiError as exc:
            return page(request, exc.status, "Not confirmed", exc.message)
        if row is None:
            return page(
                request,
                404,
                "Link not valid",
                "This confirmation link is wrong or has expired; please subscribe again.",
            )
        catalog = host.catalog.services
        names = ", ".join(catalog[s].name for s in row["services"] if s in catalog)
        return page(
            request,
            200,
            "Subscribed",
            f"{row['email']} now gets email alerts about {names}. Every mail has a "
            "link to unsubscribe.",
        )

    @r.get("/unsubscribe", include_in_schema=False)
    async def unsubscribe_page(request: Request) -> Response:
        return button_page(
            request,
            "/unsubscribe",
            "Unsubscribe",
            "Press the button to stop all email alerts to this address.",
            "Unsubscribe",
            {"List-Unsubscribe": "One-Click"},
        )

    @r.post("/unsubscribe", include_in_schema=False)
    async def unsubscribe(request: Request) -> Response:
        vid, token = args(request)
        try:
            done = await visitors.unsubscribe(vid, token)
        except ApiError as exc:
            return page(request, exc.status, "Not unsubscribed", exc.message)
        if not done:
            return page(request, 403, "Link not valid", "This unsubscribe link is not valid.")
        return page(request, 200, "Unsubscribed", "You will get no more email alerts from us.")

    return r

"""The ingest endpoints (`POST /api/v1/reports|probes|metrics`), one code path.

`Ingest.handle` does everything a POST needs — size limits, JSON, operator token, client
address, rate limit, checking, publishing — and returns (status, body, headers). The
FastAPI routes call it (they document the endpoints in /openapi.json), and so does
`Ingest.asgi`, a thin ASGI layer that answers these three paths before the framework's
middleware and routing: the ingest path is the hot one, and that stack cost more than
the work itself (profiled with py-spy at ~1,000 single-report requests/s).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import orjson

from outagewatch.engine import parse_body
from outagewatch.errors import BusError
from outagewatch.web.ratelimit import RateLimiter

MAX_BODY_BYTES = 1 << 20
MAX_ITEMS = 1000
PATHS = {"/api/v1/reports": "report", "/api/v1/probes": "probe", "/api/v1/metrics": "metric"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message}})


def is_operator(authorization: str | None, token: str) -> bool:
    """Constant-time check of `Authorization: Bearer <token>`."""
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def require_operator(authorization: str | None, token: str) -> None:
    if is_operator(authorization, token):
        return
    if not token:
        raise ApiError(
            403,
            "forbidden",
            "no operator token is configured on this server (set OUTAGEWATCH_TOKEN)",
        )
    if not authorization:
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs the operator token: Authorization: Bearer <token>",
            {"WWW-Authenticate": "Bearer"},
        )
    raise ApiError(403, "forbidden", "the bearer token is not the operator token")


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[str]
) -> str | None:
    """The client's address; behind a trusted proxy, the last untrusted X-Forwarded-For hop."""
    if not trusted or peer is None:
        return peer
    nets = [ipaddress.ip_network(t) for t in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def _too_large() -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")


async def read_body(content_length: str | None, chunks: AsyncIterator[bytes]) -> bytes:
    if (
        content_length is not None
        and content_length.isdigit()
        and int(content_length) > MAX_BODY_BYTES
    ):
        raise _too_large()
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


def items_of(body: bytes) -> list[Any]:
    if not body:
        raise ApiError(422, "invalid_body", "the body is empty: send a JSON object or a list")
    try:
        items = parse_body(body)
    except ValueError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None
    if len(items) > MAX_ITEMS:
        raise ApiError(413, "too_large", f"a batch holds at most {MAX_ITEMS} items")
    if not items:
        raise ApiError(422, "invalid_body", "the list is empty")
    return items


class Ingest:
    def __init__(
        self,
        live_of: Callable[[], Any],
        token: str,
        trusted: Sequence[str],
        limiter: RateLimiter | None,
    ) -> None:
        self.live_of = live_of  # the Live, once the server has started
        self.token = token
        self.trusted = tuple(trusted)
        self.limiter = limiter

    async def handle(
        self,
        kind: str,
        headers: Mapping[str, str],
        peer: str | None,
        chunks: AsyncIterator[bytes],
    ) -> tuple[int, bytes, dict[str, str]]:
        """Answer one ingest POST: (status, JSON body, extra headers). `headers` keys are
        lower case."""
        try:
            return await self._handle(kind, headers, peer, chunks)
        except ApiError as exc:
            return exc.status, exc.body(), exc.headers

    async def _handle(
        self,
        kind: str,
        headers: Mapping[str, str],
        peer: str | None,
        chunks: AsyncIterator[bytes],
    ) -> tuple[int, bytes, dict[str, str]]:
        operator = is_operator(headers.get("authorization"), self.token)
        if kind != "report" and not operator:
            require_operator(headers.get("authorization"), self.token)
        body = await read_body(headers.get("content-length"), chunks)
        items = items_of(body)
        ip = None
        extra: dict[str, str] = {}
        if kind == "report":
            ip = client_address(peer, headers.get("x-forwarded-for"), self.trusted)
            if not operator and self.limiter is not None and ip is not None:
                wait, extra = self.limiter.check(ip, len(items))
                if wait:
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"too many reports from {ip} or its address block; "
                        f"retry in {extra['Retry-After']} s",
                        extra,
                    )
        live = self.live_of()
        try:
            prep = await live.submit(kind, items, ip)
        except BusError as exc:
            raise ApiError(503, exc.code, str(exc), {"Retry-After": "1"}) from None
        if not prep.lines:
            first = prep.rejected[0]
            more = f" (and {len(prep.rejected) - 1} more)" if len(prep.rejected) > 1 else ""
            raise ApiError(
                422, "no_valid_item", f"item {first['index']}: {first['reason']}{more}", extra
            )
        doc = {"accepted": len(prep.lines), "rejected": prep.rejected}
        return 202, orjson.dumps(doc), extra

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """`app` with the ingest paths answered directly."""

        async def fast(scope: Scope, receive: Receive, send: Send) -> None:
            kind = PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
            if kind is None or scope["method"] != "POST":
                await app(scope, receive, send)
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            client = scope.get("client")

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    yield msg.get("body", b"")
                    if not msg.get("more_body", False):
                        return

            status, body, extra = await self.handle(
                kind, headers, client[0] if client else None, chunks()
            )
            raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
            raw += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": body})

        return fast

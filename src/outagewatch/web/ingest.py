"""The ingest endpoints (`POST /api/v1/reports|probes|metrics`), one code path.

`Ingest.handle` does everything a POST needs — size limits, JSON, operator token, client
address, rate limit, checking, publishing — and returns (status, body, headers). The
FastAPI routes call it (they document the endpoints in /openapi.json), and so does
`Ingest.asgi`, a thin ASGI layer that answers these three paths before the framework's
middleware and routing: the ingest path is the hot one, and that stack cost more than
the work itself (profiled with py-spy at ~1,000 single-report requests/s).

The same layer sheds load (`Limits`): past a bounded amount of work in flight, a request is
answered 503 with `Retry-After` at once, before its body is read. Ingest POSTs have their
own budget (by count and by body bytes received, which is what they cost the event loop and
memory), a client address may have only a few bodies in progress at once (admission.py),
so pages, API reads and `/healthz` keep answering while ingest is saturated; a bus that has
fallen behind (`LocalBus.overloaded`) refuses new POSTs the same way. Open connections are
bounded by closing idle ones (admission.py: GuardedHttp).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec

import orjson
from starlette.requests import ClientDisconnect

from outagewatch.errors import BusError, OverloadedError
from outagewatch.web.admission import FORM_BODY_TIMEOUT_S, Bodies, BodyGuard
from outagewatch.web.posted import parse_body
from outagewatch.web.ratelimit import RateLimiter

if TYPE_CHECKING:
    from outagewatch.web.auth import Auth

log = logging.getLogger(__name__)

MIB = 1 << 20
MAX_BODY_BYTES = MIB
MAX_ITEMS = 1000
BODY_TIMEOUT_S = 30.0  # a body that has not arrived after this long is answered 408
PATHS = {"/api/v1/reports": "report", "/api/v1/probes": "probe", "/api/v1/metrics": "metric"}
BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})  # methods answered without reading a body
HEALTH_PATH = "/healthz"  # never refused: it is what says the process is alive
STREAM_PATHS = frozenset({"/events"})  # long-lived server-sent events (live pages)


@dataclass(frozen=True)
class Limits:
    """How much HTTP work is taken on at once; past it, 503 + Retry-After at once.

    `ingest_bytes` bounds the body bytes of the ingest POSTs being answered, charged as they
    arrive (a declared Content-Length costs nothing until its bytes come: a client that
    trickles its body holds only what it sent), and so the work still ahead of the server
    and the memory those requests hold. A 1,000-report batch (~66 KB) costs the event loop
    ~2 ms and the writer ~11 ms on the 2-core machine: 2 MiB is ~30 of them, ~0.3 s of
    work, so an admitted batch is answered well within the bus's 1 s and a refused one in
    tens of ms; bench_http's 16 batched or 64 single-report connections use < 200 KiB of
    it, and a larger budget only made admitted clients wait longer (8 MiB: p50 1.2 s and
    ~1.8x the memory growth). `ingest_requests` bounds small requests by count. Other
    requests (pages, API reads) and live-page streams have budgets of their own, so ingest
    cannot use up theirs.
    """

    ingest_requests: int = 256
    ingest_bytes: int = 2 * MIB
    other_requests: int = 256
    streams: int = 1000
    body_requests: int = 64  # other requests with a body: the report form, operator JSON

    def __post_init__(self) -> None:
        if min(self.ingest_requests, self.other_requests, self.streams, self.body_requests) < 1:
            raise ValueError("every limit must be at least 1")
        if self.ingest_bytes < MAX_BODY_BYTES:
            raise ValueError(f"ingest_bytes must be at least MAX_BODY_BYTES ({MAX_BODY_BYTES})")


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


class BodyDeadline:
    """Bodies that take longer than `timeout_s` to arrive are answered 408: a client that
    trickles its body must not hold an ingest slot for long. One sweep a second cancels the
    reads past their deadline (a timer per request would cost more than the rest of the
    admission)."""

    def __init__(self, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> when it began
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeping = False

    async def read(self, content_length: str | None, chunks: AsyncIterator[bytes]) -> bytes:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under ASGI
            return await read_body(content_length, chunks)
        self._reading[task] = time.monotonic()
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(min(1.0, self.timeout_s), self._sweep)
        try:
            return await read_body(content_length, chunks)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise ApiError(
                408, "timeout", f"the body did not arrive within {self.timeout_s:g} s"
            ) from None
        finally:
            del self._reading[task]
            self._expired.discard(task)

    def _sweep(self) -> None:
        now = time.monotonic()
        for task, began in self._reading.items():
            if now - began > self.timeout_s and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._reading:
            asyncio.get_running_loop().call_later(min(1.0, self.timeout_s), self._sweep)
        else:
            self._sweeping = False


def check_json(content_type: str | None) -> None:
    """Only `application/json` (with parameters such as charset) is JSON here: anything
    else is 415, so that no web page can make its visitors' browsers post reports (a form
    or a CORS "simple" request cannot send this type without the server's consent)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = repr(content_type[:60]) if content_type else "none"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {shown}: the body must be sent as application/json",
        )


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


Answer = tuple[int, bytes, dict[str, str]]
P = ParamSpec("P")


def _answering_errors(f: Callable[P, Awaitable[Answer]]) -> Callable[P, Awaitable[Answer]]:
    """`f`, answering an ApiError it raises as that error's (status, body, headers)."""

    @functools.wraps(f)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> Answer:
        try:
            return await f(*args, **kwargs)
        except ApiError as exc:
            return exc.status, exc.body(), exc.headers

    return answer


class Ingest:
    def __init__(
        self,
        live_of: Callable[[], Any],
        auth: Auth,
        trusted: Sequence[str],
        limiter: RateLimiter | None,
        limits: Limits | None = None,
    ) -> None:
        self.live_of = live_of  # the Live, once the server has started
        self.auth = auth
        self.trusted = tuple(trusted)
        self.limiter = limiter
        self.limits = limits or Limits()
        self.deadline = BodyDeadline()
        self.form_timeout_s = FORM_BODY_TIMEOUT_S  # bodies outside the ingest POSTs
        self.bodies = Bodies()  # bodies in progress per client address (admission.py)
        # The bus's refusal, asked before a body is read (set by `asgi_app` for LocalBus).
        self.pressure: Callable[[], OverloadedError | None] | None = None
        self.ingest_inflight = 0  # ingest POSTs being answered
        self.ingest_bytes = 0  # their bodies' bytes (as counted by `Limits`)
        self.other_inflight = 0
        self.body_inflight = 0  # other requests with a body (forms, operator JSON)
        self.streams = 0
        self.shed: Counter[str] = Counter()  # requests refused as overloaded, by reason
        self._shed_logged = (0.0, 0)  # (when, shed total then): at most a warning a minute

    @_answering_errors
    async def handle(
        self,
        kind: str,
        headers: Mapping[str, str],
        peer: str | None,
        chunks: AsyncIterator[bytes],
    ) -> tuple[int, bytes, dict[str, str]]:
        """Answer one ingest POST: (status, JSON body, extra headers). `headers` keys are
        lower case."""
        # Partner reports, probes and metrics: the `ingest` scope (web/auth.py).
        operator = self.auth.allows(headers.get("authorization"), "ingest")
        if kind != "report" and not operator:
            self.auth.require(headers.get("authorization"), "ingest")
        check_json(headers.get("content-type"))
        items = items_of(await self.deadline.read(headers.get("content-length"), chunks))
        ip = None
        extra: dict[str, str] = {}
        if kind == "report" and not operator:
            # A partner forwarding reports with the operator token gets no address on them:
            # its own says nothing of who reported (nor is it one person to deduplicate).
            ip = client_address(peer, headers.get("x-forwarded-for"), self.trusted)
            if self.limiter is not None and ip is not None:
                most = self.limiter.most
                if len(items) > most:  # refused by the buckets however long it waited
                    raise ApiError(
                        413,
                        "too_large",
                        f"a public batch holds at most {most} reports (this server's rate "
                        f"limit per address and block); this one has {len(items)}",
                    )
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
            prep = await live.submit(kind, items, ip, public=kind == "report" and not operator)
        except BusError as exc:
            retry = exc.retry_after if isinstance(exc, OverloadedError) else 1
            if isinstance(exc, OverloadedError):
                self._note_shed("bus")
            raise ApiError(503, exc.code, str(exc), {"Retry-After": str(retry)}) from None
        if not prep.lines:
            first = prep.rejected[0]
            more = f" (and {len(prep.rejected) - 1} more)" if len(prep.rejected) > 1 else ""
            raise ApiError(
                422, "no_valid_item", f"item {first['index']}: {first['reason']}{more}", extra
            )
        doc = {"accepted": len(prep.lines), "rejected": prep.rejected}
        return 202, orjson.dumps(doc), extra

    def _body_owner(self, headers: Mapping[str, str], peer: str | None) -> str | None:
        """Whose body this is, for the per-address limit (None: not limited — the
        operator token, or no known address)."""
        if self.auth.allows(headers.get("authorization"), "ingest"):
            return None
        return client_address(peer, headers.get("x-forwarded-for"), self.trusted)

    def _note_shed(self, reason: str) -> None:
        self.shed[reason] += 1
        now = time.monotonic()
        at, before = self._shed_logged
        if now - at >= 60.0:
            total = sum(self.shed.values())
            self._shed_logged = (now, total)
            log.warning(
                "over capacity: refused %d requests since the last warning (%s so far)",
                total - before,
                ", ".join(f"{k} {v}" for k, v in sorted(self.shed.items())),
            )

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """`app` with the ingest paths answered directly, and every request admitted
        against `self.limits` (503 + Retry-After past them)."""

        async def refuse(send: Send, reason: str, message: str, retry: int = 1) -> None:
            self._note_shed(reason)
            err = ApiError(503, "overloaded", message, {"Retry-After": str(retry)})
            await _answer(send, err.status, err.body(), err.headers)

        async def ingest(kind: str, scope: Scope, receive: Receive, send: Send) -> None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            limits = self.limits
            # Bodies are charged as their bytes arrive, never as declared: a client that
            # declares a megabyte and sends a byte a second holds a byte of the budget.
            if self.ingest_inflight >= limits.ingest_requests or (
                self.ingest_inflight and self.ingest_bytes >= limits.ingest_bytes
            ):
                await refuse(send, "ingest", "the server is over capacity; retry shortly")
                return
            refusal = self.pressure() if self.pressure is not None else None
            if refusal is not None:
                await refuse(send, "bus", str(refusal), refusal.retry_after)
                return
            client = scope.get("client")
            peer = client[0] if client else None
            who = self._body_owner(headers, peer)
            if not self.bodies.enter(who):
                await too_many_bodies(send, who)
                return
            charged = 0
            reading = True

            def body_done() -> None:
                nonlocal reading
                if reading:
                    reading = False
                    self.bodies.leave(who)

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal charged
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        body_done()
                        return
                    chunk: bytes = msg.get("body", b"")
                    if chunk:
                        if (
                            self.ingest_bytes + len(chunk) > limits.ingest_bytes
                            and self.ingest_bytes > charged  # others hold some of it
                        ):
                            body_done()
                            self._note_shed("ingest")
                            raise ApiError(
                                503,
                                "overloaded",
                                "the server is over capacity; retry shortly",
                                {"Retry-After": "1", "Connection": "close"},
                            )
                        if who is not None and not self.bodies.charge(
                            who, len(chunk), limits.ingest_bytes // 4, own=charged
                        ):
                            body_done()
                            self._note_shed("bodies")
                            raise ApiError(
                                429,
                                "too_many_bodies",
                                f"{who} is already sending {limits.ingest_bytes // 4} bytes of "
                                "request bodies at once; retry once they are done",
                                {"Retry-After": "1", "Connection": "close"},
                            )
                        charged += len(chunk)
                        self.ingest_bytes += len(chunk)
                    more = msg.get("more_body", False)
                    if not more:
                        body_done()
                    yield chunk
                    if not more:
                        return

            self.ingest_inflight += 1
            try:
                status, body, extra = await self.handle(kind, headers, peer, chunks())
            finally:
                body_done()
                self.ingest_inflight -= 1
                self.ingest_bytes -= charged
                if who is not None and charged:
                    self.bodies.charge(who, -charged)
            if reading or status in (408, 413):  # the rest of the body may still be on the way
                extra = {**extra, "Connection": "close"}
            await _answer(send, status, body, extra)

        async def too_many_bodies(send: Send, who: str | None) -> None:
            self._note_shed("bodies")
            err = ApiError(
                429,
                "too_many_bodies",
                f"{who} is already sending {self.bodies.per_address} request bodies at once; "
                "retry once they are done",
                {"Retry-After": "1"},
            )
            await _answer(send, err.status, err.body(), err.headers)

        async def with_body(scope: Scope, receive: Receive, send: Send) -> None:
            """A request with a body outside the ingest POSTs (the report form, the
            operator's JSON endpoints): a budget, a per-address limit and a deadline."""
            if self.body_inflight >= self.limits.body_requests:
                await refuse(send, "bodies", "the server is over capacity; retry shortly")
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            client = scope.get("client")
            who = self._body_owner(headers, client[0] if client else None)
            if not self.bodies.enter(who):
                await too_many_bodies(send, who)
                return
            guard = BodyGuard(receive, send, self.form_timeout_s)
            self.body_inflight += 1
            try:
                await app(scope, guard.receive, guard.send)
            except ClientDisconnect:
                pass  # the client went away or its body came too late: nobody to answer
            finally:
                self.body_inflight -= 1
                self.bodies.leave(who)

        async def counted(
            reason: str,
            attr: str,
            limit: int,
            why: str,
            retry: int,
            scope: Scope,
            receive: Receive,
            send: Send,
        ) -> None:
            """Pass the request on unless `limit` like it (counted in `self.<attr>`) are in
            flight already; a refused one is shed as `reason`, its answer says `why`."""
            if getattr(self, attr) >= limit:
                await refuse(send, reason, why, retry)
                return
            setattr(self, attr, getattr(self, attr) + 1)
            try:
                await app(scope, receive, send)
            finally:
                setattr(self, attr, getattr(self, attr) - 1)

        async def fast(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            kind = PATHS.get(path)
            if kind is not None and scope["method"] == "POST":
                await ingest(kind, scope, receive, send)
            elif scope["method"] not in BODILESS and path not in STREAM_PATHS:
                await with_body(scope, receive, send)
            elif path == HEALTH_PATH:
                await app(scope, receive, send)
            elif path in STREAM_PATHS:
                why = "too many live pages are open; retry later"
                limit = self.limits.streams
                await counted("streams", "streams", limit, why, 30, scope, receive, send)
            else:
                why = "the server is over capacity; retry shortly"
                limit = self.limits.other_requests
                await counted("other", "other_inflight", limit, why, 1, scope, receive, send)

        return fast


async def _answer(send: Send, status: int, body: bytes, extra: Mapping[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})

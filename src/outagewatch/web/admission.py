"""Admission below the framework: what a client's body and an idle connection may hold.

Three guards, each against a way a few sockets could stop a server (issue 14):

- `Bodies` counts the request bodies each client address has in progress (headers in,
  body not complete). Past `MAX_BODIES_PER_ADDRESS` the next request with a body is
  answered 429 at once: two, or two hundred, connections trickling bodies from one address
  hold no more than that many slots. It also counts the ingest body bytes each address
  holds: one address may hold at most a quarter of the ingest budget (ingest.py), so one
  fast sender cannot fill it either. Requests with the operator token are not counted.
- `deadline_receive` gives a request body (the HTML report form, the operator's JSON
  endpoints: any body outside the ingest POSTs, which have `BodyDeadline`) a deadline: a
  body not complete by then is answered 408 with `Connection: close` and the application is
  told the client is gone. Bytes are charged as they arrive (ingest.py), never as declared.
- `GuardedHttp`, the HTTP protocol uvicorn runs, closes a connection whose request head has
  not arrived `HEAD_TIMEOUT_S` after it opened or after its last answer (idle keep-alive
  connections, slow headers), and when `MAX_CONNECTIONS` are open it closes the connection
  idle the longest to make room for the new one: idle sockets can never make `/healthz` or
  anything else unanswerable (uvicorn's own `limit_concurrency`, which answers a bare 503
  to every request while that many connections are open, idle or not, is off).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_BODIES_PER_ADDRESS = 8  # request bodies in progress at once from one client address
FORM_BODY_TIMEOUT_S = 10.0  # a body outside the ingest POSTs (forms, operator JSON)
HEAD_TIMEOUT_S = 10.0  # a connection's request head must arrive within this when idle
KEEP_ALIVE_S = 5.0  # uvicorn's keep-alive timeout after an answer
MAX_CONNECTIONS = 4096  # open connections; past it the longest idle one is closed


class Bodies:
    """Request bodies in progress per client address (bounded: one entry per address
    that has a body in progress right now)."""

    def __init__(self, per_address: int = MAX_BODIES_PER_ADDRESS) -> None:
        self.per_address = per_address
        self._n: dict[str, int] = {}
        self._bytes: dict[str, int] = {}  # ingest body bytes held per address
        self.refused = 0

    def charge(self, address: str, n: int, most: int | None = None, own: int = 0) -> bool:
        """Charge `n` body bytes to `address` (negative: give back); False (nothing
        charged) when that would make it hold more than `most` while its other bodies hold
        some (`own`: what this body holds already; one body alone may always go on, up to
        the body size limit)."""
        before = self._bytes.get(address, 0)
        held = before + n
        if most is not None and n > 0 and held > most and before > own:
            self.refused += 1
            return False
        if held > 0:
            self._bytes[address] = held
        else:
            self._bytes.pop(address, None)
        return True

    def enter(self, address: str | None) -> bool:
        """Count one more body from `address`; False (nothing counted) past its limit."""
        if address is None:
            return True
        n = self._n.get(address, 0)
        if n >= self.per_address:
            self.refused += 1
            return False
        self._n[address] = n + 1
        return True

    def leave(self, address: str | None) -> None:
        if address is None:
            return
        n = self._n.get(address, 0) - 1
        if n > 0:
            self._n[address] = n
        else:
            self._n.pop(address, None)

    def __len__(self) -> int:
        return sum(self._n.values())


def error_message(
    status: int, code: str, message: str, extra: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a JSON error answer that also closes the connection (its
    body may still be on the way)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BodyGuard:
    """One request with a body outside the ingest POSTs: its receive with a deadline, its
    send that drops what the application says after the guard answered 408."""

    def __init__(self, receive: Receive, send: Send, timeout_s: float) -> None:
        self._receive = receive
        self._send = send
        self.timeout_s = timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.complete = False  # the whole body arrived
        self.started = False  # an answer began
        self.expired = False  # answered 408 by the guard

    async def receive(self) -> MutableMapping[str, Any]:
        if self.complete or self.expired:
            if self.expired:
                return {"type": "http.disconnect"}
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                msg = await self._receive()
        except TimeoutError:
            self.expired = True
            if not self.started:
                self.started = True
                for m in error_message(
                    408, "timeout", f"the body did not arrive within {self.timeout_s:g} s"
                ):
                    await self._send(m)
            return {"type": "http.disconnect"}
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            self.complete = True
        return msg

    async def send(self, msg: MutableMapping[str, Any]) -> None:
        if self.expired:
            return
        if msg["type"] == "http.response.start":
            self.started = True
        await self._send(msg)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline and room made for new connections
    by closing the longest idle one (see the module's doc)."""

    head_timeout_s = HEAD_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    _head_timer: asyncio.TimerHandle | None = None

    def _idle_set(self) -> OrderedDict[GuardedHttp, None]:
        state = self.server_state
        idle: OrderedDict[GuardedHttp, None] | None = getattr(state, "_ow_idle", None)
        if idle is None:
            idle = OrderedDict()
            state._ow_idle = idle  # type: ignore[attr-defined]
        return idle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        idle = self._idle_set()
        self._went_idle()
        while len(self.connections) > self.max_connections:
            oldest = next((c for c in idle if c is not self), None)
            if oldest is None:  # every other connection is busy: refuse this one
                idle.pop(self, None)
                transport.close()
                return
            idle.pop(oldest, None)
            oldest.transport.close()
            self.connections.discard(oldest)

    def _went_idle(self) -> None:
        self._idle_set()[self] = None
        self._cancel_head()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_head()
        self._idle_set().pop(self, None)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._went_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        self._idle_set().pop(self, None)
        super().connection_lost(exc)

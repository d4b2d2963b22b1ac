"""What a few sockets may hold (issue 14): bodies charged as received, a per-address limit
on bodies in progress, a deadline on every body, idle connections closed to make room.

In process (the admission layer in front of the app, over the ASGI transport), then the
real `outagewatch serve` process attacked over loopback as the issue describes, bounded
in count and time."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from outagewatch.web.admission import MAX_BODIES_PER_ADDRESS, GuardedHttp
from test_overload import HeldBody, served
from test_server_process import serve
from webutil import free_port, uvicorn_in_thread

JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": "Bearer operator-secret", **JSON}
ITEM = {"service": "x", "country": "US"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Trickle:
    """A body that declares more than it sends: a few bytes, then nothing until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        yield b"["
        self.started.set()
        await self.release.wait()


# ==================================================================== in process
@pytest.mark.anyio
@pytest.mark.slow
async def test_a_declared_length_costs_nothing_until_its_bytes_arrive(tmp_path: Path) -> None:
    async with served(tmp_path) as (ingest, c):
        held = [Trickle() for _ in range(2)]
        declared = {**JSON, "Content-Length": str(1 << 20)}
        slow = [
            asyncio.ensure_future(c.post("/api/v1/reports", content=h(), headers=declared))
            for h in held
        ]
        for h in held:
            await h.started.wait()
        assert ingest.ingest_inflight == 2 and ingest.ingest_bytes == 2  # what arrived
        for k in range(20):  # the public and the operator get through
            r = await c.post("/api/v1/reports", json={**ITEM, "reporter": f"p{k}"})
            assert r.status_code == 202, r.text
            assert (await c.post("/api/v1/reports", json=ITEM, headers=AUTH)).status_code == 202
        for h in held:
            h.release.set()
        for f in slow:
            f.cancel()
        await asyncio.gather(*slow, return_exceptions=True)


@pytest.mark.anyio
@pytest.mark.slow
async def test_one_address_may_have_only_a_few_bodies_in_progress(tmp_path: Path) -> None:
    async with served(tmp_path) as (ingest, c):
        held = [HeldBody() for _ in range(MAX_BODIES_PER_ADDRESS)]
        first = [
            asyncio.ensure_future(c.post("/api/v1/reports", content=h(), headers=JSON))
            for h in held
        ]
        for h in held:
            await h.started.wait()
        assert len(ingest.bodies) == MAX_BODIES_PER_ADDRESS
        r = await c.post("/api/v1/reports", content=HeldBody()(), headers=JSON)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_bodies"
        assert int(r.headers["retry-after"]) >= 1
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post("/services/x/report", content=HeldBody()(), headers=form)
        assert r.status_code == 429
        # The operator token is not counted; reads need no body.
        assert (await c.post("/api/v1/reports", json=ITEM, headers=AUTH)).status_code == 202
        assert (await c.get("/api/v1/services/x")).status_code == 200
        for h in held:
            h.release.set()
        assert [r.status_code for r in await asyncio.gather(*first)] == [202] * len(held)
        assert len(ingest.bodies) == 0
        assert (await c.post("/api/v1/reports", json=ITEM)).status_code == 202


class Chunks:
    """A body sent in the given chunks, then held until released."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        self.started.set()
        await self.release.wait()


@pytest.mark.anyio
async def test_one_address_may_hold_only_a_quarter_of_the_ingest_bytes(tmp_path: Path) -> None:
    async with served(tmp_path) as (ingest, c):
        quarter = ingest.limits.ingest_bytes // 4
        first = Chunks([b"[" + b" " * (quarter - 1000)])
        held = asyncio.ensure_future(c.post("/api/v1/reports", content=first(), headers=JSON))
        await first.started.wait()
        r = await c.post("/api/v1/reports", content=b" " * 2000 + b"{}", headers=JSON)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_bodies"
        assert r.headers["connection"] == "close"
        # Small bodies still fit beside it; the operator is not counted.
        assert (await c.post("/api/v1/reports", json=ITEM)).status_code == 202
        big = b"[" + b",".join([b'{"service":"x","country":"US"}'] * 1000) + b"]"
        assert len(big) > 1000
        r = await c.post("/api/v1/reports", content=big, headers=AUTH)
        assert r.status_code == 202
        first.release.set()
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_form_body_that_does_not_arrive_is_answered_408(tmp_path: Path) -> None:
    async with served(tmp_path) as (ingest, c):
        ingest.form_timeout_s = 0.2
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post("/services/x/report", content=HeldBody()(), headers=form)
        assert r.status_code == 408 and r.json()["error"]["code"] == "timeout"
        assert r.headers["connection"] == "close"
        assert ingest.body_inflight == 0 and len(ingest.bodies) == 0
        assert (await c.get("/services/x")).status_code == 200


# ==================================================================== the real process
@contextmanager
def attacker_sockets(port: int, n: int, head: bytes = b"") -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if head:
                s.sendall(head)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """One byte a second on each socket until `stop`."""
    while not stop.wait(1.0):
        for s in socks:
            with suppress(OSError):
                s.sendall(b" ")


@pytest.mark.slow
def test_two_slow_bodies_do_not_stop_ingest(tmp_path: Path) -> None:
    port = free_port()
    head = (
        b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1048576\r\n\r\n["
    )
    flags = ("--rate-per-ip", "1000000", "--rate-per-block", "1000000")
    with serve(tmp_path / "s.db", port, *flags), attacker_sockets(port, 2, head) as socks:
        stop = threading.Event()
        t = threading.Thread(target=trickle, args=(socks, stop))
        t.start()
        statuses: list[int] = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                end = time.monotonic() + 5
                k = 0
                while time.monotonic() < end:
                    k += 1
                    auth = {"Authorization": "Bearer tok"} if k % 2 else {}
                    item = {**ITEM, "reporter": f"r{k}"}
                    statuses.append(c.post("/api/v1/reports", json=item, headers=auth).status_code)
                    time.sleep(0.02)
        finally:
            stop.set()
            t.join()
        ok = statuses.count(202) / len(statuses)
        assert len(statuses) >= 50 and ok >= 0.9, f"{ok:.0%} of {len(statuses)} answered 202"


@pytest.mark.slow
def test_slow_form_bodies_do_not_refuse_reads_nor_log_tracebacks(tmp_path: Path) -> None:
    port = free_port()
    head = (
        b"POST /services/x/report HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ncs"
    )
    with serve(tmp_path / "f.db", port) as proc:
        base = f"http://127.0.0.1:{port}"
        with attacker_sockets(port, 260, head), httpx.Client(base_url=base, timeout=10) as c:
            time.sleep(0.5)
            for _ in range(3):
                for path in ("/", "/services/x", "/api/v1/services", "/api/v1/incidents"):
                    r = c.get(path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:200])
            assert c.get("/healthz").status_code == 200
        # The attackers went away mid-body: no traceback for that.
        time.sleep(0.5)
        assert httpx.get(f"{base}/healthz").status_code == 200
        proc.terminate()
        proc.wait(20)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_health_answers_under_4096_idle_sockets(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path / "h.db", port), attacker_sockets(port, 4096) as socks:
        time.sleep(0.5)  # all accepted
        t0 = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        assert time.monotonic() - t0 < 5
        # The longest idle was closed to make room: the server reads end-of-file on it.
        socks[0].settimeout(5)
        assert socks[0].recv(10) == b""


class QuickGuard(GuardedHttp):
    head_timeout_s = 0.3


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.mark.slow
def test_idle_and_slow_headed_connections_are_closed_after_the_head_timeout() -> None:
    uv, thread = uvicorn_in_thread(hello, http=QuickGuard)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        with attacker_sockets(port, 2, b"") as (idle, slow):
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never ends its head
            for s in (idle, slow):
                s.settimeout(5)
                t0 = time.monotonic()
                assert s.recv(100) == b""
                assert time.monotonic() - t0 < 2
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"hi"):
                more = s.recv(100)
                assert more, got
                got += more
            assert got.startswith(b"HTTP/1.1 200")
            assert s.recv(100) == b""  # idle after its answer: closed in time too
    finally:
        uv.should_exit = True
        thread.join(10)

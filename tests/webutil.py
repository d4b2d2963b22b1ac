"""Shared helpers for tests of `serve`: an in-process server with a clock the test moves."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvicorn

from outagewatch.bus.base import services_of
from outagewatch.catalog import Catalog
from outagewatch.server import Server
from outagewatch.settings import Settings
from outagewatch.sim.simulate import Surge, demo_traffic, outage_profile, simulate
from outagewatch.web.app import create_app
from outagewatch.web.ingest import ASGIApp

T0 = 1_760_000_400.0  # 2025-10-09T08:20:00Z, a Thursday
TOKEN = "operator-secret"
CLIENT = ("198.51.100.7", 40_000)


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t


@asynccontextmanager
async def running(
    tmp_path: Path,
    clock: Clock,
    *,
    token: str = TOKEN,
    catalog: Catalog | None = None,
    db: str = "t.db",
    history: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    fast: bool = False,
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    """A started server (no wall-clock ticks: the test calls `server.bus.tick()`).

    `flags` are settings by environment name.

    `history` names services that get two days of ordinary traffic before the clock's
    time, imported before the server's first tick (as the demo does), so they can alert.
    """
    given = {"OUTAGEWATCH_DB": str(tmp_path / db), "OUTAGEWATCH_TOKEN": token}
    settings = Settings.resolve({**given, **(flags or {})}, {})

    async def warm(server: Server) -> None:
        await publish(server, history_lines(history, clock.t - 2 * 86_400, 2 * 1440))

    server = Server(
        settings,
        catalog or Catalog.demo(),
        clock=clock,
        tick_interval_s=3600,
        warmup=[warm] if history else [],
    )
    app = create_app(server)
    app.state.live = await server.start()
    # `fast`: what uvicorn serves (ingest POSTs answered before the framework's stack).
    transport = httpx.ASGITransport(app=app.state.ingest.asgi(app) if fast else app, client=CLIENT)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield server, client
    finally:
        await server.stop()


def history_lines(services: tuple[str, ...], start: float, minutes: int) -> list[bytes]:
    """Ordinary traffic of some demo services as per-minute counts (warms baselines)."""
    traffic = [t for t in demo_traffic() if t.service in services]
    return list(simulate(traffic, start, minutes, seed=3, aggregate=True).lines)


def warm_db(db: Path) -> None:
    """Two days of X's ordinary traffic, up to a few minutes ago, replayed into `db` by the
    CLI in its own process (a server started on it has a warm baseline)."""
    m_now = int(time.time() // 60)
    hist = db.with_name(db.stem + "-history.ndjson")
    hist.write_bytes(b"\n".join(history_lines(("x",), (m_now - 2 * 1440) * 60, 2 * 1440 - 6)))
    done = subprocess.run(
        [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "replay", "--no-progress",
         str(hist)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def post_x_surge(c: httpx.Client, headers: dict[str, str]) -> None:
    """A surge on X through `POST /api/v1/reports`: 250 distinct people a minute over the
    three minutes before the current one, every item accepted."""
    start = (int(time.time() // 60) - 3) * 60.0
    for k in range(3):
        t0 = start + k * 60
        items = [
            {"service": "x", "country": "US", "reporter": f"p{k}-{i}", "ts": t0 + i * 0.2}
            for i in range(250)
        ]
        r = c.post("/api/v1/reports", json=items, headers=headers)
        assert r.status_code == 202 and r.json()["accepted"] == 250, r.text


def outage_lines(service: str, start: float, countries: dict[str, float]) -> list[bytes]:
    """A sharp outage from `start`: ~300 reports/min for 8 minutes, distinct people."""
    traffic = [t for t in demo_traffic() if t.service == service]
    surge = Surge(service, start, outage_profile(300, 1, 8, 2), countries=countries)
    sim = simulate(traffic, start, 12, [surge], seed=5, with_ip=True)
    return list(sim.lines)


async def publish(server: Server, lines: list[bytes]) -> None:
    assert server.bus is not None
    for i in range(0, len(lines), 5000):
        chunk = lines[i : i + 5000]
        await server.bus.publish(chunk, services_of(chunk))


async def outage(
    server: Server, clock: Clock, service: str = "x", countries: dict[str, float] | None = None
) -> None:
    """An outage of `service` (warmed with `history`) from the clock's time, 12 minutes on."""
    assert server.bus is not None
    await publish(server, outage_lines(service, clock.t, countries or {"US": 0.7, "GB": 0.3}))
    clock.t += 12 * 60
    await server.bus.tick(clock.t)


def report(**fields: object) -> bytes:
    return msgspec.json.encode({"type": "report", **fields})


def uvicorn_in_thread(
    app: ASGIApp, port: int = 0, **config: Any
) -> tuple[uvicorn.Server, threading.Thread]:
    """A real uvicorn serving `app` on loopback `port` (0: a free one; then
    `server.servers[0].sockets[0]` has it), in a daemon thread, started; stop with
    `should_exit = True`. `config`: more uvicorn.Config settings."""
    conf = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        **config,
    )
    uv = uvicorn.Server(conf)
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    return uv, thread


def wait_ready(
    base: str, proc: subprocess.Popen[bytes], why: Callable[[], str], timeout: float = 60
) -> None:
    """Wait until the process at `base` answers /healthz 200; fail with `why()` (its
    output, say) if it exits or takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start: {why()}")
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, cond: Callable[[], bool], timeout: float) -> float:
    """Poll `cond` every 0.2 s until it holds; the seconds it took (AssertionError naming
    `what` after `timeout`)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - t0


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every process still running, then wait for each (killed after `timeout`)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

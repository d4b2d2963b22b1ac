"""Shared helpers for tests of `serve`: an in-process server with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from outagewatch.catalog import Catalog
from outagewatch.settings import Settings
from outagewatch.simulate import Surge, demo_traffic, outage_profile, simulate
from outagewatch.web.app import Server, create_app

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


def outage_lines(service: str, start: float, countries: dict[str, float]) -> list[bytes]:
    """A sharp outage from `start`: ~300 reports/min for 8 minutes, distinct people."""
    traffic = [t for t in demo_traffic() if t.service == service]
    surge = Surge(service, start, outage_profile(300, 1, 8, 2), countries=countries)
    sim = simulate(traffic, start, 12, [surge], seed=5, with_ip=True)
    return list(sim.lines)


async def publish(server: Server, lines: list[bytes]) -> None:
    assert server.bus is not None
    for i in range(0, len(lines), 5000):
        await server.bus.publish(lines[i : i + 5000], [])


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

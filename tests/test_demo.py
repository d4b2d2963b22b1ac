"""The demo: its feed through the real server, on a clock the test moves minute by minute.

The README promises that within 3 minutes of starting the demo a person sees an incident
open, peak and resolve: at the default speed of 20 that is 60 simulated minutes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from outagewatch.bus.base import services_of
from outagewatch.incidents.severity import public
from outagewatch.runtime.demo import CYCLE_MIN, FLOOD_START_MIN, DemoClock, DemoFeed, load_history
from outagewatch.server import Server
from outagewatch.settings import Settings
from webutil import Clock

pytestmark = pytest.mark.anyio
T0 = 1_763_800_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).timestamp()


async def test_the_demo_shows_each_scenario(tmp_path: Path) -> None:
    clock = Clock(T0)
    feed = DemoFeed(DemoClock(speed=20, wall0=T0, sim0=T0, wall=clock))

    async def history(server: Server) -> None:
        await load_history(server, feed)

    settings = Settings.resolve({"OUTAGEWATCH_DB": str(tmp_path / "d.db")}, {})
    server = Server(settings, feed.catalog, clock=clock, tick_interval_s=3600, warmup=[history])
    live = await server.start()
    assert server.bus is not None
    try:
        t = feed.start
        end = feed.first + 4 * CYCLE_MIN * 60
        while t < end:
            minute = feed.minute(t)
            await server.bus.publish(minute, services_of(minute))
            t += 60
            clock.t = t
            await server.bus.tick()
        docs = live.incidents()
        # What the pages read from the store (not the engine's memory) has them too: the
        # minutes the events themselves closed were committed.
        assert server.reader is not None
        stored = {d["id"]: d["status"] for d in server.reader.incidents()}
    finally:
        await server.stop()
    resolved = {str(d["id"]) for d in docs if d["status"] == "resolved"}
    assert resolved and all(stored.get(i) == "resolved" for i in resolved), stored
    by_service: dict[str, list[dict[str, object]]] = {}
    for d in docs:
        by_service.setdefault(str(d["service"]), []).append(d)
    # 1. X at night, US and UK: opens, peaks and resolves within 60 simulated minutes.
    x_night = min(by_service["x"], key=lambda d: str(d["started_at"]))
    assert epoch(str(x_night["started_at"])) - feed.start <= 5 * 60
    assert x_night["status"] == "resolved"
    assert epoch(str(x_night["ended_at"])) - feed.start <= 60 * 60
    countries = [c["country"] for c in x_night["countries"]]  # type: ignore[attr-defined]
    assert countries[:2] == ["US", "GB"]
    # 2. Meta's apps, WhatsApp fine.
    for sid in ("facebook", "instagram", "messenger"):
        assert sid in by_service, sid
    assert "whatsapp" not in by_service
    # 3. Cloudflare with Discord.
    assert "cloudflare" in by_service and "discord" in by_service
    # 4. X Spaces: a second X incident, mostly `spaces` problems.
    spaces = max(by_service["x"], key=lambda d: str(d["started_at"]))
    assert spaces is not x_night
    assert spaces["problems"][0]["problem"] == "spaces"  # type: ignore[index]

    # The causes the demo is there to show, with their clusters.
    def top(d: dict[str, object]) -> str:
        return str(d["causes"][0]["kind"])  # type: ignore[index]

    for sid in ("facebook", "instagram", "messenger"):
        (d,) = by_service[sid]
        assert top(d) == "shared_platform"
        assert d["cluster"]["key"] == "meta"  # type: ignore[index]
    for sid in ("discord", "shopify"):
        (d,) = by_service[sid]
        assert top(d) == "upstream" and "cloudflare" in str(d["causes"])
    assert top(spaces) == "capacity"
    assert "spaces_listeners" in " ".join(spaces["causes"][0]["evidence"])  # type: ignore[index]
    # The bot flood (30,000 reports from 25 ids behind 4 addresses) is at most a suspected
    # flood, never a public incident; no false incident at all: only the services the
    # scenarios break.
    flood = feed.minute(feed.first + FLOOD_START_MIN * 60)
    assert sum(b'"reporter":"bot-' in line for line in flood) == 2_000  # it did flood
    for d in by_service.pop("netflix", []):
        assert d["suspected_abuse"] is True and not public(d), d
    expected = {"x", "facebook", "instagram", "messenger", "threads"}
    expected |= {"cloudflare", "discord", "shopify"}
    assert set(by_service) <= expected
    assert not any(d["suspected_abuse"] for ds in by_service.values() for d in ds)

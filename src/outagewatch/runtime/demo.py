"""`outagewatch demo`: `serve` on the built-in catalog with a simulated live crowd.

The demo runs on its own clock: simulated time starts at the wall clock and runs `speed`
times faster, and the server's pipeline is driven by that clock (the same code path as
`serve`, only the clock differs). Before the server opens, two days of ordinary traffic
are imported as per-minute counts so every baseline is warm. Then, minute by simulated
minute, the feed publishes ordinary reports from thousands of simulated people plus,
every cycle, outages modelled on the seed articles:

1. X down at night for US and UK users (a sharp surge, then back to normal);
2. Meta's apps down together (Facebook, Instagram, Messenger, Threads) while WhatsApp is
   fine and X gets more ordinary visitors;
3. Cloudflare failing and taking Discord and Shopify with it;
4. a capacity failure on X Spaces: listeners pass ~0.9 million, errors climb, reports of
   `spaces` problems surge, with X's telemetry (load, traffic, sources, errors) posted.

During the first scenario a bot floods Netflix with 2,000 reports a minute for 15 minutes
from 25 ids behind 4 addresses (the 30,000-report flood of issue 8). Deduplication counts
each id once per 15 minutes, but even that is a surge for Netflix at night: an incident
opens, and the abuse checks mark it `suspected_abuse` (its counted reports come from about
4 address blocks, from reporters who each sent ~1,000), so it stays off the public status,
the feed and alerts, and its page says why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from outagewatch.bus.base import services_of
from outagewatch.catalog import Catalog
from outagewatch.errors import OverloadedError
from outagewatch.events import iso
from outagewatch.sim.scenarios import flood_events, to_lines
from outagewatch.sim.simulate import Bump, Surge, demo_traffic, outage_profile, simulate

if TYPE_CHECKING:
    from outagewatch.server import Server

log = logging.getLogger(__name__)

CYCLE_MIN = 60  # simulated minutes between the starts of two scenarios
FLOOD_START_MIN = 20
HISTORY_DAYS = 2
_ENCODE = msgspec.json.Encoder().encode


@dataclass
class DemoClock:
    """Simulated time: starts at the wall clock and runs `speed` times faster."""

    speed: float = 20.0
    wall0: float = field(default_factory=time.time)
    sim0: float = 0.0
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.sim0 == 0.0:
            self.sim0 = self.wall0

    def __call__(self) -> float:
        return self.sim0 + (self.wall() - self.wall0) * self.speed

    def wall_seconds_until(self, sim_t: float) -> float:
        return max(0.0, (sim_t - self()) / self.speed)


@dataclass(frozen=True)
class Scenario:
    name: str
    surges: tuple[Surge, ...]
    bumps: tuple[Bump, ...] = ()
    capacity: bool = False  # post X's telemetry of a capacity failure
    flood: bool = False  # a bot flood on Netflix from FLOOD_START_MIN for 15 minutes


def scenario(k: int, start: float) -> Scenario:
    """The k-th scenario of the cycle, starting at `start` (simulated epoch seconds)."""
    kind = k % 4
    if kind == 0:
        return Scenario(
            "X down at night for US and UK users",
            (
                Surge(
                    "x",
                    start,
                    outage_profile(260, 2, 6, 4),
                    countries={"US": 0.75, "GB": 0.25},
                    problems={"app": 0.55, "website": 0.25, "login": 0.2},
                    name=f"x-night-{k}",
                ),
            ),
            flood=True,
        )
    if kind == 1:
        meta = {"login": 0.45, "app": 0.3, "website": 0.15, "feed": 0.1}
        return Scenario(
            "Meta's apps down together; WhatsApp fine",
            (
                Surge("facebook", start, outage_profile(220, 2, 10, 4), problems=meta),
                Surge("instagram", start + 60, outage_profile(150, 2, 9, 4), problems=meta),
                Surge(
                    "messenger",
                    start + 60,
                    outage_profile(60, 2, 9, 4),
                    problems={"messages": 0.5, "login": 0.3, "app": 0.2},
                ),
                Surge(
                    "threads",
                    start + 120,
                    outage_profile(30, 2, 8, 4),
                    problems={"login": 0.4, "app": 0.4, "website": 0.2},
                ),
            ),
            (Bump("x", start, 20, 1.25),),
        )
    if kind == 2:
        return Scenario(
            "Cloudflare fails; Discord and Shopify with it",
            (
                Surge("cloudflare", start, outage_profile(90, 2, 8, 4)),
                Surge("discord", start + 60, outage_profile(160, 2, 8, 4)),
                Surge("shopify", start + 60, outage_profile(40, 2, 8, 4)),
            ),
        )
    return Scenario(
        "X Spaces breaks under 1.3 million listeners",
        (
            Surge(
                "x",
                start + 120,
                outage_profile(180, 2, 8, 4),
                problems={"spaces": 0.8, "app": 0.2},
            ),
        ),
        capacity=True,
    )


def x_telemetry(t: float, capacity_start: float | None) -> list[dict[str, object]]:
    """X's operator telemetry for minute `t`: load, traffic, sources, errors, latency.

    Ordinary: ~200k Spaces listeners on a daily cycle, requests in proportion, errors near
    0.2%. During a capacity event, listeners ramp to 1.3M over 16 minutes and are capped
    at 0.8M from minute 16; errors climb once listeners pass 0.9M.
    """
    day = 0.5 + 0.5 * math.sin(2 * math.pi * ((t / 86_400) % 1.0))
    listeners = 150_000 + 100_000 * day
    if capacity_start is not None and 0 <= t - capacity_start < 30 * 60:
        m = (t - capacity_start) / 60
        listeners = min(1_300_000.0, listeners + 80_000 * m) if m < 16 else 800_000.0
    over = max(0.0, listeners - 900_000) / 400_000
    error_rate = 0.002 + 0.25 * over
    rps = listeners * 0.9 + 50_000
    return [
        {"type": "metric", "service": "x", "ts": t, "name": name, "value": round(v, 4)}
        for name, v in (
            ("spaces_listeners", listeners),
            ("requests_per_second", rps),
            ("unique_client_ips", listeners * 0.7),
            ("error_rate", error_rate),
            ("p99_ms", 180 + 2_000 * over),
        )
    ]


class DemoFeed:
    """Generates the simulated crowd and telemetry, one simulated minute at a time."""

    def __init__(self, clock: DemoClock, catalog: Catalog | None = None) -> None:
        self.clock = clock
        self.catalog = catalog or Catalog.demo()
        self.traffic = [t for t in demo_traffic() if t.service in self.catalog.services]
        start = math.floor(clock() / 60) * 60
        self.start = start
        self.first = start + 3 * 60  # the first outage starts three simulated minutes in
        self.current: list[str] = []

    def history(self) -> list[bytes]:
        """Two days of ordinary traffic before the start, as per-minute counts."""
        minutes = HISTORY_DAYS * 1440
        sim = simulate(self.traffic, self.start - minutes * 60, minutes, seed=7, aggregate=True)
        lines = list(sim.lines)
        for m in range(minutes):
            t = self.start - (minutes - m) * 60
            lines += [_ENCODE(e) for e in x_telemetry(t, None)]
        return lines

    def scenario_at(self, t: float) -> tuple[int, float, Scenario] | None:
        if t < self.first:
            return None
        k = int((t - self.first) // (CYCLE_MIN * 60))
        s0 = self.first + k * CYCLE_MIN * 60
        return k, s0, scenario(k, s0)

    def minute(self, t: float) -> list[bytes]:
        """Every event of the simulated minute starting at `t`."""
        surges: list[Surge] = []
        bumps: list[Bump] = []
        capacity_start = None
        flood = False
        got = self.scenario_at(t)
        # The previous scenario's tail may still run into this minute.
        prev = self.scenario_at(t - CYCLE_MIN * 60) if got is not None else None
        for item in (prev, got):
            if item is None:
                continue
            _, s0, sc = item
            surges += sc.surges
            bumps += sc.bumps
            if sc.capacity:
                capacity_start = s0
            if sc.flood and 0 <= t - s0 - FLOOD_START_MIN * 60 < 15 * 60:
                flood = True
        self.current = [] if got is None else [got[2].name]
        sim = simulate(
            self.traffic,
            t,
            1,
            surges,
            bumps,
            seed=int(t // 60) % 1_000_000,
            with_ip=True,
        )
        # The simulator numbers its people from p0 in every call: make them people of this
        # minute, or deduplication would take them for the same people each minute.
        tag = b'"reporter":"%d-' % int(t // 60)
        lines = [line.replace(b'"reporter":"', tag) for line in sim.lines]
        lines += [_ENCODE(e) for e in x_telemetry(t, capacity_start)]
        if flood:
            lines += flood_lines(t)
        return lines


def flood_lines(t: float) -> list[bytes]:
    """One minute of a bot flood: 2,000 Netflix reports from 25 ids behind 4 addresses (the
    bot of the `bot_flood` scenario, sending by a timer)."""
    bot = flood_events("netflix", t, seed=0, ids=25, addresses=4, regular=True, minutes=1)
    return to_lines(bot)


async def load_history(server: Server, feed: DemoFeed) -> None:
    """Warm every baseline before the server opens (runs before its first tick)."""
    assert server.bus is not None
    lines = await asyncio.to_thread(feed.history)
    for i in range(0, len(lines), 5000):
        chunk = lines[i : i + 5000]
        await server.bus.publish(chunk, services_of(chunk))
    log.warning("demo: imported %s lines of history (%d days)", f"{len(lines):,}", HISTORY_DAYS)


async def run_feed(server: Server, feed: DemoFeed) -> None:
    """The live loop: publish each simulated minute as it begins."""
    assert server.bus is not None
    bus = server.bus
    t = feed.start
    while True:
        lines = await asyncio.to_thread(feed.minute, t)
        for i in range(0, len(lines), 1000):
            chunk = lines[i : i + 1000]
            while True:
                try:
                    await bus.publish(chunk, services_of(chunk))
                    break
                except OverloadedError as exc:  # the server sheds load: wait, try again
                    await asyncio.sleep(exc.retry_after)
        got = feed.scenario_at(t)
        if got is not None and t == got[1]:
            log.warning("demo: %s (simulated %s)", got[2].name, iso(t)[11:16])
        t += 60
        await asyncio.sleep(feed.clock.wall_seconds_until(t))

"""Probes, probe agents, official status pages and alerts, wired into the real server.

Every remote end is a real server on loopback (tests/loopback.py); the private-address
guard is lifted for them with OUTAGEWATCH_ALLOW_PRIVATE_TARGETS, as a deployment would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.alerts.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from outagewatch.catalog import Catalog
from outagewatch.probes.agent import ProbeAgent
from outagewatch.server import Server
from outagewatch.store.sqlite import SQLiteStore
from webutil import TOKEN, Clock, outage, outage_lines, publish, running

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PRIVATE = {"OUTAGEWATCH_ALLOW_PRIVATE_TARGETS": "1"}
DEMO = (Path(__file__).resolve().parents[1] / "src/outagewatch/data/demo_catalog.toml").read_text()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def with_probe(url: str, extra: str = "") -> Catalog:
    """The demo catalog with a public probe on X (and `extra` TOML)."""
    text = DEMO + f'\n[[services.x.probes]]\nurl = "{url}"\nsite = "public"\ninterval_s = 5\n'
    return Catalog.from_toml(text + extra)


def stored(server: Server, kind: str) -> list[dict[str, Any]]:
    assert server.engine is not None
    store = server.engine.store
    assert isinstance(store, SQLiteStore)
    rows = store.db.execute("SELECT body FROM events WHERE type = ? ORDER BY seq", (kind,))
    return [json.loads(r[0]) for r in rows]


async def until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
async def test_failing_public_probes_confirm_the_incident(tmp_path: Path) -> None:
    with LoopbackServer(lambda r: Reply(503, b"down")) as target:
        catalog = with_probe(f"http://127.0.0.1:{target.port}/health")
        clock = Clock()
        async with running(tmp_path, clock, catalog=catalog, history=("x",), flags=PRIVATE) as (
            server,
            c,
        ):
            assert server.probes is not None
            await until("the first probe", lambda: len(target.requests) >= 1)
            # The outage, minute by minute, with a probe round in each minute.
            assert server.bus is not None
            await publish(server, outage_lines("x", clock.t, {"US": 0.7, "GB": 0.3}))
            for _ in range(12):
                await server.probes.run_once()
                clock.t += 60
                await server.bus.tick()
            probes = stored(server, "probe")
            assert probes and probes[0]["ok"] is False and probes[0]["status"] == 503
            assert probes[0]["site"] == "public"
            (inc,) = (await c.get("/api/v1/incidents")).json()
            assert inc["service"] == "x" and inc["probe_confirmed"] is True


@pytest.mark.slow
async def test_two_agents_at_two_vantages(tmp_path: Path) -> None:
    with LoopbackServer(lambda r: Reply(200, b"fine")) as target:
        catalog = with_probe(f"http://127.0.0.1:{target.port}/")
        # The agents stamp results with the wall clock: so does this server.
        clock = Clock(time.time())
        async with running(tmp_path, clock, catalog=catalog, flags=PRIVATE) as (server, c):
            transport = c._transport  # the same in-process app the test client talks to
            for vantage in ("eu-west", "us-east"):
                poster = httpx.AsyncClient(transport=transport)
                agent = ProbeAgent(
                    catalog,
                    server="http://test",
                    vantage=vantage,
                    token=TOKEN,
                    allow_private=True,
                    poster=poster,
                )
                try:
                    assert await agent.run_once() == 0  # nothing left unsent
                finally:
                    await agent.close()
                    await poster.aclose()
            assert server.bus is not None
            await server.bus.tick(commit=True)
            vantages = {p.get("vantage") for p in stored(server, "probe")}
            assert {"eu-west", "us-east"} <= vantages


class Hooks:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.got: list[dict[str, Any]] = []
        self.bad = 0
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        ok = verify_signature(
            self.secret,
            req.headers.get(TIMESTAMP_HEADER, ""),
            req.body,
            req.headers.get(SIGNATURE_HEADER, ""),
        )
        if not ok:
            self.bad += 1
            return Reply(401, b"bad signature")
        self.got.append(json.loads(req.body))
        return Reply(200, b"ok")

    def kinds(self) -> list[str]:
        return [str(g["kind"]) for g in self.got]


@pytest.mark.slow
async def test_alerts_once_for_open_and_once_for_resolve_across_a_restart(
    tmp_path: Path,
) -> None:
    secret = "a-webhook-secret-of-some-length"
    hooks = Hooks(secret)
    clock = Clock()
    with hooks.server:
        url = f"http://127.0.0.1:{hooks.server.port}/hook"
        async with running(tmp_path, clock, history=("x",), flags=PRIVATE) as (server, c):
            r = await c.post(
                "/api/v1/subscriptions",
                json={"channel": "webhook", "service": "x", "url": url, "secret": secret},
                headers=AUTH,
            )
            assert r.status_code == 201, r.text
            assert (await c.post("/api/v1/subscriptions", json={})).status_code == 401
            await outage(server, clock)
            assert server.alerter is not None
            await until("the opened alert", lambda: "opened" in hooks.kinds())
            await server.alerter.idle(10)
        # Restart on the same database: nothing is sent again; the resolve is sent once.
        async with running(tmp_path, clock, flags=PRIVATE) as (server, c):
            clock.t += 3600
            assert server.bus is not None and server.alerter is not None
            await server.bus.tick()
            await until("the resolved alert", lambda: "resolved" in hooks.kinds())
            await server.alerter.idle(10)
            log = (await c.get("/api/v1/deliveries", headers=AUTH)).json()
        assert hooks.bad == 0
        assert hooks.kinds().count("opened") == 1
        assert hooks.kinds().count("resolved") == 1
        assert all(g["service"] == "x" for g in hooks.got)
        assert {d["status"] for d in log} == {"sent"}


@pytest.mark.slow
async def test_the_official_status_page_shows_on_the_incident(tmp_path: Path) -> None:
    summary = {
        "page": {"name": "X"},
        "status": {"indicator": "major", "description": "Partial System Outage"},
        "incidents": [{"name": "Timeline not loading", "status": "investigating"}],
    }
    body = json.dumps(summary).encode()
    with LoopbackServer(lambda r: Reply(200, body, {"Content-Type": "application/json"})) as page:
        extra = (
            "\n[services.x.status_page]\n"
            f'url = "http://127.0.0.1:{page.port}/api/v2/summary.json"\n'
            'kind = "statuspage"\ninterval_s = 5\n'
        )
        catalog = Catalog.from_toml(DEMO + extra)
        clock = Clock()
        async with running(tmp_path, clock, catalog=catalog, history=("x",), flags=PRIVATE) as (
            server,
            c,
        ):
            assert server.poller is not None
            await until("the first poll", lambda: len(page.requests) >= 1)
            await outage(server, clock)
            (inc,) = (await c.get("/api/v1/incidents")).json()
            official = inc["official_status"]
            assert official["indicator"] == "major"
            assert official["incident"] == "Timeline not loading"
            html = (await c.get(f"/incidents/{inc['id']}")).text
            assert "major" in html and "since" in html and "Timeline not loading" in html

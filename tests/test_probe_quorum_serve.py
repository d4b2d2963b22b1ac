"""Probes as a detection signal in a real server: probe-only outages from the quorum of
vantages (two probe agents and the server's own scheduler), partial verdicts, and silence.

The target is a real HTTP server on loopback that fails for the vantages a test names (it
tells them apart by the agents' User-Agent); the agents fetch their probe list from the
server (GET /api/v1/probes/config) and post through the same in-process app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.catalog import Catalog
from outagewatch.probes.agent import ProbeAgent
from outagewatch.server import Server
from webutil import TOKEN, Clock, running, stop_processes

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLAGS = {"OUTAGEWATCH_ALLOW_PRIVATE_TARGETS": "1", "OUTAGEWATCH_LATENESS_S": "0"}
# The reports' lateness (5 minutes by default) does not delay probe verdicts.
LATENESS = pytest.mark.parametrize("lateness", ["0", "300"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Target:
    """Answers 503 to the vantages in `failing` ("local": the server itself), else 200."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        ua = req.headers.get("User-Agent", "")
        vantage = ua.split("(vantage ", 1)[1].rstrip(")") if "(vantage " in ua else "local"
        return Reply(503, b"down") if vantage in self.failing else Reply(200, b"fine")


def catalog(url: str, extra: str = "") -> Catalog:
    """`shop` with a public probe on `url` (and `extra` TOML), and `other` with no source."""
    return Catalog.from_toml(
        f'[services.shop]\nname = "Shop"\n[[services.shop.probes]]\nurl = "{url}"\n'
        f'interval_s = 60\n{extra}[services.other]\nname = "Other"\n'
    )


async def check_round(server: Server, c: httpx.AsyncClient, clock: Clock) -> None:
    """One check from each vantage in the current minute; then the minute closes."""
    assert server.probes is not None and server.bus is not None
    await server.probes.run_once()
    for vantage in ("eu-west", "us-east"):
        agent = ProbeAgent(
            None,
            server="http://test",
            vantage=vantage,
            token=TOKEN,
            allow_private=True,
            poster=c,
            clock=clock,
        )
        assert await agent.run_once() == 0
    clock.t += 60
    await server.bus.tick()


async def shop(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/api/v1/services/shop")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


async def until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@LATENESS
@pytest.mark.slow
async def test_quorum_outage_partial_problems_and_recovery(tmp_path: Path, lateness: str) -> None:
    target = Target()
    alerts: list[dict[str, Any]] = []

    def hook(req: Request) -> Reply:
        alerts.append(json.loads(req.body))
        return Reply(200, b"ok")

    hooks = LoopbackServer(hook)
    with target.server, hooks:
        url = f"{target.server.url}/health"
        clock = Clock()
        flags = {**FLAGS, "OUTAGEWATCH_LATENESS_S": lateness}
        async with running(tmp_path, clock, catalog=catalog(url), flags=flags) as (server, c):
            assert server.probes is not None
            for task in server.probes._tasks:  # the test runs the rounds itself
                task.cancel()
            config = (await c.get("/api/v1/probes/config", headers=AUTH)).json()
            assert config[0]["service"] == "shop" and config[0]["url"] == url
            assert config[0]["interval_s"] == 60
            assert (await c.get("/api/v1/probes/config")).status_code == 401
            sub = {"channel": "webhook", "service": "shop", "url": f"{hooks.url}/hook",
                   "min_severity": "outage"}  # fmt: skip
            assert (
                await c.post("/api/v1/subscriptions", json=sub, headers=AUTH)
            ).status_code == 201
            for _ in range(2):
                await check_round(server, c, clock)
            doc = await shop(c)
            assert doc["status"] == "ok" and doc["status_detail"] is None
            assert {p["vantage"] for p in doc["probes"]} == {"local", "eu-west", "us-east"}
            assert all(p["ok"] and p["status"] == 200 for p in doc["probes"])
            # The target fails for two of the three vantages: an outage within 2 checks.
            target.failing = {"eu-west", "us-east"}
            failed_at = clock.t
            await check_round(server, c, clock)
            assert (await shop(c))["status"] == "ok"  # one failed check: not yet
            await check_round(server, c, clock)
            doc = await shop(c)
            assert doc["status"] == "outage" and doc["incident"] is not None
            assert doc["status_detail"] == "failing from eu-west, us-east only; fine from local"
            down = {p["vantage"]: p for p in doc["probes"]}
            assert down["eu-west"]["ok"] is False and down["eu-west"]["status"] == 503
            (inc,) = (await c.get("/api/v1/incidents")).json()
            assert inc["detected_by"] == ["probes"] and inc["total_reports"] == 0
            assert inc["started_at"] == _iso(failed_at)
            assert inc["detected_at"] == _iso(failed_at + 120)  # the end of the 2nd check's minute
            html = (await c.get("/services/shop")).text
            assert "eu-west" in html and "failing from eu-west, us-east only" in html
            html = (await c.get(f"/incidents/{inc['id']}")).text
            assert 'data-detected-by="probes"' in html
            # A probe-only incident alerts like any other (it is an outage).
            await until("the opened alert", lambda: [a["kind"] for a in alerts] == ["opened"])
            # Back for everyone: two good checks resolve it.
            target.failing = set()
            for _ in range(2):
                await check_round(server, c, clock)
            (inc,) = (await c.get("/api/v1/incidents")).json()
            assert inc["status"] == "resolved"
            await until("the resolved alert", lambda: len(alerts) == 2)
            assert [a["kind"] for a in alerts] == ["opened", "resolved"]
            assert all(a["service"] == "shop" for a in alerts)
            assert (await shop(c))["status"] == "ok"
            # One vantage of three fails: problems, with the sentence; never an outage.
            target.failing = {"eu-west"}
            for _ in range(4):
                await check_round(server, c, clock)
            doc = await shop(c)
            assert doc["status"] == "problems" and doc["incident"] is None
            assert doc["status_detail"] == "failing from eu-west only; fine from local, us-east"
            assert len((await c.get("/api/v1/incidents")).json()) == 1
            summary = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert summary == {"shop": "problems", "other": "ok"}


def _iso(ts: float) -> str:
    from outagewatch.events import iso

    return iso(ts)


@LATENESS
@pytest.mark.slow
async def test_silent_sources_show_unknown_and_so_does_a_stale_tracker(
    tmp_path: Path, lateness: str
) -> None:
    """Every source of `shop` (its probe, its status page) stops: `unknown`, not `ok`; a
    service without sources stays `ok`; a tracker whose pipeline stopped shows `unknown`."""
    target = Target()
    page = LoopbackServer(
        lambda r: Reply(200, b'{"status": {"indicator": "none", "description": "All good"}}')
    )
    with target.server, page:
        extra = (
            f'[services.shop.status_page]\nurl = "{page.url}/api/v2/summary.json"\n'
            "interval_s = 60\n"
        )
        clock = Clock()
        flags = {**FLAGS, "OUTAGEWATCH_LATENESS_S": lateness}
        cat = catalog(f"{target.server.url}/health", extra)
        status_page = cat.services["shop"].status_page
        assert status_page is not None
        async with running(tmp_path, clock, catalog=cat, flags=flags) as (server, c):
            assert server.probes is not None and server.poller is not None
            assert server.bus is not None
            for task in [*server.probes._tasks, *server.poller._tasks]:
                task.cancel()
            for _ in range(2):
                await check_round(server, c, clock)
                await server.poller.poll("shop", status_page)
            doc = await shop(c)
            assert doc["status"] == "ok"
            html = (await c.get("/services/shop")).text
            assert 'id="official-status" data-indicator="none"' in html
            # The page says major: an outage detected by the status page alone.
            page.handler = lambda r: Reply(200, b'{"status": {"indicator": "major"}}')
            clock.t += 10  # later in the minute of the last poll
            await server.poller.poll("shop", status_page)
            await check_round(server, c, clock)
            doc = await shop(c)
            assert doc["status"] == "outage"
            assert doc["status_detail"] == "its own status page says major"
            (inc,) = (await c.get("/api/v1/incidents")).json()
            assert inc["detected_by"] == ["status_page"]
            page.handler = lambda r: Reply(200, b'{"status": {"indicator": "none"}}')
            await server.poller.poll("shop", status_page)
            await check_round(server, c, clock)
            (inc,) = (await c.get("/api/v1/incidents")).json()
            assert inc["status"] == "resolved"
            # Nothing from any source for three intervals (the server keeps ticking).
            for _ in range(4):
                clock.t += 60
                await server.bus.tick()
            doc = await shop(c)
            assert doc["status"] == "unknown"
            assert doc["status_detail"] == "no fresh data from its probes or status page"
            summary = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert summary == {"shop": "unknown", "other": "ok"}
            # A source speaks again: known again.
            await check_round(server, c, clock)
            assert (await shop(c))["status"] == "ok"
            # The tracker's own pipeline stops moving: everything is unknown.
            clock.t += 600
            summary = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert summary == {"shop": "unknown", "other": "unknown"}
            assert (
                (await c.get("/api/v1/services/other"))
                .json()["status_detail"]
                .startswith("no fresh data since")
            )


def test_a_real_serve_opens_a_probe_only_incident_within_two_checks(tmp_path: Path) -> None:
    """A real `serve` process with the default lateness (5 minutes), its own probes and a
    real `probe-agent` process (two vantages, 5 s checks) against a target that starts
    answering 503: the incident opens when the first minute with failed checks closes, not
    five minutes later."""
    import os
    import subprocess
    import sys
    import time

    from outagewatch.events import epoch_of
    from webutil import free_port

    target = Target()
    with target.server:
        cat = tmp_path / "catalog.toml"
        cat.write_text(
            f'[services.shop]\nname = "Shop"\n[[services.shop.probes]]\n'
            f'url = "{target.server.url}/health"\ninterval_s = 5\ntimeout_s = 2\n'
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OUTAGEWATCH_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
               "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS": "1"}  # fmt: skip
        env.pop("OUTAGEWATCH_LATENESS_S", None)
        common = [sys.executable, "-m", "outagewatch.cli", "--db", str(tmp_path / "ow.db")]
        log = (tmp_path / "serve.log").open("wb")
        procs = [
            subprocess.Popen([*common, "--catalog", str(cat), "serve", "--port", str(port)],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
        ]  # fmt: skip
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            alog = (tmp_path / "agent.log").open("wb")
            procs.append(
                subprocess.Popen([*common, "probe-agent", "--server", base, "--vantage",
                                  "eu-west"], stdout=alog, stderr=subprocess.STDOUT, env=env)
            )  # fmt: skip

            def vantages() -> set[str]:
                doc = httpx.get(f"{base}/api/v1/services/shop", timeout=10).json()
                return {p["vantage"] for p in doc["probes"] if p["ok"]}

            for _ in range(600):
                if vantages() == {"local", "eu-west"}:
                    break
                time.sleep(0.1)
            assert vantages() == {"local", "eu-west"}
            target.failing = {"local", "eu-west"}
            failed_at = time.time()
            incidents: list[dict[str, Any]] = []
            while not incidents and time.time() - failed_at < 200:
                time.sleep(0.5)
                incidents = httpx.get(f"{base}/api/v1/incidents", timeout=10).json()
            opened = time.time() - failed_at
            print(f"probe-only incident opened {opened:.1f} s after the target failed")
            assert len(incidents) == 1, (tmp_path / "serve.log").read_text()[-3000:]
            (inc,) = incidents
            assert inc["detected_by"] == ["probes"]
            # The minute of the first failed checks closes (or the next one, when they came
            # late in it): at most two minutes; five minutes of lateness would be far more.
            assert opened < 125, opened
            assert epoch_of(inc["detected_at"]) - failed_at <= 120
            doc = httpx.get(f"{base}/api/v1/services/shop", timeout=10).json()
            assert doc["status"] == "outage"
        finally:
            stop_processes(procs)

"""`probe-agent` needs only a URL and a token: it fetches the probe list from the server,
follows changes to it, and keeps probing (buffering results) while the server is away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.cli import main
from outagewatch.probes.agent import AgentRefusedError, ProbeAgent, probe_of


class Server:
    """A stand-in for the outagewatch server: GET /api/v1/probes/config and POST
    /api/v1/probes, both refused (503) while `down`."""

    def __init__(self, token: str, config: list[dict[str, Any]]) -> None:
        self.token = token
        self.config = config
        self.down = False
        self.posted: list[dict[str, Any]] = []
        self.config_gets = 0
        self.http = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return Reply(401, b'{"error": {"code": "unauthorized", "message": "bad token"}}')
        if self.down:
            return Reply(503, b"{}", {"Retry-After": "0"})
        if req.method == "GET" and req.path == "/api/v1/probes/config":
            self.config_gets += 1
            return Reply(200, json.dumps(self.config).encode())
        if req.method == "POST" and req.path == "/api/v1/probes":
            items = json.loads(req.body)
            self.posted.extend(items)
            return Reply(202, json.dumps({"accepted": len(items), "rejected": []}).encode())
        return Reply(404, b"{}")


def item(service: str, url: str) -> dict[str, Any]:
    return {"service": service, "url": url, "site": "public", "interval_s": 5}


async def until(what: str, cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.slow
def test_the_agent_follows_the_server_list_and_buffers_while_it_is_away() -> None:
    with LoopbackServer(lambda r: Reply(200, b"fine")) as site:
        server = Server("tok", [item("x", f"{site.url}/x")])
        with server.http:

            async def go() -> ProbeAgent:
                agent = ProbeAgent(
                    None,
                    server=server.http.url,
                    vantage="eu-west",
                    token="tok",
                    allow_private=True,
                    backoff_s=0.05,
                    backoff_max_s=0.2,
                    config_every_s=0.1,
                )
                stop = asyncio.Event()
                runner = asyncio.create_task(agent.run(stop))
                await until("a first result for x", lambda: len(server.posted) >= 1)
                # The server goes away: the agent keeps probing what it knows, buffering.
                server.down = True
                away = time.time()
                server.config = [item("x", f"{site.url}/x"), item("y", f"{site.url}/y")]
                await until("a check while away", lambda: agent.scheduler.runs >= 2)
                assert agent.scheduler.running and agent.failures >= 1
                server.down = False
                await until("y probed", lambda: any(e["service"] == "y" for e in server.posted))
                await until("the buffered result posted", lambda: any(
                    e["service"] == "x" and e["ts"] >= away for e in server.posted
                ))  # fmt: skip
                # The operator removes x: the agent stops probing it.
                server.config = [item("y", f"{site.url}/y")]
                await until("the list followed", lambda: [s for s, _ in agent.probes] == ["y"])
                stop.set()
                await runner
                return agent

            agent = asyncio.run(go())
    assert agent.dropped == 0 and agent.config_fetches >= 3
    assert {e["vantage"] for e in server.posted} == {"eu-west"}
    assert all(e["ok"] is True for e in server.posted)


@pytest.mark.slow
def test_a_refused_token_stops_the_agent_before_it_probes() -> None:
    server = Server("right", [])
    with server.http:

        async def go() -> None:
            agent = ProbeAgent(
                None, server=server.http.url, vantage="v", token="wrong", allow_private=True
            )
            await agent.run(asyncio.Event())

        with pytest.raises(AgentRefusedError, match="refused the token"):
            asyncio.run(go())


def test_bad_list_items_are_skipped_with_the_reason() -> None:
    assert probe_of(item("x", "https://x.example/"))[1].interval_s == 5
    for bad, why in (
        ({"service": "x", "url": "ftp://x"}, "url"),
        ({"service": "x", "url": "https://x/", "interval_s": 1}, "interval_s"),
        ({"url": "https://x/"}, "service"),
        ([], "not an object"),
    ):
        with pytest.raises(ValueError, match=why):
            probe_of(bad)


@pytest.mark.slow
def test_cli_needs_no_catalog_or_database(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with LoopbackServer(lambda r: Reply(503, b"down")) as site:
        server = Server("tok", [item("x", f"{site.url}/x")])
        with server.http:
            rc = main(
                ["--db", str(tmp_path / "none.db"), "--token", "tok",
                 "--allow-private-targets", "1", "probe-agent", "--server", server.http.url,
                 "--vantage", "lab", "--once"]
            )  # fmt: skip
    assert rc == 0
    assert not (tmp_path / "none.db").exists()
    (ev,) = server.posted
    assert ev["service"] == "x" and ev["vantage"] == "lab" and ev["status"] == 503

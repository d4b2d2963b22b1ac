"""Probes against real loopback servers: checks, the scheduler, and the probe agent."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback import LoopbackServer, Reply, Request, client_tls, self_signed_cert, server_tls
from outagewatch.catalog import Catalog, Probe
from outagewatch.cli import main
from outagewatch.errors import UsageError
from outagewatch.events import EventDecoder
from outagewatch.netguard import guarded_client
from outagewatch.probes.agent import AgentRefusedError, ProbeAgent
from outagewatch.probes.checks import run_probe
from outagewatch.probes.scheduler import ProbeScheduler


def target(req: Request) -> Reply:
    """/ok, /fail, /body (says 'maintenance'), /slow, /trickle, /hang; eu-west gets 503s."""
    if "vantage eu-west" in req.headers.get("User-Agent", ""):
        return Reply(503, b"regional trouble")
    path = req.path.split("?", 1)[0]
    if path == "/ok":
        return Reply(200, b"<html>all systems go</html>")
    if path == "/fail":
        return Reply(500, b"internal error")
    if path == "/body":
        return Reply(200, b"<html>down for maintenance</html>")
    if path == "/slow":
        return Reply(200, b"late", delay_s=3.0)
    if path == "/trickle":
        return Reply(200, b"all systems go" * 4, trickle_s=0.1)
    if path == "/hang":
        return Reply(200, b"never", delay_s=60.0)
    if path == "/created":
        return Reply(201, b"")
    return Reply(404, b"no such page")


@pytest.fixture
def site() -> Iterator[LoopbackServer]:
    with LoopbackServer(target) as server:
        yield server


def probe_once(probe: Probe, *, allow_private: bool = True, **kw: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with guarded_client(allow_private=allow_private, **kw) as client:
            return await run_probe(client, "x", probe, vantage="here")

    return asyncio.run(go())


def decodes(events: list[dict[str, Any]], services: tuple[str, ...] = ("x",)) -> None:
    """The events are valid contract §2 probe events."""
    catalog = Catalog.from_toml("".join(f"[services.{s}]\n" for s in services))
    lines = [json.dumps(e).encode() for e in events]
    out = EventDecoder(catalog).decode(lines)
    assert out.rejected == [] and [o.type for o in out.others] == ["probe"] * len(events)


def test_ok_probe_is_a_valid_event(site: LoopbackServer) -> None:
    ev = probe_once(Probe(site.url + "/ok", site="primary"))
    assert ev["ok"] is True and ev["status"] == 200 and ev["error"] is None
    assert ev["type"] == "probe" and ev["service"] == "x" and ev["target"] == site.url + "/ok"
    assert ev["site"] == "primary" and ev["vantage"] == "here"
    assert 0 < ev["latency_ms"] < 2000 and abs(ev["ts"] - time.time()) < 5
    decodes([ev])


@pytest.mark.parametrize(
    ("probe_kw", "error"),
    [
        ({"url": "/fail"}, "status 500, expected 2xx"),
        ({"url": "/ok", "expect_status": 201}, "status 200, expected 201"),
        ({"url": "/nope"}, "status 404, expected 2xx"),
        ({"url": "/body", "keyword": "all systems go"}, "keyword 'all systems go' not found"),
    ],
)
@pytest.mark.slow
def test_failing_probes_say_why(site: LoopbackServer, probe_kw: dict[str, Any], error: str) -> None:
    kw = {**probe_kw, "url": site.url + probe_kw["url"]}
    ev = probe_once(Probe(**kw))
    assert ev["ok"] is False and error in ev["error"]
    decodes([ev])


@pytest.mark.slow
def test_expected_status_and_keyword_pass(site: LoopbackServer) -> None:
    assert probe_once(Probe(site.url + "/created", expect_status=201))["ok"] is True
    ev = probe_once(Probe(site.url + "/ok", keyword="all systems go"))
    assert ev["ok"] is True and ev["error"] is None


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
@pytest.mark.slow
def test_whole_check_has_one_deadline(site: LoopbackServer, path: str) -> None:
    t0 = time.monotonic()
    ev = probe_once(Probe(site.url + path, keyword="nothing like this", timeout_s=0.5))
    assert time.monotonic() - t0 < 2.0
    assert ev["ok"] is False and ev["error"].startswith("timed out after 0.5 s")


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        ev = probe_once(Probe(f"http://127.0.0.1:{port}/", timeout_s=2))
    assert ev["ok"] is False and ev["status"] is None and "ConnectError" in ev["error"]


def test_private_target_is_refused_unless_allowed(site: LoopbackServer) -> None:
    ev = probe_once(Probe(site.url + "/ok"), allow_private=False)
    assert ev["ok"] is False and ev["error"].startswith("refused:")
    assert "127.0.0.1" in ev["error"] and "loopback" in ev["error"]
    assert site.paths() == []


@pytest.mark.slow
def test_tls_certificate_expiry_warning(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, days=3)
    with LoopbackServer(target, tls=server_tls(cert, key)) as tls_site:
        ev = probe_once(Probe(tls_site.url + "/ok"), verify=client_tls(cert))
        assert ev["ok"] is True and ev["status"] == 200
        assert ev["error"].startswith(
            ("warning: TLS certificate expires in 2.", "warning: TLS certificate expires in 3.0")
        )
        untrusted = probe_once(Probe(tls_site.url + "/ok", timeout_s=3))
        assert untrusted["ok"] is False and "CERTIFICATE_VERIFY_FAILED" in untrusted["error"]
    far = tmp_path / "far"
    far.mkdir()
    cert2, key2 = self_signed_cert(far, days=90)
    with LoopbackServer(target, tls=server_tls(cert2, key2)) as tls_site:
        ev = probe_once(Probe(tls_site.url + "/ok"), verify=client_tls(cert2))
        assert ev["ok"] is True and ev["error"] is None


# ---------------------------------------------------------------------------- scheduler


@pytest.mark.slow
def test_hanging_target_does_not_delay_the_others(site: LoopbackServer) -> None:
    results: list[tuple[float, dict[str, Any]]] = []

    async def submit(events: list[dict[str, Any]]) -> None:
        results.extend((time.monotonic(), e) for e in events)
        if any(e["service"] == "b" for e in events):
            raise RuntimeError("consumer hiccup")  # must not stop probing

    probes = [
        ("a", Probe(site.url + "/hang", interval_s=1, timeout_s=2.5)),
        ("a", Probe(site.url + "/hang?2", interval_s=1, timeout_s=2.5)),
        ("b", Probe(site.url + "/ok", interval_s=1)),
        ("c", Probe(site.url + "/fail", interval_s=1)),
    ]

    async def go() -> ProbeScheduler:
        # Each probe runs in its own task: the two hanging targets hold two of the four
        # slots and their own tasks, never the loops of the fast targets.
        sched = ProbeScheduler(probes, submit, allow_private=True, concurrency=4, jitter=0.05)
        t0 = time.monotonic()
        await sched.start()
        await asyncio.sleep(2.2)
        await sched.stop()
        results[:] = [(t - t0, e) for t, e in results]
        return sched

    sched = asyncio.run(go())
    fast = [(t, e) for t, e in results if e["service"] in ("b", "c")]
    assert len([e for _, e in fast if e["service"] == "b"]) >= 2
    assert len([e for _, e in fast if e["service"] == "c"]) >= 2
    assert all(e["ok"] for _, e in fast if e["service"] == "b")
    assert not any(e["ok"] for _, e in fast if e["service"] == "c")
    assert min(t for t, _ in fast) < 0.6  # first runs are spread over 5% of the interval
    assert not any(e["service"] == "a" for _, e in results)  # still hanging at stop
    assert sched.submit_failures >= 2


def test_scheduler_takes_the_catalog_probes(site: LoopbackServer) -> None:
    catalog = Catalog.from_toml(
        f'[services.x]\n[[services.x.probes]]\nurl = "{site.url}/ok"\ninterval_s = 5\n'
        f'keyword = "systems"\ntimeout_s = 2\n'
        f'[services.y]\n[[services.y.probes]]\nurl = "{site.url}/fail"\nsite = "secondary"\n'
    )
    got: list[dict[str, Any]] = []

    async def submit(events: list[dict[str, Any]]) -> None:
        got.extend(events)

    async def go() -> list[dict[str, Any]]:
        sched = ProbeScheduler(catalog, submit, allow_private=True, vantage="local")
        try:
            return await sched.run_once()
        finally:
            await sched.stop()

    events = asyncio.run(go())
    assert sorted(got, key=lambda e: e["service"]) == events  # submitted as they finish
    by = {e["service"]: e for e in events}
    assert by["x"]["ok"] is True and by["y"]["ok"] is False and by["y"]["site"] == "secondary"
    assert {e["vantage"] for e in events} == {"local"}
    decodes(events, ("x", "y"))


# ---------------------------------------------------------------------------- agent


class Receiver:
    """A stand-in for `POST /api/v1/probes`: checks the token, can be down for a while."""

    def __init__(self, token: str, down_for: int = 0) -> None:
        self.token = token
        self.down_for = down_for
        self.batches: list[list[dict[str, Any]]] = []
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        if req.path != "/api/v1/probes" or req.method != "POST":
            return Reply(404, b'{"error": {"code": "not_found", "message": "no"}}')
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return Reply(401, b'{"error": {"code": "unauthorized", "message": "bad token"}}')
        if self.down_for > 0:
            self.down_for -= 1
            return Reply(503, b"{}", {"Retry-After": "0"})
        items = json.loads(req.body)
        self.batches.append(items)
        return Reply(202, json.dumps({"accepted": len(items), "rejected": []}).encode())

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches for e in b]


def agent_catalog(site: LoopbackServer) -> Catalog:
    return Catalog.from_toml(
        f'[services.x]\n[[services.x.probes]]\nurl = "{site.url}/ok"\ninterval_s = 5\n'
        f'[services.y]\n[[services.y.probes]]\nurl = "{site.url}/fail"\ninterval_s = 5\n'
    )


@pytest.mark.slow
def test_two_agents_at_two_vantages(site: LoopbackServer) -> None:
    """The target fails for eu-west only; both agents' results reach the server, tagged."""
    receiver = Receiver("s3cret", down_for=2)
    catalog = agent_catalog(site)
    with receiver.server:

        async def eu() -> int:
            agent = ProbeAgent(
                catalog,
                server=receiver.server.url,
                vantage="eu-west",
                token="s3cret",
                allow_private=True,
                backoff_s=0.05,
            )
            return await agent.run_once()

        async def us() -> ProbeAgent:
            agent = ProbeAgent(
                catalog,
                server=receiver.server.url + "/",
                vantage="us-east",
                token="s3cret",
                allow_private=True,
                backoff_s=0.05,
            )
            agent.scheduler.jitter = 0.01
            stop = asyncio.Event()
            runner = asyncio.create_task(agent.run(stop))
            while len([e for e in receiver.events if e["vantage"] == "us-east"]) < 2:
                await asyncio.sleep(0.05)
            stop.set()
            await runner
            return agent

        assert asyncio.run(eu()) == 0  # posted after two 503s
        agent = asyncio.run(us())
    assert agent.posted == 2 and agent.dropped == 0
    events = receiver.events
    assert all("type" not in e for e in events)  # the path says the type
    seen = {(e["vantage"], e["service"]): e for e in events}
    assert set(seen) == {(v, s) for v in ("eu-west", "us-east") for s in ("x", "y")}
    assert seen[("eu-west", "x")]["ok"] is False and seen[("eu-west", "x")]["status"] == 503
    assert seen[("us-east", "x")]["ok"] is True  # down from eu-west only
    assert seen[("us-east", "y")]["ok"] is False and seen[("us-east", "y")]["status"] == 500
    decodes([{"type": "probe", **e} for e in events], ("x", "y"))


@pytest.mark.slow
def test_agent_with_a_wrong_token_stops_with_a_clear_error(site: LoopbackServer) -> None:
    receiver = Receiver("right")
    with receiver.server:

        async def go() -> None:
            agent = ProbeAgent(
                agent_catalog(site),
                server=receiver.server.url,
                vantage="eu-west",
                token="wrong",
                allow_private=True,
            )
            await agent.run(asyncio.Event())

        with pytest.raises(AgentRefusedError, match="refused the token"):
            asyncio.run(go())
    assert receiver.batches == []


@pytest.mark.slow
def test_agent_buffers_while_the_server_is_down(site: LoopbackServer) -> None:
    """A server that is unreachable: results wait (bounded), none is lost once it is back."""
    receiver = Receiver("t", down_for=3)

    agent = ProbeAgent(
        agent_catalog(site),
        server=receiver.server.url,
        vantage="ap-south",
        token="t",
        allow_private=True,
        backoff_s=0.05,
    )
    with receiver.server:
        left = asyncio.run(agent.run_once(attempts=10))
    assert left == 0 and agent.failures == 3 and len(receiver.events) == 2


@pytest.mark.slow
def test_agent_cli_once(
    site: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver("tok")
    cat = tmp_path / "catalog.toml"
    cat.write_text(agent_catalog(site).source)
    with receiver.server:
        base = ["--catalog", str(cat), "--token", "tok", "--allow-private-targets", "1"]
        rc = main(
            [*base, "probe-agent", "--server", receiver.server.url, "--vantage", "lab", "--once"]
        )
        assert rc == 0
        assert {(e["vantage"], e["service"]) for e in receiver.events} == {
            ("lab", "x"),
            ("lab", "y"),
        }
        assert (
            main([*base, "probe-agent", "--server", receiver.server.url, "--vantage", "a b"]) == 2
        )
        assert "--vantage 'a b'" in capsys.readouterr().err
    rc = main(
        ["--catalog", str(cat), "probe-agent", "--server", "http://127.0.0.1:9", "--vantage", "v"]
    )
    assert rc == 2 and "OUTAGEWATCH_TOKEN" in capsys.readouterr().err


def test_agent_rejects_bad_arguments(site: LoopbackServer) -> None:
    cat = agent_catalog(site)
    with pytest.raises(UsageError, match="--server"):
        ProbeAgent(cat, server="ftp://x", vantage="v", token="t", allow_private=True)
    with pytest.raises(UsageError, match="--vantage"):
        ProbeAgent(cat, server="http://h", vantage="", token="t", allow_private=True)

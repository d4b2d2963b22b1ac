"""The HTTP API of contract §6, in process (httpx ASGI transport), every endpoint and error."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from outagewatch.store.sqlite import SQLiteStore
from outagewatch.web.schemas import Incident, ServiceDetail, ServiceSummary
from webutil import CLIENT, T0, TOKEN, Clock, outage, report, running

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"code": str, "message": str}} and nothing else."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    err: dict[str, Any] = body["error"]
    return err


def last_reports(doc: dict[str, Any], n: int = 1) -> int:
    return sum(m["reports"] for m in doc["minutes"][-n:])


# ---------------------------------------------------------------------------- POST /reports
async def test_one_report_is_accepted_and_shows_at_once(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as (_, c):
        r = await c.post("/api/v1/reports", json={"service": "twitter", "country": "uk"})
        assert r.status_code == 202
        assert r.json() == {"accepted": 1, "rejected": []}
        doc = (await c.get("/api/v1/services/x")).json()
        assert last_reports(doc) == 1


async def test_a_list_keeps_its_good_items_and_names_the_bad(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        items: list[Any] = [
            {"service": "x", "country": "US", "reporter": "a"},
            {"service": "nope", "country": "US"},
            {"service": "x", "country": "ZZ"},
            7,
            {"service": "x", "country": "DE", "reporter": "b", "problem": "spaces"},
            {"service": "x", "country": "US", "ts": "yesterday"},
        ]
        r = await c.post("/api/v1/reports", json=items)
        assert r.status_code == 202
        body = r.json()
        assert body["accepted"] == 2
        assert [x["index"] for x in body["rejected"]] == [1, 2, 3, 5]
        reasons = [x["reason"] for x in body["rejected"]]
        assert reasons[0].startswith("unknown service") and "nope" in reasons[0]
        assert reasons[1].startswith("bad country") and "country" in reasons[1]
        assert reasons[2].startswith("not an object")
        assert "ts" in reasons[3]
        doc = (await c.get("/api/v1/services/x")).json()
        assert last_reports(doc) == 2


async def test_the_ip_is_the_clients_not_the_bodys(tmp_path: Path) -> None:
    """Two reports from one client with different body `ip`s are one person: counted once."""
    async with running(tmp_path, Clock()) as (server, c):
        for ip in ("10.0.0.1", "10.0.0.2"):
            r = await c.post("/api/v1/reports", json={"service": "x", "country": "US", "ip": ip})
            assert r.status_code == 202
        doc = (await c.get("/api/v1/services/x")).json()
        assert last_reports(doc) == 1
        assert server.engine is not None
        assert server.engine.pipeline.stats.duplicates == 1
        lines = server.engine.store.journal_after(0)
        assert all(CLIENT[0].encode() in batch for _, batch in lines)
        assert not any(b"10.0.0." in batch for _, batch in lines)


async def test_reports_forwarded_with_the_operator_token_carry_no_address(
    tmp_path: Path,
) -> None:
    """A partner's address is not its users': forwarded reports get none (so they are not
    judged by address as a flood, nor deduplicated as one person)."""
    async with running(tmp_path, Clock()) as (server, c):
        item = {"service": "x", "country": "US", "ip": "81.2.69.160"}
        r = await c.post("/api/v1/reports", json=[item, item], headers=AUTH)
        assert r.status_code == 202 and r.json()["accepted"] == 2
        assert server.engine is not None
        assert server.engine.pipeline.stats.duplicates == 0
        (batch,) = [b for _, b in server.engine.store.journal_after(0)]
        assert b'"ip"' not in batch and b"81.2.69.160" not in batch


async def test_ts_defaults_to_arrival_and_may_be_given(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as (_, c):
        given = clock.t - 120
        r = await c.post(
            "/api/v1/reports", json={"service": "x", "country": "US", "ts": given, "reporter": "p"}
        )
        assert r.status_code == 202
        await c.post("/api/v1/reports", json={"service": "x", "country": "US", "reporter": "q"})
        minutes = (await c.get("/api/v1/services/x")).json()["minutes"]
        assert minutes[-1]["reports"] == 1
        assert minutes[-3]["reports"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 422, "invalid_body"),
        (b"{not json", 422, "invalid_body"),
        (b"42", 422, "invalid_body"),
        (b"[]", 422, "invalid_body"),
        (b'[{"service": "nope", "country": "US"}]', 422, "no_valid_item"),
        (b'{"service": "x"}', 422, "no_valid_item"),
        (b"[" + b",".join([b'{"service":"x","country":"US"}'] * 1001) + b"]", 413, "too_large"),
        (b'{"service": "x", "country": "US", "pad": "' + b"a" * (1 << 20) + b'"}', 413, None),
    ],
)
@pytest.mark.slow
async def test_bad_bodies_get_the_error_shape(
    tmp_path: Path, body: bytes, status: int, code: str | None
) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        r = await c.post(
            "/api/v1/reports", content=body, headers={"content-type": "application/json"}
        )
        assert_error(r, status, code)


# ---------------------------------------------------------------------------- operator endpoints
@pytest.mark.parametrize(
    ("path", "item"),
    [
        ("/api/v1/probes", {"service": "x", "target": "https://x.com/", "ok": False}),
        ("/api/v1/metrics", {"service": "x", "name": "error_rate", "value": 0.3}),
    ],
)
@pytest.mark.slow
async def test_operator_endpoints_need_the_token(
    tmp_path: Path, path: str, item: dict[str, Any]
) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        assert_error(await c.post(path, json=item), 401, "unauthorized")
        bad = {"Authorization": "Bearer wrong"}
        assert_error(await c.post(path, json=item, headers=bad), 403, "forbidden")
        r = await c.post(path, json=[item, {"service": "nope"}], headers=AUTH)
        assert r.status_code == 202
        assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["index"] == 1
        assert_error(await c.post(path, json={"service": "x"}, headers=AUTH), 422)
        assert server.bus is not None
        done = await server.bus.tick(commit=True)
        assert done is not None
        store = server.engine.store if server.engine is not None else None
        assert isinstance(store, SQLiteStore)
        kinds = [row[0] for row in store.db.execute("SELECT type FROM events")]
        assert kinds == [path.rsplit("/", 1)[1].rstrip("s")]
    # Without a configured token nobody is an operator.
    async with running(tmp_path, Clock(), token="", db="other.db") as (_, c):
        assert_error(await c.post(path, json=item, headers=AUTH), 403, "forbidden")


@pytest.mark.slow
async def test_a_partner_with_the_token_may_post_reports(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        r = await c.post("/api/v1/reports", json={"service": "x", "country": "US"}, headers=AUTH)
        assert r.status_code == 202


# ---------------------------------------------------------------------------- services
@pytest.mark.slow
async def test_services_list_every_catalog_service(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        r = await c.get("/api/v1/services")
        assert r.status_code == 200
        docs = r.json()
        assert [d["id"] for d in docs] == list(server.catalog.services)
        for d in docs:
            ServiceSummary.model_validate(d)
            assert set(d) == {"id", "name", "aliases", "group", "status"}
            assert d["status"] == "ok"
        x = next(d for d in docs if d["id"] == "x")
        assert x["aliases"] == ["twitter"] and x["group"] is None


@pytest.mark.slow
async def test_service_minutes_are_the_last_24_hours_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as (_, c):
        doc = (await c.get("/api/v1/services/TWITTER")).json()
        ServiceDetail.model_validate(doc)
        assert doc["id"] == "x" and doc["incident"] is None and doc["status"] == "ok"
        minutes = doc["minutes"]
        assert len(minutes) == 1440
        import datetime as dt

        ts = [dt.datetime.fromisoformat(m["t"]).timestamp() for m in minutes]
        assert all(b - a == 60 for a, b in itertools.pairwise(ts))
        assert ts[-1] == clock.t // 60 * 60
        assert_error(await c.get("/api/v1/services/nope"), 404, "not_found")


# ---------------------------------------------------------------------------- incidents
@pytest.mark.slow
async def test_an_outage_is_served_as_an_incident(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, c):
        before = (await c.get("/api/v1/services/x")).json()
        baselines = [m["baseline"] for m in before["minutes"][-60:]]
        assert all(b is not None and b > 0 for b in baselines)
        assert sum(m["reports"] for m in before["minutes"]) > 0  # history shows on the chart
        start = clock.t
        await outage(server, clock, "x", {"US": 0.7, "GB": 0.3})
        services = {d["id"]: d for d in (await c.get("/api/v1/services")).json()}
        assert services["x"]["status"] == "outage"
        assert services["facebook"]["status"] == "ok"
        doc = (await c.get("/api/v1/services/x")).json()
        assert doc["incident"] is not None
        incidents = (await c.get("/api/v1/incidents")).json()
        assert [i["id"] for i in incidents] == [doc["incident"]]
        inc = incidents[0]
        Incident.model_validate(inc)
        assert inc["status"] == "ongoing" and inc["service"] == "x"
        assert [x["country"] for x in inc["countries"][:2]] == ["US", "GB"]
        import datetime as dt

        started = dt.datetime.fromisoformat(inc["started_at"]).timestamp()
        assert abs(started - start) <= 120
        one = await c.get(f"/api/v1/incidents/{inc['id']}")
        assert one.status_code == 200 and one.json()["id"] == inc["id"]
        # filters
        q = await c.get("/api/v1/incidents", params={"service": "twitter", "status": "ongoing"})
        assert [i["id"] for i in q.json()] == [inc["id"]]
        assert (await c.get("/api/v1/incidents", params={"service": "facebook"})).json() == []
        assert (await c.get("/api/v1/incidents", params={"status": "resolved"})).json() == []
        later = start + 86_400
        assert (await c.get("/api/v1/incidents", params={"until": start - 3600})).json() == []
        assert len((await c.get("/api/v1/incidents", params={"since": later})).json()) == 1
        assert len((await c.get("/api/v1/incidents", params={"limit": 1})).json()) == 1
        # It resolves when reports stop: an hour of quiet.
        clock.t += 3600
        assert server.bus is not None
        await server.bus.tick()
        resolved = (await c.get(f"/api/v1/incidents/{inc['id']}")).json()
        assert resolved["status"] == "resolved" and resolved["ended_at"] is not None
        assert (await c.get("/api/v1/services/x")).json()["status"] == "ok"
        assert (await c.get("/api/v1/incidents", params={"since": later})).json() == []
        # The same incident was committed: the store answers without the engine.
        assert server.engine is not None
        stored = server.engine.store.incident(inc["id"])
        assert stored is not None and stored["status"] == "resolved"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"service": "nope"}, 404, "not_found"),
        ({"status": "open"}, 422, "invalid_query"),
        ({"since": "not a time"}, 422, "invalid_query"),
        ({"until": "2025-13-45"}, 422, "invalid_query"),
        ({"limit": "0"}, 422, "invalid_request"),
        ({"limit": "many"}, 422, "invalid_request"),
    ],
)
@pytest.mark.slow
async def test_incident_queries_are_checked(
    tmp_path: Path, params: dict[str, str], status: int, code: str
) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        assert_error(await c.get("/api/v1/incidents", params=params), status, code)


async def test_unknown_incident_and_path_and_method(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        assert_error(await c.get("/api/v1/incidents/nope"), 404, "not_found")
        assert_error(await c.get("/api/v1/nothing-here"), 404, "not_found")
        assert_error(await c.delete("/api/v1/services"), 405)
        assert_error(await c.put("/api/v1/reports", json={}), 405)


# ---------------------------------------------------------------------------- the rest
@pytest.mark.slow
async def test_health_metrics_feed_and_openapi(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, c):
        await c.post(
            "/api/v1/reports",
            json=[{"service": "x", "country": "US"}, {"service": "nope", "country": "US"}],
        )
        await outage(server, clock)
        h = (await c.get("/healthz")).json()
        assert h["status"] == "ok" and h["queue"] == 0 and h["watermark"].endswith("Z")
        assert_error(await c.get("/metrics"), 401, "unauthorized")  # the `read` scope
        text = (await c.get("/metrics", headers=AUTH)).text
        assert 'outagewatch_events_accepted_total{type="report"} 1.0' in text
        assert 'outagewatch_events_rejected_total{reason="unknown service"} 1.0' in text
        assert "outagewatch_open_incidents 1.0" in text
        assert "outagewatch_ticks_total" in text and "outagewatch_tick_seconds_total" in text
        feed = await c.get("/feeds/incidents.atom")
        assert feed.headers["content-type"].startswith("application/atom+xml")
        root = ET.fromstring(feed.content)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        entries = root.findall("a:entry", ns)
        assert len(entries) == 1
        assert entries[0].findtext("a:title", namespaces=ns, default="").startswith("X: ")
        spec = (await c.get("/openapi.json")).json()
        for path in (
            "/api/v1/reports",
            "/api/v1/probes",
            "/api/v1/metrics",
            "/api/v1/services",
            "/api/v1/services/{service_id}",
            "/api/v1/incidents",
            "/api/v1/incidents/{incident_id}",
            "/healthz",
            "/metrics",
            "/feeds/incidents.atom",
        ):
            assert path in spec["paths"], path


# ---------------------------------------------------------------------------- fast path, limits
@pytest.mark.slow
async def test_the_fast_ingest_path_answers_exactly_like_the_routes(tmp_path: Path) -> None:
    bodies: list[Any] = [
        {"service": "x", "country": "US", "reporter": "a"},
        [{"service": "x", "country": "US"}, {"service": "nope", "country": "US"}, 3],
        [{"service": "nope"}],
        "just a string",
    ]
    answers: dict[bool, list[tuple[int, bytes]]] = {}
    for fast in (False, True):
        async with running(tmp_path, Clock(), fast=fast, db=f"f{fast}.db") as (_, c):
            got = []
            for body in bodies:
                r = await c.post("/api/v1/reports", json=body)
                got.append((r.status_code, r.content))
            r = await c.post("/api/v1/probes", json={"service": "x", "target": "u", "ok": True})
            got.append((r.status_code, r.content))
            r = await c.post(
                "/api/v1/reports",
                content=b"x" * (1 << 20 + 1),
                headers={"Content-Type": "application/json"},
            )
            got.append((r.status_code, r.content))
            answers[fast] = got
    assert answers[True] == answers[False]
    assert [s for s, _ in answers[True]] == [202, 202, 422, 422, 401, 413]


async def test_public_reports_are_rate_limited_per_address_and_block(tmp_path: Path) -> None:
    flags = {"OUTAGEWATCH_RATE_PER_IP": "5", "OUTAGEWATCH_RATE_PER_BLOCK": "8"}
    async with running(tmp_path, Clock(), flags=flags, fast=True) as (_, c):
        item = {"service": "x", "country": "US"}
        statuses = []
        for _ in range(6):
            r = await c.post("/api/v1/reports", json=item)
            statuses.append(r.status_code)
            assert r.headers["RateLimit-Limit"] == "5"
        assert statuses == [202] * 5 + [429]
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["RateLimit-Remaining"] == "0"
        # The operator token (a partner forwarding reports) is not limited.
        r = await c.post("/api/v1/reports", json=[item] * 20, headers=AUTH)
        assert r.status_code == 202
        # A neighbour in the same /24 has its own address bucket but shares the block's.
        neighbour = httpx.ASGITransport(app=c._transport.app, client=("198.51.100.8", 1))  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=neighbour, base_url="http://test") as n:
            got = [(await n.post("/api/v1/reports", json=item)).status_code for _ in range(4)]
        assert got == [202, 202, 202, 429]


async def test_a_publisher_that_went_away_does_not_stop_the_writer(tmp_path: Path) -> None:
    """A request cancelled while its batch waits (the client hung up) is written anyway,
    and the writer thread carries on with the next ones."""
    from concurrent.futures import Future

    from outagewatch.runtime.writer import _Publish

    async with running(tmp_path, Clock()) as (server, c):
        assert server.bus is not None
        gone: Future[int] = Future()
        gone.cancel()
        server.bus._q.put(_Publish(report(service="x", country="US", ts=T0, reporter="a"), gone))
        r = await c.post("/api/v1/reports", json={"service": "x", "country": "US"})
        assert r.status_code == 202
        doc = (await c.get("/api/v1/services/x")).json()
        assert last_reports(doc) == 2


@pytest.mark.slow
async def test_minutes_closed_by_the_events_themselves_are_committed(tmp_path: Path) -> None:
    """Live traffic moves the clock too: when reports close a minute, the next tick commits
    it even though the tick itself closes nothing. (Three reports in a row must agree on a
    time for the stream to reach it: pipeline.clock.)"""
    clock = Clock()
    async with running(tmp_path, clock) as (server, c):
        assert server.bus is not None and server.engine is not None
        store = server.engine.store
        for i, k in enumerate((0, 1, 2, 2, 2)):
            r = await c.post(
                "/api/v1/reports",
                json={"service": "x", "country": "US", "ts": clock.t + 60 * k, "reporter": str(i)},
            )
            assert r.status_code == 202
        before = store.journal_seq()
        done = await server.bus.tick(clock.t)  # the clock is behind the events: closes nothing
        assert done is not None
        assert store.journal_seq() > before
        assert int(store.minute_counts("x", clock.t, clock.t + 120).sum()) == 2


async def test_reports_too_late_for_the_engine_still_show_on_the_chart(tmp_path: Path) -> None:
    """A report older than the allowed lateness (forwarded by a partner: a public `ts` is
    the arrival time) is not in the engine's minutes, but it is counted and stored: the
    chart shows it once committed."""
    clock = Clock()
    async with running(tmp_path, clock) as (server, c):
        assert server.bus is not None
        await c.post("/api/v1/reports", json={"service": "x", "country": "US", "reporter": "a"})
        clock.t += 20 * 60
        await server.bus.tick()
        late = clock.t - 15 * 60  # 15 minutes ago: beyond the 5-minute lateness
        item = {"service": "x", "country": "US", "reporter": "b", "ts": late}
        assert (await c.post("/api/v1/reports", json=item, headers=AUTH)).status_code == 202
        await server.bus.tick(commit=True)
        minutes = (await c.get("/api/v1/services/x")).json()["minutes"]
        assert minutes[-21]["reports"] == 1  # the on-time one, 20 minutes ago
        assert minutes[-16]["reports"] == 1  # the late one

"""Operating a live server (contract §8), in process: scoped tokens, incident updates,
maintenance windows."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from outagewatch.server import Server
from outagewatch.store.sqlite import SQLiteStore
from test_api import assert_error
from test_serve_watch import PRIVATE, Hooks, until
from webutil import TOKEN, Clock, outage, running

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PROBE = {"service": "x", "target": "https://x.com/", "ok": True}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_token(c: httpx.AsyncClient, *scopes: str) -> str:
    r = await c.post(
        "/api/v1/tokens", json={"name": "-".join(scopes), "scopes": list(scopes)}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


# ---------------------------------------------------------------------------- tokens
@pytest.mark.slow
async def test_a_token_is_shown_once_and_stored_only_as_its_hash(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        r = await c.post(
            "/api/v1/tokens", json={"name": "partner", "scopes": ["ingest", "read"]}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        doc = r.json()
        assert set(doc) >= {"id", "name", "scopes", "token"}
        assert doc["name"] == "partner" and doc["scopes"] == ["ingest", "read"]
        token = doc["token"]
        assert len(token) >= 40
        listed = (await c.get("/api/v1/tokens", headers=ADMIN)).json()
        assert [t["id"] for t in listed] == [doc["id"]]
        assert "token" not in listed[0] and "hash" not in listed[0]
        assert server.reader is not None and isinstance(server.reader, SQLiteStore)
        rows = server.reader.db.execute("SELECT * FROM api_tokens").fetchall()
        assert len(rows) == 1
        assert hashlib.sha256(token.encode()).hexdigest() in rows[0]
        assert not any(token in str(v) for v in rows[0])


@pytest.mark.slow
async def test_each_scope_opens_its_endpoints_only(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        ingest = bearer(await make_token(c, "ingest"))
        read = bearer(await make_token(c, "read"))
        admin = bearer(await make_token(c, "admin"))
        # ingest: probes and metrics, not the configuration nor /metrics
        assert (await c.post("/api/v1/probes", json=PROBE, headers=ingest)).status_code == 202
        assert_error(await c.post("/api/v1/probes", json=PROBE, headers=read), 403, "forbidden")
        assert_error(await c.get("/api/v1/subscriptions", headers=ingest), 403, "forbidden")
        assert_error(await c.get("/metrics", headers=ingest), 403, "forbidden")
        assert_error(await c.get("/api/v1/tokens", headers=ingest), 403, "forbidden")
        # read: /metrics and the delivery log
        assert (await c.get("/metrics", headers=read)).status_code == 200
        assert (await c.get("/api/v1/deliveries", headers=read)).status_code == 200
        assert_error(await c.get("/api/v1/subscriptions", headers=read), 403, "forbidden")
        assert_error(
            await c.post("/api/v1/tokens", json={"name": "n", "scopes": ["admin"]}, headers=read),
            403,
            "forbidden",
        )
        # admin: everything
        for path in ("/metrics", "/api/v1/deliveries", "/api/v1/subscriptions", "/api/v1/tokens"):
            assert (await c.get(path, headers=admin)).status_code == 200, path
        assert (await c.post("/api/v1/probes", json=PROBE, headers=admin)).status_code == 202
        # no token: 401; an unknown one: 403
        assert_error(await c.get("/api/v1/tokens"), 401, "unauthorized")
        assert_error(await c.get("/metrics", headers=bearer("ow_nope")), 403, "forbidden")


@pytest.mark.slow
async def test_a_partner_token_is_not_rate_limited(tmp_path: Path) -> None:
    flags = {"OUTAGEWATCH_RATE_PER_IP": "2", "OUTAGEWATCH_RATE_PER_BLOCK": "100"}
    async with running(tmp_path, Clock(), flags=flags) as (_, c):
        ingest = bearer(await make_token(c, "ingest"))
        read = bearer(await make_token(c, "read"))
        batch = [{"service": "x", "country": "US"}] * 5
        assert (await c.post("/api/v1/reports", json=batch, headers=ingest)).status_code == 202
        # A token without `ingest` posts as the public does: a batch larger than the limit
        # can never pass it (413), and within it the limit applies.
        r = await c.post("/api/v1/reports", json=batch, headers=read)
        assert_error(r, 413, "too_large")
        for _ in range(2):
            ok = await c.post("/api/v1/reports", json=batch[:1], headers=read)
            assert ok.status_code == 202
        r = await c.post("/api/v1/reports", json=batch[:1], headers=read)
        assert_error(r, 429, "rate_limited")


@pytest.mark.slow
async def test_a_revoked_token_is_refused_and_bad_bodies_are_422(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        r = await c.post("/api/v1/tokens", json={"name": "p", "scopes": ["ingest"]}, headers=ADMIN)
        tok, tid = bearer(r.json()["token"]), r.json()["id"]
        assert (await c.post("/api/v1/probes", json=PROBE, headers=tok)).status_code == 202
        assert (await c.delete(f"/api/v1/tokens/{tid}", headers=ADMIN)).status_code == 204
        assert_error(await c.post("/api/v1/probes", json=PROBE, headers=tok), 403, "forbidden")
        assert_error(await c.delete(f"/api/v1/tokens/{tid}", headers=ADMIN), 404, "not_found")
        for body, field in (
            ({"name": "p", "scopes": ["root"]}, "scopes"),
            ({"name": "p", "scopes": []}, "scopes"),
            ({"name": "", "scopes": ["read"]}, "name"),
            ({"scopes": ["read"]}, "name"),
            ({"name": "p", "scopes": ["read"], "x": 1}, "x"),
            ([], "object"),
        ):
            err = assert_error(await c.post("/api/v1/tokens", json=body, headers=ADMIN), 422)
            assert field in err["message"], (body, err)
        r = await c.post("/api/v1/tokens", content=b"{", headers=ADMIN)
        assert_error(r, 422, "invalid_body")


@pytest.mark.slow
async def test_every_operation_states_its_scope(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        spec = (await c.get("/openapi.json")).json()
    assert "bearer" in spec["components"]["securitySchemes"]
    scopes: dict[str, str] = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            desc = op.get("description", "")
            assert "Scope: " in desc, (method, path)
            scopes[f"{method.upper()} {path}"] = desc.split("Scope: ", 1)[1]
            if "Scope: `" in desc:
                scope = desc.split("Scope: `", 1)[1].split("`", 1)[0]
                assert op.get("security") == [{"bearer": [scope]}], (method, path)
    assert scopes["POST /api/v1/probes"].startswith("`ingest`")
    assert scopes["GET /metrics"].startswith("`read`")
    assert scopes["GET /api/v1/deliveries"].startswith("`read`")
    assert scopes["POST /api/v1/tokens"].startswith("`admin`")
    assert scopes["GET /api/v1/maintenance"].startswith("public")
    assert "ingest" in scopes["POST /api/v1/reports"]


# ---------------------------------------------------------------------------- updates
async def incident_of(server: Server, c: httpx.AsyncClient, clock: Clock) -> dict[str, Any]:
    await outage(server, clock)
    (doc,) = (await c.get("/api/v1/incidents")).json()
    assert doc["status"] == "ongoing" and doc["updates"] == [] and doc["maintenance"] is False
    return dict(doc)


@pytest.mark.slow
async def test_updates_show_in_the_json_page_and_feed_and_go_to_subscribers(
    tmp_path: Path,
) -> None:
    secret = "a-webhook-secret-of-some-length"
    hooks = Hooks(secret)
    clock = Clock()
    with hooks.server:
        url = f"http://127.0.0.1:{hooks.server.port}/hook"
        async with running(tmp_path, clock, history=("x",), flags=PRIVATE) as (server, c):
            sub = {"channel": "webhook", "service": "x", "url": url, "secret": secret}
            assert (
                await c.post("/api/v1/subscriptions", json=sub, headers=ADMIN)
            ).status_code == 201
            doc = await incident_of(server, c, clock)
            await until("the opened alert", lambda: "opened" in hooks.kinds())
            path = f"/api/v1/incidents/{doc['id']}/updates"
            posted = []
            for status, text in (
                ("investigating", "We are looking into <login> failures."),
                ("resolved", "Fixed: a bad deploy was rolled back."),
            ):
                r = await c.post(path, json={"status": status, "text": text}, headers=ADMIN)
                assert r.status_code == 201, r.text
                assert set(r.json()) == {"at", "status", "text"}
                assert r.json()["at"].endswith("Z") and r.json()["text"] == text
                posted.append(r.json())
            got = (await c.get(f"/api/v1/incidents/{doc['id']}")).json()
            assert got["updates"] == posted  # oldest first
            assert got["status"] == "ongoing"  # the operator's word changes no detection
            listed = (await c.get("/api/v1/incidents")).json()
            assert listed[0]["updates"] == posted
            html = (await c.get(f"/incidents/{doc['id']}")).text
            assert "We are looking into &lt;login&gt; failures." in html
            assert "operator says resolved" in html.lower()
            feed = ET.fromstring((await c.get("/feeds/incidents.atom")).content)
            text = ET.tostring(feed, encoding="unicode")
            assert "Fixed: a bad deploy was rolled back." in text
            await until("two update alerts", lambda: hooks.kinds().count("update") == 2)
            update = [g for g in hooks.got if g["kind"] == "update"][-1]
            assert "Fixed: a bad deploy" in update["text"]
            log = (await c.get("/api/v1/deliveries", headers=ADMIN)).json()
            assert sorted(d["kind"] for d in log) == ["opened", "update", "update"]


@pytest.mark.slow
async def test_update_errors(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, c):
        doc = await incident_of(server, c, clock)
        path = f"/api/v1/incidents/{doc['id']}/updates"
        ok = {"status": "identified", "text": "A bad deploy."}
        assert_error(await c.post(path, json=ok), 401, "unauthorized")
        assert_error(await c.post("/api/v1/incidents/nope/updates", json=ok, headers=ADMIN), 404)
        for body, field in (
            ({"status": "fixed", "text": "x"}, "status"),
            ({"status": "resolved", "text": ""}, "text"),
            ({"status": "resolved"}, "text"),
            ({"status": "resolved", "text": "x", "at": 1}, "at"),
        ):
            err = assert_error(await c.post(path, json=body, headers=ADMIN), 422)
            assert field in err["message"], (body, err)
        assert (await c.get(f"/api/v1/incidents/{doc['id']}")).json()["updates"] == []


# ---------------------------------------------------------------------------- maintenance
@pytest.mark.slow
async def test_maintenance_windows_are_listed_shown_and_silence_alerts(tmp_path: Path) -> None:
    secret = "a-webhook-secret-of-some-length"
    hooks = Hooks(secret)
    clock = Clock()
    with hooks.server:
        url = f"http://127.0.0.1:{hooks.server.port}/hook"
        async with running(tmp_path, clock, history=("x",), flags=PRIVATE) as (server, c):
            sub = {"channel": "webhook", "url": url, "secret": secret}
            assert (
                await c.post("/api/v1/subscriptions", json=sub, headers=ADMIN)
            ).status_code == 201
            later = {
                "service": "meta",  # a group: facebook, instagram, whatsapp
                "starts_at": clock.t + 7200,
                "ends_at": clock.t + 9000,
                "title": "Database upgrade",
            }
            now = {
                "service": "twitter",  # an alias of x
                "starts_at": "2025-10-09T08:00:00Z",
                "ends_at": clock.t + 3600,
                "title": "Moving to a new data centre",
            }
            r1 = await c.post("/api/v1/maintenance", json=later, headers=ADMIN)
            r2 = await c.post("/api/v1/maintenance", json=now, headers=ADMIN)
            assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
            w = r2.json()
            assert w["service"] == "x" and w["starts_at"] == "2025-10-09T08:00:00Z"
            assert set(w) == {"id", "service", "starts_at", "ends_at", "title"}
            listed = (await c.get("/api/v1/maintenance")).json()
            assert [x["id"] for x in listed] == [w["id"], r1.json()["id"]]  # soonest first
            statuses = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert statuses["x"] == "maintenance" and statuses["facebook"] == "ok"
            assert (await c.get("/api/v1/services/x")).json()["status"] == "maintenance"
            home = (await c.get("/")).text
            assert "Moving to a new data centre" in home and "Database upgrade" in home
            assert "Database upgrade" in (await c.get("/services/facebook")).text
            await outage(server, clock)
            (doc,) = (await c.get("/api/v1/incidents")).json()
            assert doc["maintenance"] is True
            assert server.alerter is not None
            await server.alerter.idle(5)
            assert hooks.got == []
            assert (await c.get("/api/v1/deliveries", headers=ADMIN)).json() == []
            assert (
                await c.delete(f"/api/v1/maintenance/{w['id']}", headers=ADMIN)
            ).status_code == 204
            assert [x["id"] for x in (await c.get("/api/v1/maintenance")).json()] == [
                r1.json()["id"]
            ]
            statuses = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert statuses["x"] != "maintenance"


@pytest.mark.slow
async def test_maintenance_errors(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as (_, c):
        good = {"service": "x", "starts_at": clock.t, "ends_at": clock.t + 60, "title": "t"}
        assert_error(await c.post("/api/v1/maintenance", json=good), 401, "unauthorized")
        for change, field in (
            ({"service": "nope"}, "service"),
            ({"ends_at": clock.t - 1}, "ends_at"),
            ({"starts_at": "soon"}, "starts_at"),
            ({"ends_at": clock.t + 40 * 86_400}, "ends_at"),
            ({"title": ""}, "title"),
            ({"extra": 1}, "extra"),
        ):
            r = await c.post("/api/v1/maintenance", json={**good, **change}, headers=ADMIN)
            err = assert_error(r, 422)
            assert field in err["message"], (change, err)
        assert_error(await c.delete("/api/v1/maintenance/nope", headers=ADMIN), 404, "not_found")
        assert (await c.get("/api/v1/maintenance")).json() == []


# ---------------------------------------------------------------------------- follow
@pytest.mark.slow
async def test_a_service_feed_has_its_incidents_and_updates_only(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x", "facebook")) as (server, c):
        doc = await incident_of(server, c, clock)
        await outage(server, clock, "facebook")
        path = f"/api/v1/incidents/{doc['id']}/updates"
        body = {"status": "monitoring", "text": "A fix is rolling out & <looks> good."}
        assert (await c.post(path, json=body, headers=ADMIN)).status_code == 201
        r = await c.get("/feeds/services/twitter.atom")  # an alias
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/atom+xml")
        root = ET.fromstring(r.content)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        assert root.findtext("a:title", namespaces=ns) == "outagewatch: X"
        assert root.find("a:link", ns).get("href").endswith("/feeds/services/x.atom")  # type: ignore[union-attr]
        titles = [e.findtext("a:title", namespaces=ns) or "" for e in root.findall("a:entry", ns)]
        assert len(titles) == 2 and all(t.startswith("X: ") for t in titles)
        assert "X: monitoring (update)" in titles
        summaries = [e.findtext("a:summary", namespaces=ns) for e in root.findall("a:entry", ns)]
        assert body["text"] in summaries
        everything = ET.fromstring((await c.get("/feeds/incidents.atom")).content)
        assert len(everything.findall("a:entry", ns)) == 3
        assert_error(await c.get("/feeds/services/nope.atom"), 404, "not_found")
        page = (await c.get("/services/x")).text
        assert 'href="/feeds/services/x.atom"' in page and 'href="/badges/x.svg"' in page


@pytest.mark.slow
async def test_a_badge_names_the_service_and_colours_its_status(tmp_path: Path) -> None:
    from outagewatch.catalog import Catalog
    from test_serve_watch import DEMO

    catalog = Catalog.from_toml(
        DEMO + '\n[services.amp]\nname = "A & <B> \\"q\\""\nproblems = ["app"]\n'
    )
    clock = Clock()
    async with running(tmp_path, clock, catalog=catalog, history=("x",)) as (server, c):
        r = await c.get("/badges/x.svg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert "max-age=" in r.headers["cache-control"] and r.headers["etag"]
        svg = ET.fromstring(r.content)
        assert svg.findtext("{http://www.w3.org/2000/svg}title") == "X: ok"
        assert 'fill="#1f9d55"' in r.text
        again = await c.get("/badges/x.svg", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        await outage(server, clock)
        r = await c.get("/badges/x.svg")
        title = ET.fromstring(r.content).findtext("{http://www.w3.org/2000/svg}title")
        assert title in ("X: outage", "X: problems")
        assert 'fill="#1f9d55"' not in r.text
        amp = await c.get("/badges/amp.svg")
        assert "A &amp; &lt;B&gt; &quot;q&quot;" in amp.text and "<B>" not in amp.text
        svg = ET.fromstring(amp.content)  # well-formed: the quotes in aria-label are escaped
        assert svg.get("aria-label") == 'A & <B> "q": ok'
        assert svg.findtext("{http://www.w3.org/2000/svg}title") == 'A & <B> "q": ok'
        assert_error(await c.get("/badges/nope.svg"), 404, "not_found")


# ---------------------------------------------------------------------------- the catalog
@pytest.mark.slow
async def test_a_service_put_over_http_takes_reports_at_once_and_can_go(tmp_path: Path) -> None:
    import tomllib

    clock = Clock()
    async with running(tmp_path, clock) as (server, c):
        body = {
            "name": "Mastodon",
            "aliases": ["toots"],
            "group": "fediverse",
            "problems": ["app", "login"],
            "metrics": {"error_rate": "errors"},
        }
        r = await c.put("/api/v1/services/mastodon", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        assert r.json() == {"id": "mastodon", **body}
        # At once: reports for it (by alias too), its page, its JSON, the list.
        item = {"service": "toots", "country": "DE", "problem": "login"}
        r = await c.post("/api/v1/reports", json=item)
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
        assert (await c.get("/services/mastodon")).status_code == 200
        ids = [s["id"] for s in (await c.get("/api/v1/services")).json()]
        assert "mastodon" in ids
        assert server.bus is not None
        clock.t += 120
        await server.bus.tick(commit=True)
        doc = (await c.get("/api/v1/services/mastodon")).json()
        assert sum(m["reports"] for m in doc["minutes"]) == 1
        # Replaced: 200; the catalog as TOML has it; the store keeps it for the next start.
        r = await c.put("/api/v1/services/mastodon", json={**body, "name": "Mastodon.social"},
                        headers=ADMIN)  # fmt: skip
        assert r.status_code == 200 and r.json()["name"] == "Mastodon.social"
        toml = await c.get("/api/v1/catalog", headers=ADMIN)
        assert toml.headers["content-type"].startswith("application/toml")
        parsed = tomllib.loads(toml.text)
        assert parsed["services"]["mastodon"]["name"] == "Mastodon.social"
        assert parsed["services"]["x"]["name"] == "X"
        assert server.reader is not None and server.reader.load_catalog() == toml.text
        # Removed: reports for it are refused, its history stays in the store.
        assert (await c.delete("/api/v1/services/mastodon", headers=ADMIN)).status_code == 204
        r = await c.post("/api/v1/reports", json=item)
        assert_error(r, 422, "no_valid_item")
        assert (await c.get("/services/mastodon")).status_code == 404
        assert_error(await c.delete("/api/v1/services/mastodon", headers=ADMIN), 404)
        counts = server.reader.minute_counts("mastodon", clock.t - 3600, clock.t)
        assert int(counts.sum()) == 1


@pytest.mark.slow
async def test_a_bad_service_is_the_loaders_error_as_422(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        before = server.catalog.source
        for sid, body, words in (
            ("m", {"name": "M", "colour": "red"}, ["service 'm'", "key 'colour'", "unknown key"]),
            ("m", {"name": "M", "depends_on": ["nope"]}, ["service 'm'", "depends_on"]),
            ("m", {"name": "M", "metrics": {"e": "speed"}}, ["service 'm'", "metrics"]),
            ("m", {"name": "M", "probes": [{"url": "x", "interval_s": 0}]}, ["probes"]),
            ("m", {"name": "M", "group": None}, ["group", "null"]),
            ("m", ["M"], ["service 'm'"]),
            ("Bad_Id", {"name": "M"}, ["Bad_Id"]),
        ):
            r = await c.put(f"/api/v1/services/{sid}", json=body, headers=ADMIN)
            err = assert_error(r, 422)
            assert all(w in err["message"] for w in words), (body, err["message"])
        assert_error(await c.put("/api/v1/services/m", json={"name": "M"}), 401, "unauthorized")
        # Removing a service that others name in depends_on is the loader's error too.
        deps = [s for s in server.catalog.services.values() if s.depends_on]
        if deps:
            r = await c.delete(f"/api/v1/services/{deps[0].depends_on[0]}", headers=ADMIN)
            assert deps[0].id in assert_error(r, 422, "invalid_catalog")["message"]
        assert server.catalog.source == before

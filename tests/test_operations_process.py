"""Contract §8 against the real `outagewatch serve` process: scoped tokens, an operator's
update on a real incident, a maintenance window, the service feed and badge, and that all
of it survives a restart."""

from __future__ import annotations

import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from test_server_process import serve
from webutil import free_port, post_x_surge, warm_db

ADMIN = {"Authorization": "Bearer tok"}  # what test_server_process.serve sets


def test_tokens_updates_maintenance_and_badges_on_the_server_process(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    warm_db(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(db, port) as proc, httpx.Client(base_url=base, timeout=10) as c:
        tokens = {}
        for scope in ("ingest", "read"):
            r = c.post("/api/v1/tokens", json={"name": scope, "scopes": [scope]}, headers=ADMIN)
            assert r.status_code == 201, r.text
            tokens[scope] = {"Authorization": f"Bearer {r.json()['token']}"}
        # A partner with the ingest scope forwards a surge (no rate limit on it).
        post_x_surge(c, tokens["ingest"])
        r = c.post("/api/v1/probes", json={"service": "x", "target": "https://x.com/", "ok": False},
                   headers=tokens["read"])  # fmt: skip
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert c.get("/metrics").status_code == 401
        assert "outagewatch_events_accepted_total" in c.get("/metrics", headers=tokens["read"]).text
        deadline = time.monotonic() + 90
        docs: list[dict[str, object]] = []
        while not docs and time.monotonic() < deadline:
            docs = c.get("/api/v1/incidents?status=ongoing").json()
            time.sleep(0.5)
        (doc,) = docs
        # The operator's update.
        text = "We rolled back a bad deploy; logins recover."
        r = c.post(f"/api/v1/incidents/{doc['id']}/updates",
                   json={"status": "resolved", "text": text}, headers=ADMIN)  # fmt: skip
        assert r.status_code == 201, r.text
        got = c.get(f"/api/v1/incidents/{doc['id']}").json()
        assert got["status"] == "ongoing" and [u["text"] for u in got["updates"]] == [text]
        page = c.get(f"/incidents/{doc['id']}").text
        assert text in page and "operator says resolved" in page.lower()
        feed = ET.fromstring(c.get("/feeds/services/x.atom").content)
        assert text in ET.tostring(feed, encoding="unicode")
        assert b"X: ok" not in c.get("/badges/x.svg").content
        # A maintenance window of a group, going on now.
        window = {"service": "meta", "starts_at": time.time() - 60, "ends_at": time.time() + 3600,
                  "title": "Planned database upgrade"}  # fmt: skip
        r = c.post("/api/v1/maintenance", json=window, headers=ADMIN)
        assert r.status_code == 201, r.text
        statuses = {s["id"]: s["status"] for s in c.get("/api/v1/services").json()}
        assert statuses["facebook"] == statuses["instagram"] == "maintenance"
        assert "Planned database upgrade" in c.get("/").text
        assert b"Facebook: maintenance" in c.get("/badges/facebook.svg").content
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # Everything survives a restart: tokens (as hashes), the update, the window.
    with serve(db, port), httpx.Client(base_url=base, timeout=10) as c:
        assert c.get("/metrics", headers=tokens["read"]).status_code == 200
        got = c.get(f"/api/v1/incidents/{doc['id']}").json()
        assert [u["text"] for u in got["updates"]] == [text]
        (w,) = c.get("/api/v1/maintenance").json()
        assert w["service"] == "meta" and w["title"] == "Planned database upgrade"
        statuses = {s["id"]: s["status"] for s in c.get("/api/v1/services").json()}
        assert statuses["whatsapp"] == "maintenance"


def test_a_service_added_over_http_takes_reports_the_same_second(tmp_path: Path) -> None:
    db = tmp_path / "cat.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    body = {"name": "Bluesky", "aliases": ["bsky"], "problems": ["app", "feed"]}
    with serve(db, port) as proc, httpx.Client(base_url=base, timeout=10) as c:
        t0 = time.monotonic()
        r = c.put("/api/v1/services/bluesky", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/reports", json={"service": "bsky", "country": "US", "problem": "feed"})
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
        assert time.monotonic() - t0 < 1.0
        doc = c.get("/api/v1/services/bluesky").json()
        assert doc["minutes"][-1]["reports"] + doc["minutes"][-2]["reports"] == 1
        assert "Bluesky" in c.get("/").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # The next start without --catalog serves the stored catalog, the new service in it.
    with serve(db, port), httpx.Client(base_url=base, timeout=10) as c:
        doc = c.get("/api/v1/services/bsky").json()
        assert doc["id"] == "bluesky" and sum(m["reports"] for m in doc["minutes"]) == 1
        assert "[services.bluesky]" in c.get("/api/v1/catalog", headers=ADMIN).text

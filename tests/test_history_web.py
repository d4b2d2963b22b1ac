"""The long views (issue 20): GET /api/v1/services/{id}/history and the 90-day bar, and
`backup` of a store while a real `serve` ingests."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_api import assert_error
from test_server_process import serve
from webutil import Clock, free_port, outage, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.slow
async def test_history_has_a_row_per_day_with_reports_and_incidents(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, client):
        await outage(server, clock, "x")
        assert server.bus is not None
        await server.bus.tick(clock.t, commit=True)
        r = await client.get("/api/v1/services/x/history", params={"days": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "x" and len(body["days"]) == 4
        days = body["days"]
        assert [d["date"] for d in days] == ["2025-10-06", "2025-10-07", "2025-10-08", "2025-10-09"]
        assert set(days[0]) == {"date", "status", "incidents", "outage_minutes", "reports"}
        assert server.reader is not None
        d0 = int(clock.t // 86_400) - 3
        stored = server.reader.minute_counts("x", d0 * 86_400, (d0 + 4) * 86_400)
        assert sum(d["reports"] for d in days) == int(np.sum(stored)) > 0
        assert days[0]["reports"] == 0 and days[1]["reports"] > 0  # history began 2 days ago
        today = days[-1]
        assert today["incidents"] == 1 and today["status"] in ("problems", "outage")
        assert 0 < today["outage_minutes"] <= 24 * 60
        assert [d["incidents"] for d in days[:-1]] == [0, 0, 0]
        # The default is 90 days, and an alias names the service too.
        r = await client.get("/api/v1/services/x/history")
        assert len(r.json()["days"]) == 90


@pytest.mark.slow
async def test_serve_compacts_history_in_the_background(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, _):
        reader = server.reader
        assert reader is not None
        hour = int(clock.t // 3600)
        for _ in range(200):  # the compactor's first round starts with the server
            raw = [h for h, _ in reader.stored_counts("x", 0, 10**9).raw]
            if raw and min(raw) >= hour - 1:
                break
            await asyncio.sleep(0.05)
        assert raw and min(raw) >= hour - 1, "only the current and the previous hour stay raw"
        days = [d for d, res, _, _ in reader.stored_counts("x", 0, 10**9).blocks if res == 1]
        assert days == [hour // 24 - 2, hour // 24 - 1, hour // 24]


@pytest.mark.parametrize("days", ["0", "401", "abc", "-3", "1.5"])
@pytest.mark.slow
async def test_history_refuses_a_bad_span(tmp_path: Path, days: str) -> None:
    async with running(tmp_path, Clock()) as (_, client):
        r = await client.get("/api/v1/services/x/history", params={"days": days})
        assert "days" in assert_error(r, 422, "invalid_request")["message"]


@pytest.mark.slow
async def test_history_of_an_unknown_service_is_404(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, client):
        assert_error(await client.get("/api/v1/services/nope/history"), 404, "not_found")


@pytest.mark.slow
async def test_the_service_page_shows_a_90_day_bar(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",)) as (server, client):
        await outage(server, clock, "x")
        r = await client.get("/services/x")
        assert r.status_code == 200
        bar = r.text[r.text.index('class="history-bar"') :]
        cells = re.findall(
            r'<span role="listitem" class="day ([a-z ]+)" data-date="([0-9-]+)"', bar
        )
        assert len(cells) == 90
        assert cells[-1][1] == "2025-10-09" and cells[-1][0].split()[0] in ("problems", "outage")
        assert "1 incident, " in bar and "incidents on 1 day," in bar


# ---------------------------------------------------------------------- backup
@pytest.mark.slow
def test_backup_while_serve_ingests_has_every_acknowledged_report(tmp_path: Path) -> None:
    """A real `serve` takes reports as fast as one client posts them; `backup` runs in the
    middle. The copy opens, and restored (a `serve` on the copy: it replays its journal),
    it counts at least every report acknowledged before the backup began."""
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    port = free_port()
    acked: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        auth = {"Authorization": "Bearer tok"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=auth) as c:
            i = 0
            while not stop.is_set():
                items = [
                    {"service": "x", "country": "US", "reporter": f"p-{i + k}"} for k in range(20)
                ]
                i += 20
                try:
                    r = c.post("/api/v1/reports", json=items)
                except httpx.TransportError:
                    return
                if r.status_code == 202:
                    acked.append(r.json()["accepted"])

    with serve(db, port):
        t = threading.Thread(target=stream)
        t.start()
        try:
            deadline = time.monotonic() + 30
            while sum(acked) < 2000 and time.monotonic() < deadline:
                time.sleep(0.05)
            before = sum(acked)
            done = subprocess.run(
                [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "backup", str(copy)],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            time.sleep(0.5)
            during = sum(acked)
        finally:
            stop.set()
            t.join(10)
    assert done.returncode == 0, done.stderr
    assert "backed up" in done.stderr
    assert before >= 2000 and during > before  # ingest went on around the backup
    con = sqlite3.connect(copy)
    assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    con.close()
    port2 = free_port()
    with serve(copy, port2):
        doc = httpx.get(f"http://127.0.0.1:{port2}/api/v1/services/x").json()
        counted = sum(m["reports"] for m in doc["minutes"])
    assert before <= counted <= during + 20

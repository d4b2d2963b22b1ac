"""The server's clock bounds the time (pipeline.clock, engine): a server whose clock is
behind still takes its clients' true times, and one restarted after its clock ran a day
ahead does not keep a time a day ahead."""

from __future__ import annotations

from pathlib import Path

import pytest

from outagewatch.events import iso
from webutil import T0, TOKEN, Clock, running

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def probe(ts: float) -> dict[str, object]:
    return {"service": "x", "target": "https://x.com/", "ok": True, "ts": iso(ts)}


@pytest.mark.slow
async def test_a_server_an_hour_behind_takes_its_clients_true_times(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        r = await c.post("/api/v1/probes", json=probe(T0 + 55 * 60), headers=AUTH)
        assert r.status_code == 202, r.text
        r = await c.post("/api/v1/probes", json=probe(T0 + 2 * 3600), headers=AUTH)
        assert r.status_code == 422
        message = r.json()["error"]["message"]
        assert "too far ahead" in message and "3600 s ahead of the server's clock" in message


@pytest.mark.slow
async def test_a_server_restarted_after_running_a_day_ahead_goes_back(tmp_path: Path) -> None:
    ahead = Clock(T0 + 86_400)
    async with running(tmp_path, ahead) as (server, c):
        for _ in range(3):
            r = await c.post("/api/v1/reports", json={"service": "x", "country": "US"})
            assert r.status_code == 202
        ahead.t += 120
        assert server.bus is not None
        await server.bus.tick(ahead.t, commit=True)
        assert server.engine is not None
        assert (server.engine.pipeline.watermark or 0) >= T0 + 86_400
    now = Clock(T0)
    async with running(tmp_path, now) as (server, c):
        assert server.engine is not None
        p = server.engine.pipeline
        assert p.watermark is not None and p.watermark <= T0 + 3600
        late = p.stats.late
        for _ in range(3):
            r = await c.post("/api/v1/reports", json={"service": "x", "country": "GB"})
            assert r.status_code == 202
        now.t += 120
        assert server.bus is not None
        await server.bus.tick(now.t, commit=True)
        assert p.stats.late == late  # today's reports count on time
        assert p.closed_until <= int((T0 + 3600) // 60)

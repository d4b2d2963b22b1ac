"""Public reports are one person, now (issue 14): `count` and `ts` only with the operator
token, and only JSON is JSON on the ingest POSTs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from outagewatch.events import iso
from webutil import TOKEN, Clock, running

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def counted(doc: dict[str, Any]) -> int:
    return sum(m["reports"] for m in doc["minutes"])


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.slow
async def test_a_public_count_of_a_million_a_minute_opens_no_incident(
    tmp_path: Path, fast: bool
) -> None:
    clock = Clock()
    async with running(tmp_path, clock, history=("x",), fast=fast) as (server, c):
        assert server.bus is not None
        for k in range(15):
            item = {"service": "x", "country": "US", "count": 1_000_000, "reporter": f"m{k}"}
            one = {"service": "x", "country": "GB", "reporter": f"g{k}"}
            r = await c.post("/api/v1/reports", json=[item, one])
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] == 1
            (rej,) = r.json()["rejected"]
            assert rej["index"] == 0 and "count" in rej["reason"] and "token" in rej["reason"]
            clock.t += 60
            await server.bus.tick(clock.t)
        assert (await c.get("/api/v1/incidents")).json() == []
        assert {s["status"] for s in (await c.get("/api/v1/services")).json()} == {"ok"}
        minutes = (await c.get("/api/v1/services/x")).json()["minutes"]
        assert counted({"minutes": minutes[-16:]}) == 15  # the GB reports, one a minute
        # One item alone with a count is refused with the error shape.
        r = await c.post("/api/v1/reports", json={"service": "x", "country": "US", "count": 2})
        assert r.status_code == 422 and "count" in r.json()["error"]["message"]
        # The operator token may still import counts.
        item = {"service": "x", "country": "US", "count": 50}
        r = await c.post("/api/v1/reports", json=item, headers=AUTH)
        assert r.status_code == 202 and r.json()["accepted"] == 1


@pytest.mark.slow
async def test_a_public_ts_far_from_arrival_is_the_arrival_time(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, fast=True) as (server, c):
        assert server.bus is not None
        items = [
            {"service": "x", "country": "US", "ts": "2000-01-01T00:00:00Z", "reporter": "a"},
            {"service": "x", "country": "US", "ts": 946_684_800, "reporter": "b"},
            {"service": "x", "country": "US", "ts": iso(clock.t - 3 * 3600), "reporter": "c"},
            {"service": "x", "country": "US", "ts": clock.t + 240, "reporter": "d"},
            {"service": "x", "country": "US", "ts": clock.t - 60, "reporter": "e"},  # queued
        ]
        r = await c.post("/api/v1/reports", json=items)
        assert r.status_code == 202 and r.json() == {"accepted": 5, "rejected": []}
        minutes = (await c.get("/api/v1/services/x")).json()["minutes"]
        assert minutes[-1]["reports"] == 4  # the four far off count now
        assert minutes[-2]["reports"] == 1  # a minute ago, as sent
        assert counted({"minutes": minutes[:-2]}) == 0
        await server.bus.tick(clock.t + 60, commit=True)
        store = server.engine.store if server.engine is not None else None
        assert store is not None
        old = store.minute_counts("x", 946_684_800, clock.t - 3600)
        assert int(old.sum()) == 0
        # With the operator token a time is kept as sent (a history import).
        item = {"service": "x", "country": "US", "ts": clock.t - 3 * 3600, "count": 7}
        r = await c.post("/api/v1/reports", json=item, headers=AUTH)
        assert r.status_code == 202
        await server.bus.tick(clock.t + 60, commit=True)
        old = store.minute_counts("x", clock.t - 3 * 3600, clock.t - 3 * 3600 + 60)
        assert int(old.sum()) == 7


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; b=x",
        "application/jsonp",
        "text/json",
    ],
)
@pytest.mark.slow
async def test_only_json_is_json(tmp_path: Path, fast: bool, content_type: str | None) -> None:
    async with running(tmp_path, Clock(), fast=fast) as (_, c):
        body = b'{"service": "x", "country": "US"}'
        headers = {} if content_type is None else {"Content-Type": content_type}
        for path, auth in (("/api/v1/reports", {}), ("/api/v1/metrics", AUTH)):
            r = await c.post(path, content=body, headers={**headers, **auth})
            assert r.status_code == 415, r.text
            err = r.json()["error"]
            assert err["code"] == "unsupported_media_type"
            assert "application/json" in err["message"]
        for ok in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
            r = await c.post("/api/v1/reports", content=body, headers={"Content-Type": ok})
            assert r.status_code == 202, r.text


@pytest.mark.slow
async def test_a_public_batch_larger_than_the_rate_limit_is_refused_clearly(
    tmp_path: Path,
) -> None:
    flags = {"OUTAGEWATCH_RATE_PER_IP": "60", "OUTAGEWATCH_RATE_PER_BLOCK": "600"}
    async with running(tmp_path, Clock(), flags=flags, fast=True) as (_, c):
        item = {"service": "x", "country": "US"}
        r = await c.post("/api/v1/reports", json=[item] * 61)
        assert r.status_code == 413, r.text
        assert "retry-after" not in r.headers
        err = r.json()["error"]
        assert err["code"] == "too_large" and "60" in err["message"]
        r = await c.post("/api/v1/reports", json=[item] * 60)  # the bucket was left full
        assert r.status_code == 202 and r.json()["accepted"] == 60
        r = await c.post("/api/v1/reports", json=[item] * 61, headers=AUTH)  # not limited
        assert r.status_code == 202

"""One suite for every bus (the Bus protocol of bus/base.py), run on the single-process
writer (runtime/writer.py, durable in the store's journal) and on NATS JetStream (durable in
the stream): what `publish` promises is the same whichever carries the events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors
import orjson
import pytest

from outagewatch.bus.base import Bus
from outagewatch.bus.nats import NatsBus, PartitionReader, connect
from outagewatch.catalog import Catalog
from outagewatch.runtime.engine import Engine
from outagewatch.runtime.writer import LocalBus
from outagewatch.settings import PipelineSettings
from outagewatch.store import open_store
from services import nats_url, unique_name

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Carrier:
    bus: Bus
    durable: Callable[[], Awaitable[list[bytes]]]  # every line made durable so far


def line(service: str, i: int) -> bytes:
    return orjson.dumps(
        {"type": "report", "service": service, "ts": 1_741_595_460 + i, "country": "US",
         "reporter": f"r{i}"}
    )  # fmt: skip


@contextlib.asynccontextmanager
async def local(tmp_path: Path) -> AsyncIterator[Carrier]:
    store = open_store(str(tmp_path / "bus.db"))
    engine = Engine(store, Catalog.demo(), PipelineSettings(), now=time.time())
    bus = LocalBus(engine)
    bus.start()

    async def durable() -> list[bytes]:
        rows = await asyncio.to_thread(store.journal_after, 0)
        return [ln for _, batch in rows for ln in batch.split(b"\n") if ln]

    try:
        yield Carrier(bus, durable)
    finally:
        await bus.close()
        store.close()


@contextlib.asynccontextmanager
async def jetstream(_: Path) -> AsyncIterator[Carrier]:
    name = unique_name("owbus")
    bus = await NatsBus.open(nats_url(), name, 4)

    async def durable() -> list[bytes]:
        out: list[bytes] = []
        for part in range(bus.partitions):
            reader = await PartitionReader.start(bus.js, name, part, 0)
            try:
                while got := await reader.fetch(1000, 0.3):
                    out += [ln for rec, _ in got for ln in rec.lines]
            finally:
                await reader.stop()
        return out

    try:
        yield Carrier(bus, durable)
    finally:
        await bus.close()
        nc = await connect(nats_url(), "outagewatch-test")
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(name)
        await nc.close()


CARRIERS = {"local": local, "nats": jetstream}


@pytest.fixture(params=sorted(CARRIERS))
async def carrier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Carrier]:
    async with CARRIERS[request.param](tmp_path) as c:
        yield c


@pytest.mark.slow
async def test_publish_returns_once_every_line_is_durable(carrier: Carrier) -> None:
    batch = [line("x", i) for i in range(5)] + [line("netflix", i) for i in range(3)]
    await carrier.bus.publish(batch, ["x"] * 5 + ["netflix"] * 3)
    got = await carrier.durable()
    assert sorted(got) == sorted(batch)
    # Each service's lines stay in the order they were published.
    assert [ln for ln in got if b'"x"' in ln] == batch[:5]


@pytest.mark.slow
async def test_an_empty_batch_stores_nothing(carrier: Carrier) -> None:
    await carrier.bus.publish([], [])
    assert await carrier.durable() == []


@pytest.mark.slow
async def test_lines_and_services_must_pair_up(carrier: Carrier) -> None:
    with pytest.raises(ValueError, match="2 lines but 1 services"):
        await carrier.bus.publish([line("x", 0), line("x", 1)], ["x"])
    assert await carrier.durable() == []


async def test_closing_twice_is_harmless(carrier: Carrier) -> None:
    await carrier.bus.publish([line("x", 0)], ["x"])
    await carrier.bus.close()
    await carrier.bus.close()

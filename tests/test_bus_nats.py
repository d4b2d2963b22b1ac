"""The NATS JetStream bus against a real server: partitions, durability, message ids, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats.js.errors
import pytest

from outagewatch.bus.nats import NatsBus, PartitionReader, connect, ensure_stream, partition_of
from outagewatch.errors import BusError
from services import nats_url, unique_name


@pytest.fixture
def stream() -> Iterator[str]:
    name = unique_name("owbus")
    yield name

    async def drop() -> None:
        nc = await connect(nats_url(), "outagewatch-test")
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(drop())


def run(fn: Callable[[NatsBus], Awaitable[Any]], stream: str, partitions: int = 4) -> Any:
    async def main() -> Any:
        bus = await NatsBus.open(nats_url(), stream, partitions)
        try:
            return await fn(bus)
        finally:
            await bus.close()

    return asyncio.run(main())


async def read_all(bus: NatsBus, partition: int, position: int = 0) -> list[tuple[int, bytes]]:
    """(stream seq, line) of every line of a partition after `position`."""
    reader = await PartitionReader.start(bus.js, bus.stream, partition, position)
    out = []
    try:
        while got := await reader.fetch(1000, 0.5):
            out += [(rec.seq, line) for rec, _ in got for line in rec.lines]
    finally:
        await reader.stop()
    return out


def test_partition_of_is_a_stable_hash() -> None:
    # crc32 values: the same in every process, on every machine, in every version.
    assert [partition_of(s, 8) for s in ("x", "facebook", "netflix", "whatsapp")] == [3, 0, 3, 5]
    assert {partition_of(f"svc-{i:03d}", 8) for i in range(100)} == set(range(8))
    assert all(partition_of(f"svc-{i}", 1) == 0 for i in range(10))


def test_published_lines_land_in_their_service_partition_in_order(stream: str) -> None:
    services = ["x", "facebook", "x", "netflix", "facebook", "x"]
    lines = [f'{{"n":{i},"service":"{s}"}}'.encode() for i, s in enumerate(services)]

    async def go(bus: NatsBus) -> dict[int, list[bytes]]:
        await bus.publish(lines[:3], services[:3])
        await bus.publish(lines[3:], services[3:])
        return {p: [ln for _, ln in await read_all(bus, p)] for p in range(4)}

    got = run(go, stream)
    want: dict[int, list[bytes]] = {p: [] for p in range(4)}
    for line, s in zip(lines, services, strict=True):
        want[partition_of(s, 4)].append(line)
    assert got == want


def test_a_batch_larger_than_a_message_is_split_and_kept_whole(stream: str) -> None:
    line = b'{"pad":"' + b"a" * 10_000 + b'"}'
    lines = [line.replace(b"a", str(i % 10).encode(), 1) for i in range(300)]  # ~3 MB

    async def go(bus: NatsBus) -> list[tuple[int, bytes]]:
        await bus.publish(lines, ["x"] * len(lines))
        return await read_all(bus, partition_of("x", 4))

    got = run(go, stream)
    assert [ln for _, ln in got] == lines
    assert len({seq for seq, _ in got}) >= 3  # several messages, none over the limit


def test_a_resent_message_id_is_stored_once(stream: str) -> None:
    async def go(bus: NatsBus) -> list[tuple[int, bytes]]:
        for _ in range(3):  # a publisher retrying after lost acknowledgements
            await bus._send(f"{stream}.0", b'{"once":1}', "batch-1-0-0")
        await bus._send(f"{stream}.0", b'{"other":1}', "batch-2-0-0")
        return await read_all(bus, 0)

    assert run(go, stream) == [(1, b'{"once":1}'), (2, b'{"other":1}')]


def test_a_reader_resumes_right_after_a_position(stream: str) -> None:
    async def go(bus: NatsBus) -> list[tuple[int, bytes]]:
        for i in range(5):
            await bus.publish([f'{{"i":{i}}}'.encode()], ["x"])
        return await read_all(bus, partition_of("x", 4), position=3)

    assert run(go, stream) == [(4, b'{"i":3}'), (5, b'{"i":4}')]


def test_a_stream_made_for_other_partitions_is_refused(stream: str) -> None:
    run(lambda bus: asyncio.sleep(0), stream, partitions=4)
    with pytest.raises(BusError) as info:
        run(lambda bus: asyncio.sleep(0), stream, partitions=8)
    msg = str(info.value)
    assert stream in msg and "4" in msg and "8" in msg


def test_mismatched_lines_and_services_are_refused(stream: str) -> None:
    with pytest.raises(ValueError, match="2 lines but 1 services"):
        run(lambda bus: bus.publish([b"{}", b"{}"], ["x"]), stream)


def test_no_server_is_a_bus_error_naming_the_url() -> None:
    url = "nats://127.0.0.1:9"  # discard port: nothing listens there
    with pytest.raises(BusError, match=r"127\.0\.0\.1:9"):
        asyncio.run(NatsBus.open(url, "nothere"))


def test_ensure_stream_is_idempotent(stream: str) -> None:
    async def go(bus: NatsBus) -> int:
        await ensure_stream(bus.js, stream, 4)
        await ensure_stream(bus.js, stream, 4)
        info = await bus.js.stream_info(stream)
        return int(info.state.messages)

    assert run(go, stream) == 0

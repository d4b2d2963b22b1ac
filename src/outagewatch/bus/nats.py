"""The NATS JetStream bus: accepted events go to a durable stream, partitioned by service.

One stream (`--stream`, default `outagewatch`) with subjects `STREAM.0` ... `STREAM.{P-1}`;
a service's events always go to partition `partition_of(service, P)`, a stable hash, so one
worker sees all of a service's events, in order. `publish` groups a batch by partition, sends
one message per partition (split when larger than the server's payload limit), each with a
`Nats-Msg-Id`, and returns when JetStream has acknowledged every message: then the events are
durable. A publish retried after a lost acknowledgement carries the same ids, so JetStream
stores it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from outagewatch.errors import BusError

CONNECT_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 5.0
PUBLISH_ATTEMPTS = 3
MAX_AGE_S = 7 * 86_400  # events stay in the stream a week (replays, slow workers)
DUPLICATE_WINDOW_S = 120.0  # JetStream drops a message id seen this recently
PAYLOAD_MARGIN = 4096  # headers and framing, below the server's max_payload
_DESCRIPTION = "outagewatch accepted events; partitions={}"


def partition_of(service: str, partitions: int) -> int:
    """The partition of a service: a stable hash (the same in every process and version)."""
    return zlib.crc32(service.encode("utf-8")) % partitions


def subject(stream: str, partition: int) -> str:
    return f"{stream}.{partition}"


def consumer_name(stream: str, partition: int) -> str:
    return f"{stream}-p{partition}"


@dataclass(frozen=True)
class Received:
    """One message of a partition: its stream sequence and its event lines."""

    seq: int
    lines: list[bytes]


async def connect(url: str, name: str) -> Any:
    """A NATS connection, or a `BusError` naming the URL."""

    async def quiet(exc: Exception) -> None:  # reconnects are handled by the client
        return None

    try:
        # Once connected the client reconnects forever; the first connection gets a deadline.
        return await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            ),
            CONNECT_TIMEOUT_S,
        )
    except TimeoutError:
        raise BusError(f"NATS {url}: cannot connect within {CONNECT_TIMEOUT_S:g} s") from None
    except Exception as exc:  # the client raises many types; all mean "cannot connect"
        raise BusError(f"NATS {url}: cannot connect: {exc or type(exc).__name__}") from None


async def ensure_stream(js: Any, stream: str, partitions: int) -> None:
    """Create the stream if missing; refuse one made with another number of partitions."""
    want = _DESCRIPTION.format(partitions)
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(
            name=stream,
            subjects=[f"{stream}.*"],
            description=want,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # Another process created it at the same moment: check what it made.
            if "already in use" not in str(exc):
                raise BusError(f"NATS stream {stream}: cannot create it: {exc}") from None
            info = await js.stream_info(stream)
        else:
            return
    except nats.errors.Error as exc:
        raise BusError(f"NATS stream {stream}: cannot read its configuration: {exc}") from None
    have = info.config.description or ""
    if have != want:
        raise BusError(
            f"NATS stream {stream} was made for {have.rsplit('=', 1)[-1] or 'an unknown number of'}"
            f" partitions, but --partitions / OUTAGEWATCH_PARTITIONS is {partitions}"
        )


class NatsBus:
    """The Bus of API nodes in a scaled-out deployment (see `outagewatch.bus.base.Bus`)."""

    def __init__(self, nc: Any, stream: str, partitions: int) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.partitions = partitions
        self.max_bytes = max(int(nc.max_payload) - PAYLOAD_MARGIN, 1024)

    @classmethod
    async def open(cls, url: str, stream: str = "outagewatch", partitions: int = 8) -> NatsBus:
        if partitions < 1:
            raise BusError(f"partitions must be at least 1, not {partitions}")
        nc = await connect(url, "outagewatch-api")
        try:
            await ensure_stream(nc.jetstream(), stream, partitions)
        except BaseException:
            await nc.close()
            raise
        return cls(nc, stream, partitions)

    async def publish(self, lines: Sequence[bytes], services: Sequence[str]) -> None:
        """Make a batch durable: returns once JetStream acknowledged every message of it."""
        if len(lines) != len(services):
            raise ValueError(f"{len(lines)} lines but {len(services)} services")
        groups: dict[int, list[bytes]] = {}
        for line, service in zip(lines, services, strict=True):
            groups.setdefault(partition_of(service, self.partitions), []).append(
                line.rstrip(b"\r\n")
            )
        batch_id = uuid.uuid4().hex
        sends = []
        for part, group in sorted(groups.items()):
            for i, payload in enumerate(self._payloads(group)):
                msg_id = f"{batch_id}-{part}-{i}"
                sends.append(self._send(subject(self.stream, part), payload, msg_id))
        await asyncio.gather(*sends)

    def _payloads(self, lines: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        cur: list[bytes] = []
        size = 0
        for line in lines:
            if len(line) > self.max_bytes:
                raise BusError(f"an event of {len(line):,} bytes exceeds the bus message limit")
            if cur and size + len(line) + 1 > self.max_bytes:
                out.append(b"\n".join(cur))
                cur, size = [], 0
            cur.append(line)
            size += len(line) + 1
        if cur:
            out.append(b"\n".join(cur))
        return out

    async def _send(self, subj: str, payload: bytes, msg_id: str) -> None:
        last: Exception | None = None
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                ack = await self.js.publish(
                    subj,
                    payload,
                    timeout=PUBLISH_TIMEOUT_S,
                    stream=self.stream,
                    headers={"Nats-Msg-Id": msg_id},
                )
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as exc:
                last = exc  # not known to be stored: send again, JetStream drops a duplicate
                continue
            except nats.errors.Error as exc:
                raise BusError(f"NATS stream {self.stream}: publish failed: {exc}") from None
            if ack.stream != self.stream:
                raise BusError(f"NATS: {subj} was stored by stream {ack.stream}, not {self.stream}")
            return
        raise BusError(
            f"NATS stream {self.stream}: no acknowledgement after {PUBLISH_ATTEMPTS} attempts "
            f"({type(last).__name__})"
        )

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


class PartitionReader:
    """A worker's pull consumer of one partition, (re)started right after `position`.

    The consumer is durable and acknowledges cumulatively (AckAll): `ack(msg)` after a
    commit confirms everything up to it. It is recreated whenever a worker takes the
    partition, so delivery resumes exactly after the committed position, at once.
    """

    def __init__(self, js: Any, stream: str, partition: int, sub: Any) -> None:
        self.js = js
        self.stream = stream
        self.partition = partition
        self.sub = sub

    @classmethod
    async def start(cls, js: Any, stream: str, partition: int, position: int) -> PartitionReader:
        name = consumer_name(stream, partition)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, name)
        config = ConsumerConfig(
            durable_name=name,
            filter_subject=subject(stream, partition),
            ack_policy=AckPolicy.ALL,
            ack_wait=60.0,
            max_ack_pending=1_000_000,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if position else DeliverPolicy.ALL,
            opt_start_seq=position + 1 if position else None,
        )
        await js.add_consumer(stream, config)
        sub = await js.pull_subscribe_bind(name, stream=stream)
        return cls(js, stream, partition, sub)

    async def fetch(self, batch: int, timeout: float) -> list[tuple[Received, Any]]:
        """Up to `batch` messages; waits at most `timeout` s for the first. [] when none."""
        try:
            msgs = await self.sub.fetch(batch, timeout=timeout)
        except TimeoutError:  # nats.errors.TimeoutError is one too
            return []
        return [(Received(m.metadata.sequence.stream, m.data.split(b"\n")), m) for m in msgs]

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.sub.unsubscribe()

"""The bus interface shared by the in-process bus and NATS JetStream.

An API node turns every accepted HTTP event into one normalised NDJSON line (the format
`replay` reads: `type`, resolved `service`, numeric `ts`, the client `ip` filled in) and
publishes the lines of one request as a batch. `publish` returns once the batch is durable:
that is what a `202` promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class Bus(Protocol):
    async def publish(self, lines: Sequence[bytes], services: Sequence[str]) -> None:
        """Make a batch of normalised event lines durable (`services[i]` is line i's service).

        Raises `outagewatch.errors.BusError` when the batch could not be made durable.
        """
        ...

    async def close(self) -> None: ...


class _Routed(msgspec.Struct):
    service: str


_routed = msgspec.json.Decoder(_Routed)


def services_of(lines: Sequence[bytes]) -> list[str]:
    """The service of each normalised event line, for a producer that has only the lines
    (the demo's feed, scripts): what `publish` needs beside them."""
    return [_routed.decode(line).service for line in lines]

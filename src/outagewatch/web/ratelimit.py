"""Rate limits for public `POST /reports`: token buckets per address and per address block.

A person reports an outage a few times at most; a script posting hundreds of reports a
minute from one address, or from one /24 (IPv4) or /48 (IPv6) block, is refused with 429
and `Retry-After`. Every answer carries `RateLimit-Limit` / `RateLimit-Remaining` /
`RateLimit-Reset` (the IETF draft's fields) for the address's bucket. Memory is bounded:
the least recently seen buckets are dropped past `max_keys`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class Buckets:
    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float],
        max_keys: int = 100_000,
        window_s: float = 60.0,
    ) -> None:
        """`per_minute` tokens, refilled over `window_s` seconds (a minute unless said)."""
        self.capacity = float(per_minute)
        self.rate = per_minute / window_s
        self.clock = clock
        self.max_keys = max_keys
        self._b: OrderedDict[str, _Bucket] = OrderedDict()

    def _get(self, key: str, now: float) -> _Bucket:
        b = self._b.get(key)
        if b is None:
            b = self._b[key] = _Bucket(self.capacity, now)
            if len(self._b) > self.max_keys:
                self._b.popitem(last=False)
        else:
            self._b.move_to_end(key)
            b.tokens = min(self.capacity, b.tokens + (now - b.at) * self.rate)
            b.at = now
        return b

    def peek(self, key: str) -> float:
        return self._get(key, self.clock()).tokens

    def take(self, key: str, cost: float) -> float:
        """Take `cost` tokens: returns 0 when allowed, else the seconds until it would be."""
        b = self._get(key, self.clock())
        if b.tokens >= cost:
            b.tokens -= cost
            return 0.0
        if cost > self.capacity:
            return math.inf
        return (cost - b.tokens) / self.rate


def block_of(ip: str) -> str:
    """The address block an address belongs to: its /24 (IPv4) or /48 (IPv6)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class RateLimiter:
    def __init__(
        self,
        per_ip: float,
        per_block: float,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 60.0,
    ) -> None:
        """`per_ip` and `per_block` requests per `window_s` seconds (a minute unless said)."""
        self.per_ip = Buckets(per_ip, clock, window_s=window_s)
        self.per_block = Buckets(per_block, clock, window_s=window_s)

    @property
    def most(self) -> int:
        """The largest batch that can ever pass (a full bucket of the address and block)."""
        return int(min(self.per_ip.capacity, self.per_block.capacity))

    def check(self, ip: str, cost: int) -> tuple[float, dict[str, str]]:
        """(seconds to wait, 0 if allowed; headers describing the address's limit)."""
        block = block_of(ip)
        wait = self.per_ip.take(ip, cost)
        if wait == 0.0:
            wait = self.per_block.take(block, cost)
            if wait != 0.0:  # refused by the block: give the address its tokens back
                self.per_ip.take(ip, -cost)
        remaining = max(0, int(self.per_ip.peek(ip)))
        limit = int(self.per_ip.capacity)
        reset = math.ceil((limit - remaining) / self.per_ip.rate) if limit > remaining else 0
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
        }
        if wait:
            headers["Retry-After"] = str(max(1, math.ceil(min(wait, 3600.0))))
        return wait, headers

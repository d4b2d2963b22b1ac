"""Token buckets per address and block: limits, refill, bounded memory."""

from __future__ import annotations

from outagewatch.web.ratelimit import Buckets, RateLimiter, block_of


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_buckets_refill_at_the_rate() -> None:
    clock = FakeClock()
    b = Buckets(60, clock)
    assert b.take("a", 60) == 0.0
    assert b.take("a", 1) == 1.0  # one token a second
    clock.t += 10
    assert b.take("a", 10) == 0.0
    assert b.take("a", 1) > 0
    assert b.take("a", 61) == float("inf")  # more than the bucket holds: never


def test_buckets_forget_the_least_recent_past_the_bound() -> None:
    b = Buckets(5, FakeClock(), max_keys=3)
    for key in "abcd":
        b.take(key, 5)
    assert b.peek("a") == 5.0  # "a" was dropped: a fresh bucket
    assert len(b._b) == 3


def test_blocks() -> None:
    assert block_of("198.51.100.7") == "198.51.100.0/24"
    assert block_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert block_of("not an address") == "not an address"


def test_a_block_refusal_gives_the_address_its_tokens_back() -> None:
    clock = FakeClock()
    rl = RateLimiter(per_ip=10, per_block=12, clock=clock)
    assert rl.check("10.0.0.1", 10)[0] == 0.0
    wait, headers = rl.check("10.0.0.2", 5)
    assert wait > 0 and headers["Retry-After"] == str(int(-(-wait // 1)))
    assert headers["RateLimit-Remaining"] == "10"  # .2 spent nothing
    assert rl.check("10.0.0.2", 2)[0] == 0.0

"""The SSRF guard: internal addresses are refused at connect time, unless allowed."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.errors import InputError
from outagewatch.netguard import (
    TargetRefusedError,
    check_literal,
    guarded_client,
    refusal_reason,
    resolve_checked,
)


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "non-global"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused(addr: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(addr)) == reason


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"])
def test_global_addresses_pass(addr: str) -> None:
    assert refusal_reason(ipaddress.ip_address(addr)) is None


def test_literal_check_names_url_and_address() -> None:
    with pytest.raises(TargetRefusedError) as err:
        check_literal("http://169.254.169.254/latest/meta-data", allow_private=False)
    assert "169.254.169.254/latest" in str(err.value) and "link-local" in str(err.value)
    with pytest.raises(TargetRefusedError, match="loopback name"):
        check_literal("http://localhost:8000/", allow_private=False)
    check_literal("http://10.0.0.1/", allow_private=True)
    check_literal("https://example.com/hook", allow_private=False)  # names resolve later
    with pytest.raises(InputError, match="http:// or https://"):
        check_literal("ftp://example.com/", allow_private=False)


def _hits() -> tuple[LoopbackServer, list[Request]]:
    seen: list[Request] = []

    def handler(req: Request) -> Reply:
        seen.append(req)
        return Reply(200, b"reached")

    return LoopbackServer(handler), seen


@pytest.mark.slow
def test_loopback_server_is_not_reached_unless_allowed() -> None:
    server, seen = _hits()

    async def go(allow: bool, url: str) -> httpx.Response:
        async with guarded_client(allow_private=allow, timeout=5) as client:
            return await client.get(url)

    with server:
        for url in (server.url + "/x", f"http://localhost:{server.port}/x"):
            with pytest.raises(TargetRefusedError) as err:
                asyncio.run(go(False, url))
            assert "127.0.0.1" in str(err.value) and "loopback" in str(err.value)
        assert seen == []  # refused before connecting
        resp = asyncio.run(go(True, server.url + "/x"))
        assert resp.status_code == 200 and resp.content == b"reached"
        assert len(seen) == 1


@pytest.mark.slow
def test_dns_rebinding_cannot_bypass_the_check() -> None:
    """The address checked is the address connected to: a resolver that answers a public
    address first and loopback afterwards is refused on the answer used for the connection."""
    server, seen = _hits()
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    async def go() -> None:
        # A pre-flight look-up sees a public address...
        assert await resolve_checked(
            "rebind.test", server.port, allow_private=False, resolve=rebinding
        ) == ["93.184.216.34"]
        # ...but the connection resolves again, and checks what it connects to.
        async with guarded_client(allow_private=False, resolve=rebinding, timeout=5) as c:
            await c.get(f"http://rebind.test:{server.port}/")

    with server, pytest.raises(TargetRefusedError, match=r"127\.0\.0\.1, a loopback"):
        asyncio.run(go())
    assert seen == []


def test_mixed_answers_are_refused() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(TargetRefusedError, match=r"10\.0\.0\.5"):
        asyncio.run(resolve_checked("mixed.test", 80, allow_private=False, resolve=mixed))


@pytest.mark.slow
def test_every_redirect_hop_is_checked() -> None:
    """A target that is allowed and redirects to a forbidden address fails at the second hop.
    (Here the policy forbids only 127.0.0.2, so the loopback server stands for a public one.)"""
    inner, seen = _hits()

    def policy(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return "forbidden-in-test" if str(ip) == "127.0.0.2" else None

    async def go(url: str) -> httpx.Response:
        async with guarded_client(allow_private=False, policy=policy, timeout=5) as c:
            return await c.get(url)

    with inner:
        target = f"http://127.0.0.2:{inner.port}/"
        outer = LoopbackServer(lambda req: Reply(302, b"", {"Location": target}))
        with outer:
            with pytest.raises(TargetRefusedError, match=r"127\.0\.0\.2, a forbidden-in-test"):
                asyncio.run(go(outer.url + "/start"))
            assert outer.paths() == ["/start"]  # the first hop was reached
    assert seen == []

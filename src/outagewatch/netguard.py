"""Outbound-request guard: probes, status pages and webhooks may not reach internal addresses.

A user-supplied URL (a catalog probe, a status page, a subscription's webhook) must not make
the server talk to itself or to the private network behind it (SSRF). The check is done where
the connection is made: `GuardedBackend` resolves the host, refuses the connection when any of
its addresses is loopback, private, link-local, multicast, unspecified or otherwise not
global, and connects to the very address it checked. A DNS answer that changes between a
check and the connect (DNS rebinding) therefore cannot slip through, and every redirect hop
goes through the same check.

`OUTAGEWATCH_ALLOW_PRIVATE_TARGETS=1` (`allow_private=True`) turns the refusal off, for
self-hosted set-ups that watch their own network and for tests on loopback.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from outagewatch.errors import InputError

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Policy = Callable[[IPAddress], "str | None"]  # why an address is refused, or None

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
USER_AGENT = "outagewatch/0.1 (+https://github.com/outagewatch)"


class TargetRefusedError(InputError):
    """An outbound URL resolves to an address outagewatch may not reach."""

    code = "target_refused"


def refusal_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be reached (e.g. "loopback"), or None when it is a global address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refusal_reason(ip.ipv4_mapped)
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), 192.0.0.0/24
        return "non-global"
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the OS resolver, in a worker thread)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 scope id
        if addr not in out:
            out.append(addr)
    return out


def check_url_syntax(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or `InputError` naming the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InputError(f"URL {url!r}: must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise InputError(f"URL {url!r}: has no host")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_literal(url: str, allow_private: bool) -> None:
    """Refuse at once a URL whose host is a forbidden IP literal (no DNS look-up).

    Used when a URL is configured (a subscription is created); names are checked when used.
    """
    host, _ = check_url_syntax(url)
    if allow_private:
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise TargetRefusedError(f"URL {url!r}: {host} is a loopback name") from None
        return
    reason = refusal_reason(ip)
    if reason is not None:
        raise TargetRefusedError(f"URL {url!r}: address {ip} is {reason}")


async def resolve_checked(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolve: Resolver = system_resolve,
    policy: Policy = refusal_reason,
) -> list[str]:
    """The addresses of `host`, all of them allowed, or `TargetRefusedError` naming the address."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addrs = [str(literal)]
    else:
        try:
            addrs = await resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addrs:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
    if not allow_private:
        for addr in addrs:
            reason = policy(ipaddress.ip_address(addr))
            if reason is not None:
                raise TargetRefusedError(
                    f"{host}:{port} resolves to {addr}, a {reason} address; outagewatch does "
                    "not reach those unless OUTAGEWATCH_ALLOW_PRIVATE_TARGETS=1"
                )
    return addrs


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that checks, then connects to, the resolved address.

    TLS still verifies the certificate against the URL's host name (httpcore passes it as
    `server_hostname` when it starts TLS on the stream this returns).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver = system_resolve,
        policy: Policy = refusal_reason,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addrs = await resolve_checked(
            host, port, allow_private=self.allow_private, resolve=self.resolve, policy=self.policy
        )
        last: Exception | None = None
        for addr in addrs:
            try:
                return await self.inner.connect_tcp(
                    addr,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefusedError(f"unix socket {path!r}: outbound requests use TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose every connection goes through `GuardedBackend`.

    It never uses a proxy from the environment (that would hide the real destination).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolver = system_resolve,
        policy: Policy = refusal_reason,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ctx = verify if isinstance(verify, ssl.SSLContext) else None
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx or httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(
                allow_private=allow_private, resolve=resolve, policy=policy
            ),
        )


def guarded_client(
    *,
    allow_private: bool,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
    resolve: Resolver = system_resolve,
    policy: Policy = refusal_reason,
    follow_redirects: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for user-supplied URLs (probes, status pages, webhooks).

    A refused address raises `TargetRefusedError` from the request call.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(
            allow_private=allow_private, verify=verify, resolve=resolve, policy=policy
        ),
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=5,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
    )

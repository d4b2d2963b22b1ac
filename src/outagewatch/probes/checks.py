"""One HTTP probe: GET the URL, judge the answer, return a docs/contract.md §2 `probe` event.

A probe is `ok` when the final answer (after redirects) has the expected status (any 2xx when
the catalog names none) and, when the catalog names a `keyword`, the body contains it. The
whole check (resolve, connect, TLS, headers, body) has one deadline, `timeout_s`, so a target
that trickles bytes cannot hold a probe longer than that. A TLS certificate that expires within
`cert_warn_days` keeps the probe `ok` but fills `error` with a warning.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from outagewatch.catalog import Probe
from outagewatch.events import iso
from outagewatch.netguard import TargetRefusedError

Clock = Callable[[], float]
Event = dict[str, Any]

CERT_WARN_DAYS = 14.0
MAX_BODY = 1 << 20  # bytes of body searched for the keyword
WARNING_PREFIX = "warning: "


def probe_event(
    service: str,
    probe: Probe,
    *,
    ts: float,
    ok: bool,
    status: int | None,
    latency_ms: float | None,
    error: str | None,
    vantage: str | None,
) -> Event:
    """A docs/contract.md §2 probe event (`ts` in epoch seconds)."""
    return {
        "type": "probe",
        "service": service,
        "ts": round(ts, 3),
        "target": probe.url,
        "site": probe.site,
        "vantage": vantage,
        "ok": ok,
        "status": status,
        "latency_ms": latency_ms,
        "error": error,
    }


async def run_probe(
    client: httpx.AsyncClient,
    service: str,
    probe: Probe,
    *,
    vantage: str | None = None,
    clock: Clock = time.time,
    cert_warn_days: float = CERT_WARN_DAYS,
) -> Event:
    """Run one probe with `client` (use `netguard.guarded_client`) and describe the outcome.

    Never raises for a failing target: every failure is an event with `ok` false and a
    human-readable `error` (cancellation still propagates).
    """
    ts = clock()
    t0 = time.perf_counter()
    status: int | None = None
    ok = False
    error: str | None = None
    try:
        async with asyncio.timeout(probe.timeout_s):
            async with client.stream("GET", probe.url, timeout=probe.timeout_s) as resp:
                status = resp.status_code
                ok, error = _judge_status(probe, status)
                if ok and probe.keyword is not None:
                    body = await _read_some(resp, MAX_BODY)
                    if probe.keyword.encode() not in body:
                        ok = False
                        error = f"keyword {probe.keyword!r} not found in the body"
                if ok:
                    error = _cert_warning(resp, ts, cert_warn_days)
    except TimeoutError:
        ok, error = False, f"timed out after {probe.timeout_s:g} s"
    except httpx.TimeoutException as exc:
        ok, error = False, f"timed out after {probe.timeout_s:g} s ({type(exc).__name__})"
    except TargetRefusedError as exc:
        ok, error = False, f"refused: {exc}"
    except httpx.TooManyRedirects:
        ok, error = False, "too many redirects"
    except httpx.HTTPError as exc:
        ok, error = False, _describe(exc)
    except (OSError, ssl.SSLError) as exc:  # anything the transport did not map
        ok, error = False, f"{type(exc).__name__}: {exc}"
    latency = round((time.perf_counter() - t0) * 1000.0, 1)
    return probe_event(
        service,
        probe,
        ts=ts,
        ok=ok,
        status=status,
        latency_ms=latency,
        error=error,
        vantage=vantage,
    )


def _judge_status(probe: Probe, status: int) -> tuple[bool, str | None]:
    if probe.expect_status is not None:
        if status != probe.expect_status:
            return False, f"status {status}, expected {probe.expect_status}"
        return True, None
    if not 200 <= status < 300:
        return False, f"status {status}, expected 2xx"
    return True, None


async def _read_some(resp: httpx.Response, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


def _cert_warning(resp: httpx.Response, now: float, warn_days: float) -> str | None:
    """A warning when the server's certificate expires within `warn_days` (verified TLS only)."""
    stream = resp.extensions.get("network_stream")
    if stream is None:
        return None
    sslobj = stream.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert = sslobj.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None  # unverified TLS gives no parsed certificate
    expires = ssl.cert_time_to_seconds(not_after)
    days = (expires - now) / 86_400
    if days > warn_days:
        return None
    when = iso(expires)
    if days < 0:
        return f"{WARNING_PREFIX}TLS certificate expired at {when}"
    return f"{WARNING_PREFIX}TLS certificate expires in {days:.1f} days ({when})"


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None and isinstance(cause, Exception) and not str(cause):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return f"{type(exc).__name__}: {text}"

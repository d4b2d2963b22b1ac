"""`outagewatch probe-agent --server URL --vantage NAME`: the catalog's probes, run elsewhere.

The agent needs only the server's URL and a token: it fetches the probe list from
`GET {server}/api/v1/probes/config` and fetches it again every `config_every_s` (60 s), so it
follows the catalog as the operator changes it (a failed fetch keeps the list it has: the
agent goes on probing while the server is away). A catalog given to the constructor (the
CLI's `--catalog`) is used instead of the server's list.

The agent runs the same `ProbeScheduler` as the server, tags every result with its vantage,
and posts the results in batches to `POST {server}/api/v1/probes` with the operator token.
While the server is down or overloaded, results wait in a bounded buffer (the oldest are
dropped beyond `buffer_max`) and the agent retries with exponential backoff, honouring
`Retry-After`. A refused token (401/403) stops the agent with a clear error: retrying cannot
fix it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
import ssl
import time
from typing import Any

import httpx

from outagewatch import __version__
from outagewatch.catalog import Catalog, Probe
from outagewatch.errors import InputError, UsageError
from outagewatch.netguard import Resolver, check_url_syntax, system_resolve
from outagewatch.probes.checks import Clock, Event
from outagewatch.probes.scheduler import ProbeScheduler, catalog_probes

Probes = list[tuple[str, Probe]]

log = logging.getLogger("outagewatch.probe_agent")

VANTAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AgentRefusedError(UsageError):
    """The server refused the agent's token or requests in a way retrying cannot fix."""

    code = "agent_refused"


def check_vantage(name: str) -> str:
    if not VANTAGE.fullmatch(name):
        raise UsageError(
            f"--vantage {name!r}: expected 1 to 64 letters, digits, '.', '_' or '-' (e.g. eu-west)"
        )
    return name


def check_server(url: str) -> str:
    try:
        check_url_syntax(url)
    except InputError as exc:
        raise UsageError(f"--server: {exc}") from None
    return url.rstrip("/")


class ProbeAgent:
    def __init__(
        self,
        catalog: Catalog | None,
        *,
        server: str,
        vantage: str,
        token: str,
        allow_private: bool,
        concurrency: int = 20,
        batch_max: int = 500,
        buffer_max: int = 10_000,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        post_timeout_s: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolver = system_resolve,
        poster: httpx.AsyncClient | None = None,
        config_every_s: float = 60.0,
        clock: Clock = time.time,
    ) -> None:
        if not token:
            raise UsageError(
                "probe-agent needs the operator token: set --token or OUTAGEWATCH_TOKEN"
            )
        self.server = check_server(server)
        self.vantage = check_vantage(vantage)
        self.endpoint = f"{self.server}/api/v1/probes"
        self.config_url = f"{self.server}/api/v1/probes/config"
        self.config_every_s = config_every_s
        self.fixed = catalog is not None  # a local catalog: no fetching
        self.token = token
        self.batch_max = batch_max
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._buffer: collections.deque[Event] = collections.deque(maxlen=buffer_max)
        self._ready = asyncio.Event()
        self._rng = random.Random()
        self._scheduler_args: dict[str, Any] = {
            "allow_private": allow_private,
            "vantage": self.vantage,
            "concurrency": concurrency,
            "verify": verify,
            "resolve": resolve,
            "clock": clock,
            "headers": {"User-Agent": f"outagewatch-probe/{__version__} (vantage {self.vantage})"},
        }
        self.probes: Probes = catalog_probes(catalog) if catalog is not None else []
        self.scheduler = self._scheduler(self.probes)
        self.config_fetches = 0  # successful fetches of the probe list
        self._own_poster = poster is None
        # The server is the operator's own: it may well be on a private network, so the
        # poster is a plain client (probe targets go through the guarded one).
        self._poster = poster or httpx.AsyncClient(timeout=post_timeout_s, trust_env=False)
        self.posted = 0  # events the server accepted
        self.rejected = 0  # events the server rejected (logged)
        self.dropped = 0  # events dropped because the buffer was full
        self.failures = 0  # failed post attempts

    def _scheduler(self, probes: Probes) -> ProbeScheduler:
        return ProbeScheduler(probes, self._enqueue, **self._scheduler_args)

    async def _ask(self, method: str, url: str, body: Any = None) -> httpx.Response:
        """One request to the server with the agent's token. A transport error counts as a
        failure and propagates; a refused token raises AgentRefusedError."""
        try:
            resp = await self._poster.request(
                method, url, json=body, headers={"Authorization": f"Bearer {self.token}"}
            )
        except httpx.HTTPError:
            self.failures += 1
            raise
        if resp.status_code in (401, 403):
            raise AgentRefusedError(
                f"{url}: the server refused the token ({resp.status_code}); "
                "check --token / OUTAGEWATCH_TOKEN"
            )
        return resp

    async def fetch_config(self) -> Probes:
        """The server's probe list (GET /api/v1/probes/config); bad items are logged and
        skipped. Raises AgentRefusedError for a refused token, httpx.HTTPError or
        _RetryError while the server is unreachable or overloaded."""
        resp = await self._ask("GET", self.config_url)
        if resp.status_code != 200:
            self.failures += 1
            raise _RetryError(f"status {resp.status_code}", _retry_after(resp))
        try:
            items = resp.json()
        except ValueError:
            raise _RetryError("the probe list is not JSON", None) from None
        if not isinstance(items, list):
            raise _RetryError("the probe list is not a JSON array", None)
        out: Probes = []
        for i, item in enumerate(items):
            try:
                out.append(probe_of(item))
            except ValueError as exc:
                log.warning("probe list item %d skipped: %s", i, exc)
        self.config_fetches += 1
        return out

    async def _use(self, probes: Probes) -> None:
        """Probe `probes` from now on (a changed list restarts the scheduler)."""
        if probes == self.probes and self.scheduler.running:
            return
        if probes != self.probes:
            log.info("probe list: %d probes (was %d)", len(probes), len(self.probes))
        await self.scheduler.stop()
        self.probes = probes
        self.scheduler = self._scheduler(probes)
        await self.scheduler.start()

    async def _config_loop(self, stop: asyncio.Event) -> None:
        """Fetch the probe list until it is had, then again every config_every_s."""
        failures = 0
        while not stop.is_set():
            try:
                probes = await self.fetch_config()
            except (httpx.HTTPError, _RetryError) as exc:
                failures += 1
                delay = self._delay(failures, exc)
                if self.scheduler.running:
                    delay = max(delay, min(self.config_every_s, self.backoff_max_s))
                log.warning(
                    "probe list from %s unavailable (%s); %s, retrying in %.1f s",
                    self.server,
                    exc,
                    f"probing the {len(self.probes)} known"
                    if self.scheduler.running
                    else "nothing to probe yet",
                    delay,
                )
            else:
                failures = 0
                await self._use(probes)
                delay = self.config_every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _enqueue(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(ev)
        self._ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Probe and post until `stop` is set; then post what is buffered (one attempt)."""
        if self.fixed:
            await self.scheduler.start()
        try:
            sender = asyncio.create_task(self._send_loop(stop))
            workers = {sender}
            if not self.fixed:
                workers.add(asyncio.create_task(self._config_loop(stop)))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({*workers, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for w in workers:
                if w in done:
                    w.result()  # a fatal error (AgentRefusedError) surfaces here
            for w in workers:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w
        finally:
            await self.scheduler.stop()
            if self._buffer:
                with contextlib.suppress(httpx.HTTPError, TimeoutError):
                    await self._post_batch()
            await self.close()

    async def run_once(self, attempts: int = 5) -> int:
        """Run every probe once and post the results, retrying up to `attempts` times.

        Returns the number of results still unsent (0 on success).
        """
        try:
            if not self.fixed:
                failures = 0
                while True:
                    try:
                        self.probes = await self.fetch_config()
                        break
                    except (httpx.HTTPError, _RetryError) as exc:
                        failures += 1
                        if failures >= attempts:
                            log.error("no probe list after %d attempts: %s", failures, exc)
                            return -1
                        await asyncio.sleep(self._delay(failures, exc))
                await self.scheduler.stop()
                self.scheduler = self._scheduler(self.probes)
            await self.scheduler.run_once()
            await self.scheduler.stop()
            failures = 0
            while self._buffer:
                try:
                    await self._post_batch()
                    failures = 0
                except (httpx.HTTPError, _RetryError) as exc:
                    failures += 1
                    if failures >= attempts:
                        log.error("giving up after %d attempts: %s", failures, exc)
                        break
                    await asyncio.sleep(self._delay(failures, exc))
            return len(self._buffer)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._own_poster:
            await self._poster.aclose()

    async def _send_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            if not self._buffer:
                self._ready.clear()
                await self._ready.wait()
                continue
            try:
                await self._post_batch()
                failures = 0
            except (httpx.HTTPError, _RetryError) as exc:
                failures += 1
                delay = self._delay(failures, exc)
                log.warning(
                    "server %s unavailable (%s); %d results buffered, retrying in %.1f s",
                    self.server,
                    exc,
                    len(self._buffer),
                    delay,
                )
                await asyncio.sleep(delay)

    def _delay(self, failures: int, exc: Exception) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** (failures - 1))
        delay *= self._rng.uniform(0.8, 1.2)
        if isinstance(exc, _RetryError) and exc.after is not None:
            delay = max(delay, min(exc.after, self.backoff_max_s))
        return delay

    async def _post_batch(self) -> None:
        """Post the oldest buffered results; they leave the buffer only once the server
        has answered for them."""
        n = min(len(self._buffer), self.batch_max)
        batch = [self._buffer[i] for i in range(n)]
        body = [{k: v for k, v in ev.items() if k != "type"} for ev in batch]
        resp = await self._ask("POST", self.endpoint, body)
        if resp.status_code == 429 or resp.status_code >= 500:
            self.failures += 1
            raise _RetryError(f"status {resp.status_code}", _retry_after(resp))
        for _ in range(n):
            self._buffer.popleft()
        if resp.status_code in (200, 201, 202):
            rejected = _rejected(resp)
            self.posted += n - len(rejected)
            self.rejected += len(rejected)
            for r in rejected[:5]:
                log.warning("server rejected a probe result: %s", r)
            return
        # Any other 4xx: the server will never accept this batch; log it and move on.
        self.rejected += n
        log.error(
            "server refused %d probe results with status %d: %s",
            n,
            resp.status_code,
            resp.text[:300],
        )


class _RetryError(Exception):
    def __init__(self, message: str, after: float | None) -> None:
        super().__init__(message)
        self.after = after


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _rejected(resp: httpx.Response) -> list[Any]:
    try:
        doc = resp.json()
    except ValueError:
        return []
    items = doc.get("rejected") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else []


def probe_of(item: Any) -> tuple[str, Probe]:
    """One item of GET /api/v1/probes/config as (service, Probe); ValueError when bad."""
    if not isinstance(item, dict):
        raise ValueError("not an object")
    service, url = item.get("service"), item.get("url")
    if not isinstance(service, str) or not service:
        raise ValueError("service: expected a service id")
    if not isinstance(url, str):
        raise ValueError("url: expected a URL")
    try:
        check_url_syntax(url)
    except InputError as exc:
        raise ValueError(f"url: {exc}") from None
    site = item.get("site", "public")
    interval = item.get("interval_s", 60)
    expect = item.get("expect_status")
    keyword = item.get("keyword")
    timeout = item.get("timeout_s", 10.0)
    if not isinstance(site, str) or not site:
        raise ValueError("site: expected a name")
    if isinstance(interval, bool) or not isinstance(interval, int) or not 5 <= interval <= 86_400:
        raise ValueError("interval_s: expected an integer from 5 to 86400")
    if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int)):
        raise ValueError("expect_status: expected an HTTP status code")
    if keyword is not None and not isinstance(keyword, str):
        raise ValueError("keyword: expected a string")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
        raise ValueError("timeout_s: expected seconds from 0 to 120")
    return service, Probe(url, site, interval, expect, keyword, float(timeout))


def probe_config(catalog: Catalog) -> list[dict[str, Any]]:
    """What GET /api/v1/probes/config answers: every catalog probe (docs/contract.md §8)."""
    return [
        {
            "service": sid,
            "url": p.url,
            "site": p.site,
            "interval_s": p.interval_s,
            "expect_status": p.expect_status,
            "keyword": p.keyword,
            "timeout_s": p.timeout_s,
        }
        for sid, p in catalog_probes(catalog)
    ]


def run_agent(agent: ProbeAgent, *, once: bool) -> int:
    """Run the agent in a fresh event loop until SIGINT/SIGTERM (or one round with `once`)."""
    import signal

    async def main() -> int:
        if once:
            left = await agent.run_once()
            return 0 if left == 0 else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        await agent.run(stop)
        log.info(
            "probe agent stopped after %.0f s: %d posted, %d rejected, %d dropped",
            time.monotonic() - started,
            agent.posted,
            agent.rejected,
            agent.dropped,
        )
        return 0

    return asyncio.run(main())

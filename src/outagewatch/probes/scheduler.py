"""Runs every catalog probe on its interval, jittered and concurrency-limited.

Each probe has its own task, so a slow or hanging target only ever holds its own task (for at
most its `timeout_s`) and one of the `concurrency` slots; the others keep their rhythm. Every
result is handed to `submit([event])`, an async callback (the server feeds it to the pipeline,
the probe agent posts it to a server). A failing `submit` is logged and never stops probing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Sequence

import httpx

from outagewatch.catalog import Catalog, Probe
from outagewatch.netguard import Resolver, system_resolve
from outagewatch.probes.base import Submit, Watcher
from outagewatch.probes.checks import CERT_WARN_DAYS, Clock, Event, run_probe

log = logging.getLogger("outagewatch.probes")


def catalog_probes(catalog: Catalog) -> list[tuple[str, Probe]]:
    """Every (service id, probe) of the catalog, in catalog order."""
    return [(sid, p) for sid, svc in catalog.services.items() for p in svc.probes]


class ProbeScheduler(Watcher):
    """`await start()` begins probing; `await stop()` cancels the loops and closes the client."""

    def __init__(
        self,
        probes: Catalog | Sequence[tuple[str, Probe]],
        submit: Submit,
        *,
        allow_private: bool,
        vantage: str | None = None,
        concurrency: int = 20,
        jitter: float = 0.1,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolver = system_resolve,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        cert_warn_days: float = CERT_WARN_DAYS,
        headers: dict[str, str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("probe concurrency must be at least 1")
        if not 0 <= jitter < 1:
            raise ValueError("probe jitter must be in [0, 1)")
        guard = dict(allow_private=allow_private, verify=verify, resolve=resolve, headers=headers)
        super().__init__(submit, concurrency, client, guard, clock, rng)
        self.probes = catalog_probes(probes) if isinstance(probes, Catalog) else list(probes)
        self.vantage = vantage
        self.jitter = jitter
        self.cert_warn_days = cert_warn_days
        self.runs = 0  # probes run so far
        self.submit_failures = 0

    async def start(self) -> None:
        was = self.running
        self._launch((f"probe {sid} {p.url}", self._loop(sid, p)) for sid, p in self.probes)
        if not was:
            log.info("probing %d targets", len(self._tasks))

    async def run_once(self) -> list[Event]:
        """Run every probe once, now (concurrency-limited); submit and return the events."""
        events = await asyncio.gather(*(self._run(sid, p) for sid, p in self.probes))
        return list(events)

    async def _run(self, sid: str, probe: Probe) -> Event:
        async with self._slots:
            event = await run_probe(
                self._client,
                sid,
                probe,
                vantage=self.vantage,
                clock=self.clock,
                cert_warn_days=self.cert_warn_days,
            )
        self.runs += 1
        try:
            await self.submit([event])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sick consumer must not stop the probes
            self.submit_failures += 1
            log.warning("probe %s %s: result not accepted: %s", sid, probe.url, exc)
        return event

    async def _loop(self, sid: str, probe: Probe) -> None:
        interval = float(probe.interval_s)
        # Spread the first runs so that probes sharing an interval do not fire together.
        await asyncio.sleep(self._rng.uniform(0, interval * self.jitter))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._run(sid, probe)
            step = interval * (1 + self._rng.uniform(-self.jitter, self.jitter))
            # The next run is due one (jittered) interval after this one started; a run
            # that took longer than that is followed at once by the next.
            await asyncio.sleep(max(0.0, started + step - loop.time()))

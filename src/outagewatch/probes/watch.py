"""The active watchers of a catalog, started together (the server and the cluster's leader)."""

from __future__ import annotations

from outagewatch.catalog import Catalog
from outagewatch.probes.base import Submit
from outagewatch.probes.checks import Clock
from outagewatch.probes.scheduler import ProbeScheduler, catalog_probes
from outagewatch.probes.statuspage import StatusPoller
from outagewatch.settings import Settings


async def start_watchers(
    catalog: Catalog, submit: Submit, settings: Settings, clock: Clock
) -> tuple[ProbeScheduler | None, StatusPoller | None]:
    """Start the catalog's probes and its official status-page poller, each only if the
    catalog has something for it; both feed `submit`, as reports do (`settings`: whether
    private targets are allowed, the probes' concurrency)."""
    allow_private = settings.allow_private_targets
    probes = catalog_probes(catalog)
    scheduler = poller = None
    if probes:
        scheduler = ProbeScheduler(
            probes,
            submit,
            allow_private=allow_private,
            concurrency=settings.probe_concurrency,
            clock=clock,
        )
        await scheduler.start()
    if any(svc.status_page is not None for svc in catalog.services.values()):
        # Every successful poll says what the page says: a page that stops answering
        # shows as silent (incidents.verdicts.silent), not as fine.
        poller = StatusPoller(
            catalog, submit, allow_private=allow_private, clock=clock, refresh_s=0.0
        )
        await poller.start()
    return scheduler, poller

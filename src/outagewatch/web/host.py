"""What the web layer needs of the server that runs it (`outagewatch.server.Server` in
`serve` and `demo`): the routes take a `Host`, `create_app` an `AppHost`.

The routes read their host at each request: the store they read (`reader`) and the alerter
exist once it is open, the live state (`live`) once it has started, and the catalog changes
while it runs (`set_catalog`). A route that finds the store or the live state missing
answers 503 (starting or stopping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from outagewatch.alerts.alerter import Alerter
    from outagewatch.catalog import Catalog
    from outagewatch.runtime.engine import Engine
    from outagewatch.runtime.writer import LocalBus
    from outagewatch.settings import Settings
    from outagewatch.store.base import Store
    from outagewatch.web.live import Live


class Host(Protocol):
    """What the routes (operations, catalog_api, visitors, admin) use."""

    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def reader(self) -> Store | None: ...

    @property
    def alerter(self) -> Alerter | None: ...

    @property
    def live(self) -> Live | None: ...

    async def maintenance_changed(self) -> None:
        """Read the maintenance windows again (after one was added or removed)."""

    async def set_catalog(self, catalog: Catalog, *, save: bool = True) -> None:
        """Take a changed catalog without a restart."""


class AppHost(Host, Protocol):
    """What `create_app` uses besides: the server starts and stops with the application
    (`open` makes the store and alerter the routes are built with), and /metrics and the
    ingest fast path read the engine and the bus (None on an API node)."""

    @property
    def engine(self) -> Engine | None: ...

    @property
    def bus(self) -> LocalBus | None: ...

    def open(self) -> None: ...

    async def start(self) -> Live: ...

    async def stop(self) -> None: ...

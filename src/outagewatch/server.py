"""The composition root: `outagewatch serve` (and `demo`), the whole system in one process.

`Server` wires the adapters around the pure core: the store (writer and reader), the
engine, the in-process bus and its writer thread, the wall-clock ticker, the probes, the
status-page poller, the alerter, and (when given) extra background tasks such as the demo
feed; with `--nats-url`, the NATS bus, a reader of the shared store and the leader election
instead. `run` serves the web application (`web.app.create_app`) over it with uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outagewatch.alerts.alerter import Alerter
from outagewatch.bus.base import Bus
from outagewatch.catalog import Catalog
from outagewatch.errors import StoreError, UsageError
from outagewatch.probes.scheduler import ProbeScheduler
from outagewatch.probes.statuspage import StatusPoller
from outagewatch.probes.watch import start_watchers
from outagewatch.runtime.engine import Committed, Engine
from outagewatch.runtime.writer import LocalBus
from outagewatch.settings import Settings
from outagewatch.store import is_postgres_url, open_store
from outagewatch.store.base import Store
from outagewatch.web.admission import KEEP_ALIVE_S, MAX_CONNECTIONS, GuardedHttp
from outagewatch.web.app import asgi_app
from outagewatch.web.health import probe_write
from outagewatch.web.live import Live, StoredBaselines, StoredVerdicts

if TYPE_CHECKING:
    from outagewatch.runtime.leader import Leadership

log = logging.getLogger(__name__)

Task = Callable[["Server"], Coroutine[Any, Any, None]]
WINDOWS_REFRESH_S = 5.0  # how often the catalog and maintenance windows are re-read


@dataclass
class Server:
    """Everything `serve` runs, started and stopped as one.

    Single process (the default): the store, the engine, the in-process bus and its writer
    thread, the wall-clock ticker, the probe scheduler, the status-page poller and the
    alerter. API node (`--nats-url`): the NATS bus and a reader of the shared store.
    """

    settings: Settings
    catalog: Catalog
    clock: Callable[[], float] = time.time
    tick_interval_s: float = 1.0
    tasks: list[Task] = field(default_factory=list)
    warmup: list[Task] = field(default_factory=list)  # run once before the first tick
    watch: bool = True  # run the catalog's probes and status-page polls
    live: Live | None = None
    bus: LocalBus | None = None
    engine: Engine | None = None
    reader: Store | None = None
    alerter: Alerter | None = None
    probes: ProbeScheduler | None = None
    poller: StatusPoller | None = None
    _stores: list[Store] = field(default_factory=list)
    _running: list[asyncio.Task[None]] = field(default_factory=list)
    _remote_bus: Bus | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    leadership: Leadership | None = None  # scale-out: this node's part in the leader election
    _catalog_checked: float = -math.inf  # when the stored catalog was last compared (monotonic)

    def open(self) -> None:
        """Open the reader store and make the alerter (the API's routes need it)."""
        if self.reader is None:
            self.reader = open_store(self.settings.db)
            self._stores.append(self.reader)
            self.alerter = Alerter(self.reader, self.settings, self.catalog)

    async def start(self) -> Live:
        self.open()
        assert self.reader is not None and self.alerter is not None
        self._loop = asyncio.get_running_loop()
        if self.settings.nats_url:
            return await self._start_api_node(self.settings.nats_url)
        writer = open_store(self.settings.db)
        self._stores.append(writer)
        if writer.load_catalog() != self.catalog.source:
            writer.save_catalog(self.catalog.source)
        engine = await asyncio.to_thread(
            Engine, writer, self.catalog, self.settings.pipeline, now=self.clock()
        )
        if engine.recovered:
            log.info("recovered %d journal batches after a restart", engine.recovered)
        bus = LocalBus(engine, clock=self.clock)
        live = Live(self.catalog, self.reader, bus, engine, clock=self.clock)
        live.changes.bind(self._loop)
        bus.on_commit = self._committed
        bus.start()
        self.engine, self.bus, self.live = engine, bus, live
        await self.maintenance_changed()
        await self.alerter.start()
        for job in self.warmup:
            await job(self)
        # Close what ended while we were down; commit the recovered batches.
        await bus.tick(commit=True)
        # What start-up made lives as long as the server: keep the collector off it.
        gc.collect()
        gc.freeze()
        self._running.append(asyncio.create_task(self._ticker(), name="ticker"))
        self._running.append(asyncio.create_task(self._compactor(), name="compactor"))
        if self.watch:
            await self._start_watching(live)
        self._start_tasks()
        return live

    async def maintenance_changed(self) -> None:
        """Read the maintenance windows again and hand them to the pages and the pipeline
        (at start and after each change through the API)."""
        if self.reader is None:
            return
        rows = await asyncio.to_thread(self.reader.maintenance, self.clock() - 7 * 86_400)
        if self.live is not None:
            if rows == self.live.windows:
                return
            self.live.windows = rows
            await self.live.changes.bump()
        if self.engine is not None:
            windows = [(w["service"], w["starts_at"], w["ends_at"]) for w in rows]
            await asyncio.to_thread(self.engine.set_maintenance, windows)

    async def set_catalog(self, catalog: Catalog, *, save: bool = True) -> None:
        """Take a changed catalog without a restart: the pipeline decodes and explains with
        it, the API accepts its services, alerts and pages name them, and the probes and
        status polls are restarted on it (single process). `save`: store it (false when it
        was read from the store, changed through another node)."""
        live = self.live
        if live is None:
            raise RuntimeError("the server has not started")
        if self.engine is not None:  # first: the writer must know what the API accepts
            await asyncio.to_thread(self.engine.set_catalog, catalog)
        await asyncio.to_thread(live.set_catalog, catalog, save=save)
        if self.alerter is not None:
            self.alerter.set_catalog(catalog)
        self.catalog = catalog
        if self.leadership is not None:
            await self.leadership.duties.set_catalog(catalog)
        if self.watch and self.engine is not None:
            for watcher in (self.probes, self.poller):
                if watcher is not None:
                    await watcher.stop()
            self.probes = self.poller = None
            await self._start_watching(live)
        await live.changes.bump()

    async def _catalog_from_store(self) -> bool:
        """Take the stored catalog if another node changed it (at most once a second)."""
        now = time.monotonic()
        if now - self._catalog_checked < 1.0 or self.reader is None:
            return False
        self._catalog_checked = now
        text = await asyncio.to_thread(self.reader.load_catalog)
        if text is None or text == self.catalog.source:
            return False
        await self.set_catalog(Catalog.from_toml(text, "<stored catalog>"), save=False)
        return True

    async def _follow_store(self) -> None:
        """What was changed through another API node (the shared store) takes effect here:
        the catalog and the maintenance windows, every WINDOWS_REFRESH_S."""
        assert self.reader is not None
        while True:
            await asyncio.sleep(WINDOWS_REFRESH_S)
            try:
                self._catalog_checked = -math.inf
                await self._catalog_from_store()
            except Exception:
                log.exception("reading the stored catalog failed")
            try:
                await self.maintenance_changed()
            except Exception:
                log.exception("reading the maintenance windows failed")

    def _start_tasks(self) -> None:
        self._running.append(
            asyncio.create_task(self._follow_store(), name="catalog and maintenance windows")
        )
        for task in self.tasks:
            self._running.append(
                asyncio.create_task(task(self), name=getattr(task, "__name__", ""))
            )

    async def _start_watching(self, live: Live) -> None:
        """Probes and official status pages feed the same pipeline as reports."""
        w = await start_watchers(self.catalog, live.submit_events, self.settings, self.clock)
        self.probes, self.poller = w

    def _committed(self, done: Committed) -> None:
        """After each commit (in the writer thread): live pages, metrics, alerts."""
        assert self.live is not None
        self.live.committed(done)
        alerter, loop = self.alerter, self._loop
        if alerter is None or loop is None or not done.transitions or loop.is_closed():
            return
        docs = {d["id"]: d for d in done.incidents}
        for tr in done.transitions:
            if tr.incident not in docs and self.engine is not None:
                doc = self.engine.live_doc(tr.incident)
                if doc is not None:
                    docs[tr.incident] = doc

        async def alert() -> None:
            try:
                await alerter.handle(done.transitions, docs)
            except Exception:
                log.exception("alerts failed")

        loop.call_soon_threadsafe(lambda: self._running.append(loop.create_task(alert())))

    async def _start_api_node(self, url: str) -> Live:
        """Scale-out: accepted events go to NATS JetStream; workers count them and write the
        shared store, which this node only reads (no pipeline, probes or alerts here)."""
        from outagewatch.bus.nats import NatsBus

        assert self.reader is not None
        if self.reader.load_catalog() != self.catalog.source:
            self.reader.save_catalog(self.catalog.source)
        bus = await NatsBus.open(url, self.settings.stream, self.settings.partitions)
        self._remote_bus = bus
        baselines = StoredBaselines(self.reader, self.settings.partitions, self.settings.pipeline)
        verdicts = StoredVerdicts(self.reader)
        live = Live(self.catalog, self.reader, bus, None, clock=self.clock, baselines=baselines,
                    verdicts=verdicts)  # fmt: skip
        assert self._loop is not None
        live.changes.bind(self._loop)
        self.live = live
        live.refresh_catalog = self._catalog_from_store
        await self.maintenance_changed()
        from outagewatch.runtime.leader import LeaderDuties, Leadership
        from outagewatch.runtime.worker import default_worker_id
        from outagewatch.store.postgres import PostgresStore

        if isinstance(self.reader, PostgresStore) and self.alerter is not None:
            # One node of the deployment runs the probes, status polls and alerts.
            duties = LeaderDuties(
                self.reader, self.settings, self.alerter, live.submit_events, self.catalog,
                watch=self.watch, clock=self.clock,
            )  # fmt: skip
            node = f"api-{self.settings.worker_id or default_worker_id()}"
            self.leadership = Leadership(self.reader, node, self.settings.lease_ttl_s, duties)
            self._running.append(asyncio.create_task(self.leadership.run(), name="leader"))
        self._start_tasks()
        return live

    async def _ticker(self) -> None:
        """Once a second: tell the pipeline the time; and when reports came in since the
        last look, tell the live pages (at most one change a second, however busy)."""
        assert self.bus is not None and self.engine is not None and self.live is not None
        seen = self.engine.journal_seq
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                done = await self.bus.tick()
            except Exception:
                log.exception("tick failed")
                continue
            if done is None and self.engine.journal_seq != seen:
                await self.live.changes.bump()
            seen = self.engine.journal_seq

    async def _compactor(self) -> None:
        """History rollups and retention in the background, on a store of its own
        (history.compactor: short steps, so ingest commits go in between)."""
        from outagewatch.history.compactor import run_compactor
        from outagewatch.store.rollup import Retention

        store = await asyncio.to_thread(open_store, self.settings.db)
        self._stores.append(store)
        st = self.settings
        await run_compactor(store, Retention(st.minute_days, st.rollup_days), self.clock)

    async def stop(self) -> None:
        for watcher in (self.probes, self.poller):
            if watcher is not None:
                await watcher.stop()
        self.probes = self.poller = None
        for t in self._running:
            t.cancel()
        for t in self._running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._running.clear()
        if self.bus is not None:
            await self.bus.close()
        if self.alerter is not None:
            await self.alerter.stop()
        if self._remote_bus is not None:
            await self._remote_bus.close()
            self._remote_bus = None
        for s in self._stores:
            s.close()
        self._stores.clear()
        self.reader = None


# Connections: past MAX_CONNECTIONS open ones, the longest idle is closed to make room
# (web/admission.py: GuardedHttp, which also closes a connection whose request head does not
# arrive in time); uvicorn's own limit_concurrency is off, as it answers a bare 503 to every
# request while that many connections are open, idle or not. The admission limits of
# web/ingest.py (256 ingest + 256 other + 64 body requests + 1,000 live-page streams) bound the
# busy ones. BACKLOG bounds the connections the kernel holds before they are accepted.
BACKLOG = 2048


def _allow_open_files(n: int) -> None:
    """Raise the soft limit on open files to `n` (at most the hard limit) if it is lower,
    so that connections up to MAX_CONNECTIONS do not fail to be accepted."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        return
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, exc)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a busy port or a bad address is
    a one-line error (exit 2), not a traceback after start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def preflight(settings: Settings) -> None:
    """Refuse to start on a store that cannot take writes (one line, exit 2)."""
    if is_postgres_url(settings.db):
        return
    problem = probe_write(settings.db)
    if problem is not None:
        raise StoreError(f"{settings.db}: {problem}")


def run(server: Server, host: str, port: int, banner: str | None = None) -> None:
    """Serve until interrupted (uvicorn with uvloop and httptools). `banner` is printed to
    stderr once the port is bound."""
    import uvicorn

    preflight(server.settings)
    sock = listen(host, port)
    if banner:
        print(banner, file=sys.stderr)
    _allow_open_files(MAX_CONNECTIONS + 256)
    config = uvicorn.Config(
        asgi_app(server),
        host=host,
        port=port,
        loop="uvloop",
        http=GuardedHttp,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=BACKLOG,
        timeout_keep_alive=int(KEEP_ALIVE_S),
    )

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # SIGTERM/SIGINT shut down gracefully (final commit) and the process exits 0;
            # uvicorn's own handler would re-raise the signal after shutting down.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    _Server(config).run(sockets=[sock])

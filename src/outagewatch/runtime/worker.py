"""`outagewatch worker`: runs the pipeline for the partitions it owns, from NATS to PostgreSQL.

Ownership is a lease per partition in PostgreSQL (`PostgresStore.acquire`/`renew`). Every
worker heartbeats; the live workers split the partitions evenly (sorted by id, the first
`P % W` take one more), a worker over its share hands partitions back after committing, and
the leases of a dead worker expire after `--lease-ttl-s` and are taken by the others, who
resume from the committed state.

For each partition it holds, a worker:
- restores the pipeline state committed for `partition/N`, with the stream position folded
  into it, and recreates the partition's JetStream consumer right after that position;
- folds messages into the pipeline (the same `Replayer` code as `replay`), skipping any
  message at or below the position it already holds, so a redelivered event counts once;
- commits about every second, under its lease (a commit by a worker that lost the lease
  writes nothing), and acknowledges only after the commit;
- advances the pipeline on the wall clock while its events are live (the latest within
  LIVE_S of the clock: probe and status results, which do not move the stream's time, then
  still close minutes), and once the partition has been idle for a minute, so incidents
  resolve when reports stop (events carry their own time: a replay of history through the
  bus stays in event time while it flows).

SIGTERM (or Ctrl-C) stops fetching, folds what was fetched, commits, acknowledges, hands the
leases back at once and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson

from outagewatch.bus.nats import PartitionReader, connect, ensure_stream, partition_of
from outagewatch.catalog import Catalog
from outagewatch.errors import BusError, CatalogError, OutagewatchError, StoreError, UsageError
from outagewatch.events import EventDecoder, epoch_of
from outagewatch.incidents.causes import CONCURRENT_S
from outagewatch.incidents.clusters import stored_clusters
from outagewatch.incidents.verdicts import service_verdict
from outagewatch.runtime.replay import Replayer, Summary
from outagewatch.settings import PipelineSettings, Settings
from outagewatch.store import is_postgres_url
from outagewatch.store.postgres import Lease, LeaseLostError, PostgresStore

FETCH_BATCH = 256  # messages per fetch (each is one API request's lines of one partition)
FETCH_WAIT_S = 0.5  # how long a fetch waits for the first message
COMMIT_EVERY_S = 1.0
COMMIT_LINES = 200_000
IDLE_ADVANCE_S = 60.0  # a partition idle this long follows the wall clock
ADVANCE_CHECK_S = 5.0
FUTURE_S = 86_400.0  # events further in the future than this are mistakes
LEASE_MARGIN_S = 1.0  # stop working a partition this long before its lease may expire
VERDICTS_REFRESH_S = 30.0  # verdicts are published at least this often, changed or not
LIVE_S = 120.0  # a partition whose latest event is this recent follows the wall clock
WINDOWS_KEPT_S = 7 * 86_400.0  # maintenance windows that ended longer ago are of no use


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def partition_key(partition: int) -> str:
    return f"partition/{partition}"


def fair_share(live: list[str], me: str, partitions: int) -> int:
    """How many partitions `me` should own when `live` (sorted ids) share them evenly."""
    if me not in live:
        live = sorted([*live, me])
    n = len(live)
    i = live.index(me)
    return partitions // n + (1 if i < partitions % n else 0)


@dataclass
class _Run:
    """One partition this worker works on."""

    partition: int
    lease: Lease
    rp: Replayer
    reader: PartitionReader
    seq: int  # the last stream sequence folded into the pipeline
    valid_until: float  # monotonic time the lease is surely ours until
    summary: Summary = field(default_factory=Summary)
    committed: int = 0
    unacked: Any = None  # the last message fetched and not yet acknowledged
    dirty: bool = False
    last_commit: float = field(default_factory=time.monotonic)
    lines_since_commit: int = 0
    event_wall: float = 0.0  # wall time when events last came in
    event_wm: float | None = None  # the pipeline's watermark then
    last_advance_check: float = 0.0
    latest_ts: float | None = None  # the latest event time (reports, probes, status) folded
    verdicts: dict[str, Any] | None = None  # what was last published of the verdicts
    verdicts_at: float = -math.inf  # when (monotonic)
    verdicts_check: float = 0.0
    redelivered: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Worker:
    def __init__(
        self,
        store: PostgresStore,
        nc: Any,
        catalog: Catalog,
        settings: PipelineSettings,
        *,
        stream: str,
        partitions: int,
        worker_id: str,
        lease_ttl_s: float,
        clock: Callable[[], float] = time.time,
        idle_advance_s: float = IDLE_ADVANCE_S,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.catalog = catalog
        self.settings = settings
        self.stream = stream
        self.partitions = partitions
        self.id = worker_id
        self.ttl = float(lease_ttl_s)
        self.clock = clock
        self.idle_advance_s = idle_advance_s
        self.log = log or _stderr
        self.runs: dict[str, _Run] = {}
        self.names = [partition_key(p) for p in range(partitions)]
        # Maintenance windows (service or group, start, end), re-read every lease round.
        self.windows: list[tuple[str, float, float]] = []

    # ================================================================ ownership
    async def main(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then finish cleanly (commit, ack, hand leases back)."""
        await ensure_stream(self.js, self.stream, self.partitions)
        try:
            while not stop.is_set():
                try:
                    self.reload_catalog(await asyncio.to_thread(self.store.load_catalog))
                    await self.refresh_maintenance()
                    await self.balance()
                except (StoreError, BusError, nats.errors.Error) as exc:
                    self.log(f"worker {self.id}: lease round failed: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.ttl / 3)
        finally:
            await self.shutdown()

    def reload_catalog(self, text: str | None = None) -> bool:
        """Take the catalog stored by the API (PUT/DELETE /api/v1/services) if it changed
        (`text`: as already read from the store): every partition's pipeline decodes and
        explains with it. True when it changed. Runs on the event loop, as `_fold` does."""
        if text is None:
            text = self.store.load_catalog()
        if text is None or text == self.catalog.source:
            return False
        try:
            catalog = Catalog.from_toml(text, "<stored catalog>")
        except CatalogError as exc:
            self.log(f"worker {self.id}: the stored catalog is not valid, kept mine: {exc}")
            return False
        self.catalog = catalog
        for run in self.runs.values():
            rp = run.rp
            rp.catalog = catalog
            rp.pipeline.set_catalog(catalog)
            rp.decoder = EventDecoder(catalog, max_ts=rp.decoder.max_ts)
        self.log(f"worker {self.id}: took the changed catalog ({len(catalog)} services)")
        return True

    async def refresh_maintenance(self) -> None:
        """Hand every partition's pipeline the maintenance windows in the shared store (those
        that ended within the last week), as the single-process server does."""
        rows = await asyncio.to_thread(self.store.maintenance, self.clock() - WINDOWS_KEPT_S)
        self.windows = [(w["service"], w["starts_at"], w["ends_at"]) for w in rows]
        for run in self.runs.values():
            run.rp.pipeline.set_maintenance(self.windows)

    async def balance(self) -> None:
        """One round: heartbeat, renew, drop what is lost, hand back or take partitions."""
        t0 = time.monotonic()
        live = await asyncio.to_thread(self.store.heartbeat, self.id, self.ttl)
        held = {ls.name: ls for ls in await asyncio.to_thread(self.store.renew, self.id, self.ttl)}
        for name, run in list(self.runs.items()):
            ls = held.get(name)
            if ls is None or ls.epoch != run.lease.epoch:
                self.log(f"worker {self.id}: lost {name}; dropping it without committing")
                await self._abort(run)
            else:
                run.valid_until = t0 + self.ttl - LEASE_MARGIN_S
        orphans = [n for n in held if n not in self.runs]  # held, but no run (it failed)
        if orphans:
            await asyncio.to_thread(self.store.release, self.id, orphans)
        share = fair_share(live, self.id, self.partitions)
        active = [r for r in self.runs.values() if not r.stop.is_set()]
        if len(active) > share:
            for run in sorted(active, key=lambda r: -r.partition)[: len(active) - share]:
                self.log(f"worker {self.id}: handing {run.lease.name} back ({share} is my share)")
                run.stop.set()
        elif len(self.runs) < share:
            start = live.index(self.id) if self.id in live else 0
            order = self.names[start:] + self.names[:start]
            free = [n for n in order if n not in self.runs]
            got = await asyncio.to_thread(
                self.store.acquire, self.id, free, self.ttl, share - len(self.runs)
            )
            for ls in got:
                try:
                    await self._start(ls, t0)
                except (StoreError, BusError, nats.errors.Error) as exc:
                    self.log(f"worker {self.id}: cannot start {ls.name}: {exc}")
                    await asyncio.to_thread(self.store.release, self.id, [ls.name])

    async def _start(self, lease: Lease, t0: float) -> None:
        partition = int(lease.name.split("/", 1)[1])
        rp = await asyncio.to_thread(
            Replayer, self.store, self.catalog, self.settings, now=self.clock, state_key=lease.name
        )
        rp.pipeline.set_maintenance(self.windows)
        position = await asyncio.to_thread(self.store.load_position, lease.name)
        reader = await PartitionReader.start(self.js, self.stream, partition, position)
        run = _Run(
            partition=partition,
            lease=lease,
            rp=rp,
            reader=reader,
            seq=position,
            committed=position,
            valid_until=t0 + self.ttl - LEASE_MARGIN_S,
            event_wall=self.clock(),
            event_wm=rp.pipeline.watermark,
        )
        self.runs[lease.name] = run
        run.task = asyncio.create_task(self._work(run), name=f"outagewatch {lease.name}")
        self.log(
            f"worker {self.id}: took {lease.name} (epoch {lease.epoch}) at position {position}"
        )

    async def _abort(self, run: _Run) -> None:
        """Drop a partition without committing (its lease is gone or its work failed)."""
        self.runs.pop(run.lease.name, None)
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        await run.reader.stop()

    async def shutdown(self) -> None:
        for run in self.runs.values():
            run.stop.set()
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(self.store.leave, self.id)
        except StoreError as exc:
            self.log(f"worker {self.id}: could not hand leases back (they expire): {exc}")
        self.runs.clear()

    # ================================================================ one partition
    async def _work(self, run: _Run) -> None:
        name = run.lease.name
        try:
            while not run.stop.is_set():
                if time.monotonic() > run.valid_until:
                    raise _LeaseUnsure(f"{name}: lease not renewed in time")
                got = await run.reader.fetch(FETCH_BATCH, FETCH_WAIT_S)
                if got:
                    if time.monotonic() > run.valid_until:
                        raise _LeaseUnsure(f"{name}: lease not renewed in time")
                    self._fold(run, got)
                self._advance_if_idle(run)
                await self._publish_verdicts(run)
                due = time.monotonic() - run.last_commit >= COMMIT_EVERY_S
                if due or run.lines_since_commit >= COMMIT_LINES:
                    await self._commit(run)
            await self._commit(run)  # a clean stop: the fetched batch is in; commit, ack
            await run.reader.stop()
            self.runs.pop(name, None)
            await asyncio.to_thread(self.store.release, self.id, [name])
            self.log(
                f"worker {self.id}: handed {name} back at position {run.committed} "
                f"({run.summary.lines:,} lines, {run.redelivered} redelivered messages skipped)"
            )
        except asyncio.CancelledError:
            raise
        except (OutagewatchError, nats.errors.Error, _LeaseUnsure) as exc:
            why = "lost its lease" if isinstance(exc, LeaseLostError) else f"failed: {exc}"
            self.log(f"worker {self.id}: {name} {why}; restarting it from the committed state")
            self.runs.pop(name, None)
            await run.reader.stop()
            # Not released: the next round releases it as an orphan, or it is gone already.

    def _fold(self, run: _Run, got: list[tuple[Any, Any]]) -> None:
        lines: list[bytes] = []
        for rec, _msg in got:
            if rec.seq <= run.seq:
                run.redelivered += 1  # already folded in (a redelivery): counted once
                continue
            lines.extend(rec.lines)
            run.seq = rec.seq
        run.unacked = got[-1][1]
        if not lines:
            return
        d = run.rp.decoder.decode(lines, 1)
        if any(r.reason == "unknown service" for r in d.rejected) and self.reload_catalog():
            # An API node accepted them against a newer catalog (PUT /api/v1/services): the
            # shared store has it; decode again with it.
            d = run.rp.decoder.decode(lines, 1)
        run.rp.ingest(d, run.lease.name, run.summary)
        newest = max([*d.reports.ts.tolist(), *(o.ts for o in d.others)], default=None)
        if newest is not None:
            run.latest_ts = max(run.latest_ts or newest, newest)
        # Live, as in `serve`: reports the wall clock has reached are not ahead of anything,
        # so the stream clock (pipeline/clock.py) does not hold them.
        run.rp.pipeline.release_until(self.clock())
        run.lines_since_commit += len(lines)
        run.dirty = True
        run.event_wall = self.clock()
        run.event_wm = run.rp.pipeline.watermark

    def _advance_if_idle(self, run: _Run) -> None:
        mono = time.monotonic()
        if mono - run.last_advance_check < ADVANCE_CHECK_S:
            return
        run.last_advance_check = mono
        now = self.clock()
        run.rp.decoder.max_ts = now + FUTURE_S
        p = run.rp.pipeline
        if run.latest_ts is not None and now - run.latest_ts < LIVE_S:
            # Live events (probes and status polls of the leader, reports posted now): the
            # wall clock is the time, as in `serve`; probes and status polls alone do not
            # move the stream's time, and they never leave the partition idle.
            before = p.closed_until
            p.advance_to(now)
            if p.closed_until != before:
                run.dirty = True
            return
        idle = now - run.event_wall
        if p.watermark is None or run.event_wm is None or idle < self.idle_advance_s:
            return
        before = p.closed_until
        p.advance_to(min(now, run.event_wm + idle))
        if p.closed_until != before:
            run.dirty = True

    async def _publish_verdicts(self, run: _Run) -> None:
        """Every ADVANCE_CHECK_S: what the partition's pipeline says of its services' probes
        and status pages (partial failures, silence, the official status), for the API nodes
        (web/live.py StoredVerdicts), when it changed and at least every VERDICTS_REFRESH_S
        (the API nodes take a silent publisher for a tracker without fresh data)."""
        mono = time.monotonic()
        if mono - run.verdicts_check < ADVANCE_CHECK_S:
            return
        run.verdicts_check = mono
        now = self.clock()
        p = run.rp.pipeline
        doc: dict[str, Any] = {}
        for sid, svc in self.catalog.services.items():
            if not (svc.probes or svc.status_page) or (
                partition_of(sid, self.partitions) != run.partition
            ):
                continue
            v = service_verdict(p, svc, now)
            doc[sid] = {"partial": v.partial, "silent": v.silent, "detail": v.detail,
                        "official": p.official_status(sid)}  # fmt: skip
        if doc == run.verdicts and mono - run.verdicts_at < VERDICTS_REFRESH_S:
            return
        body = orjson.dumps({"at": now, "services": doc}).decode()
        key = f"verdicts/{run.lease.name}"
        try:
            if await asyncio.to_thread(self.store.put_shared, key, body, run.lease):
                run.verdicts, run.verdicts_at = doc, mono
        except StoreError as exc:
            self.log(f"worker {self.id}: publishing the verdicts of {run.lease.name} failed: {exc}")

    async def _commit(self, run: _Run) -> None:
        if run.dirty:
            c = run.rp.take_commit(run.summary)
            await asyncio.to_thread(self.store.commit, c, fence=run.lease, position=run.seq)
            run.committed = run.seq
            run.dirty = False
            if c.incidents:
                try:
                    await asyncio.to_thread(self.recluster, c.incidents)
                except StoreError as exc:  # the next commit of incidents tries again
                    self.log(f"worker {self.id}: clustering across partitions failed: {exc}")
        run.lines_since_commit = 0
        run.last_commit = time.monotonic()
        if run.unacked is not None:
            msg, run.unacked = run.unacked, None
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()  # AckAll: everything up to it; a lost ack is a skipped redelivery

    def recluster(self, docs: Sequence[dict[str, Any]]) -> int:
        """After a commit that changed incidents: the clusters of the incidents around them,
        over every partition's (a partition's pipeline sees only its own services)."""
        starts = [epoch_of(d["started_at"]) for d in docs]
        margin = 2 * CONCURRENT_S
        catalog = self.catalog
        return self.store.recluster(
            min(starts) - margin,
            max(starts) + margin,
            lambda found: stored_clusters(found, catalog),
        )


class _LeaseUnsure(Exception):  # noqa: N818 (a state, handled inside this module)
    """The lease was not renewed in time: stop working the partition."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_worker(settings: Settings, load_catalog: Callable[[Settings, Any], Catalog]) -> int:
    """The `worker` command: run until SIGTERM/SIGINT, then exit 0 after a clean stop."""
    if not settings.nats_url:
        raise UsageError(
            "worker needs a NATS JetStream server: set --nats-url / OUTAGEWATCH_NATS_URL"
        )
    if not is_postgres_url(settings.db):
        raise UsageError(
            "worker needs the shared PostgreSQL store: set --db / OUTAGEWATCH_DB to a "
            "postgresql:// URL"
        )
    store = PostgresStore(settings.db)
    try:
        catalog = load_catalog(settings, store)
        asyncio.run(_main(settings, store, catalog))
    finally:
        store.close()
    return 0


async def _main(settings: Settings, store: PostgresStore, catalog: Catalog) -> None:
    worker_id = settings.worker_id or default_worker_id()
    assert settings.nats_url is not None
    nc = await connect(settings.nats_url, f"outagewatch-worker-{worker_id}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        store,
        nc,
        catalog,
        settings.pipeline,
        stream=settings.stream,
        partitions=settings.partitions,
        worker_id=worker_id,
        lease_ttl_s=settings.lease_ttl_s,
    )
    _stderr(
        f"worker {worker_id}: {settings.partitions} partitions of stream {settings.stream}, "
        f"lease {settings.lease_ttl_s} s"
    )
    from outagewatch.history.compactor import run_compactor
    from outagewatch.store.rollup import Retention

    retention = Retention(settings.minute_days, settings.rollup_days)
    compactor = asyncio.create_task(run_compactor(store, retention), name="compactor")
    try:
        await worker.main(stop)
    finally:
        compactor.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await compactor
        with contextlib.suppress(Exception):
            await nc.drain()
    _stderr(f"worker {worker_id}: stopped cleanly")

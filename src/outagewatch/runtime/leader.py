"""Scale-out: one API node at a time leads, and runs what must run once per deployment.

The leader runs the probe scheduler and the status-page poller (their results go to the bus
like posted events, and the workers count them) and the alert dispatcher: it follows the
transitions the workers commit to the shared store, queues the alerts they call for, and
sends them.

Election is the worker partitions' lease (`PostgresStore.acquire`/`renew`/`release`) on
one more row, LEADER_LEASE: every API node tries to take it every `ttl / 3`; the holder
renews it as often. A leader whose renewal has not succeeded for `ttl - LEASE_MARGIN_S`
stops leading on its own, before anyone else may take the lease; a leader that dies (kill -9)
is replaced once its lease expires, within the TTL and one round.

Alerts are never sent twice across a handover: queueing is idempotent (a delivery's key is
unique), and every attempt is claimed in the store first, in one statement that compares
the attempts made so far and checks that the claimant still holds the lease
(`PostgresStore.claim_delivery`); so a deposed leader makes no attempt, and two leaders
never make the same one. One case is left in doubt: a leader killed while an attempt is on
the wire. The row then says "in flight"; the next leader makes the attempt again with the
same idempotency key (the webhook's `X-Outagewatch-Delivery`), so a receiver that keeps the
keys it saw drops the repeat.

Transitions are read after a cursor stored under the lease. Identity sequence numbers are
handed out before commit, so a later number can become visible first: the cursor moves past
a missing number only once it has been missing for GAP_WAIT_S (a rolled-back commit leaves
a gap for ever), and what was read beyond it is remembered, not handed in twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from outagewatch.alerts.alerter import Alerter
from outagewatch.catalog import Catalog
from outagewatch.errors import StoreError
from outagewatch.incidents.lifecycle import Transition
from outagewatch.probes.scheduler import ProbeScheduler
from outagewatch.probes.statuspage import StatusPoller
from outagewatch.probes.watch import start_watchers
from outagewatch.settings import Settings
from outagewatch.store.postgres import Lease, PostgresStore

log = logging.getLogger("outagewatch.leader")

LEADER_LEASE = "leader"
LEASE_MARGIN_S = 1.0  # stop leading this long before the lease may expire
ALERT_POLL_S = 1.0  # how often the leader reads new transitions
GAP_WAIT_S = 10.0  # a missing sequence number is waited for this long
CURSOR = "transitions"

Submit = Callable[[list[dict[str, Any]]], Awaitable[None]]


class TransitionFollower:
    """Reads the stored transitions in order, each once, after a cursor kept in the store."""

    def __init__(self, store: PostgresStore, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.clock = clock
        self.cursor: int | None = None
        self.seen: set[int] = set()  # read beyond the cursor (behind a gap)
        self.gaps: dict[int, float] = {}  # missing number -> when first missed

    def start(self, lease: Lease) -> None:
        """A new term: from the stored cursor; the very first leader starts at the end
        (history is not alerted about)."""
        self.seen.clear()
        self.gaps.clear()
        cursor = self.store.leader_cursor(CURSOR)
        if cursor is None:
            cursor = self.store.last_transition_seq()
            self.store.save_leader_cursor(CURSOR, cursor, lease)
        self.cursor = cursor

    def read(self, lease: Lease) -> list[Transition]:
        """The transitions not handed out yet; moves the stored cursor (fenced by `lease`)."""
        assert self.cursor is not None
        rows = self.store.transitions_after(self.cursor)
        new = [tr for seq, tr in rows if seq not in self.seen]
        self.seen.update(seq for seq, _ in rows)
        cursor = self.cursor
        now = self.clock()
        present = {seq for seq, _ in rows}
        top = max(present, default=cursor)
        while cursor < top:
            nxt = cursor + 1
            if nxt not in present:
                since = self.gaps.setdefault(nxt, now)
                if now - since < GAP_WAIT_S:
                    break
            self.gaps.pop(nxt, None)
            cursor = nxt
        self.seen = {s for s in self.seen if s > cursor}
        if cursor != self.cursor and self.store.save_leader_cursor(CURSOR, cursor, lease):
            self.cursor = cursor
        elif cursor != self.cursor:
            raise StoreError("the leader lease was lost while saving the transitions cursor")
        return new


@dataclass(eq=False, repr=False)
class LeaderDuties:
    """What the leader runs: probes, status polls and alerts (started and stopped as one)."""

    store: PostgresStore
    settings: Settings
    alerter: Alerter
    submit: Submit
    catalog: Catalog
    _: KW_ONLY
    watch: bool = True
    clock: Callable[[], float] = time.time
    probes: ProbeScheduler | None = field(default=None, init=False)
    poller: StatusPoller | None = field(default=None, init=False)
    lease: Lease | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.follower = TransitionFollower(self.store)

    async def start(self, lease: Lease) -> None:
        self.lease = lease
        await asyncio.to_thread(self.follower.start, lease)
        self.alerter.claim = self._claim
        await self.alerter.start()
        await self.alerter.refresh()
        if self.watch:
            await self._start_watching()

    async def stop(self) -> None:
        await self._stop_watching()
        await self.alerter.stop()
        self.alerter.claim = None
        self.lease = None

    async def step(self) -> None:
        """One round while leading: new transitions become alerts."""
        lease = self.lease
        if lease is None:
            return
        transitions = await asyncio.to_thread(self.follower.read, lease)
        if not transitions:
            return
        docs: dict[str, dict[str, Any]] = {}
        for iid in dict.fromkeys(tr.incident for tr in transitions):
            doc = await asyncio.to_thread(self.store.incident, iid)
            if doc is not None:
                docs[iid] = doc
        await self.alerter.handle(transitions, docs)

    async def refresh(self) -> None:
        """Every lease round: subscriptions and queued deliveries made on other nodes."""
        if self.lease is not None:
            await self.alerter.refresh()

    async def follow(self) -> None:
        """Every lease round of a node that does not lead: the subscriptions made on other
        nodes (this node's API lists them, and queues operators' update alerts for them;
        the leader sends those)."""
        await self.alerter.refresh()

    async def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog
        if self.lease is not None and self.watch:
            await self._stop_watching()
            await self._start_watching()

    def _claim(self, delivery_id: int, attempts: int) -> bool:
        lease = self.lease
        return lease is not None and self.store.claim_delivery(delivery_id, attempts, lease)

    async def _start_watching(self) -> None:
        w = await start_watchers(self.catalog, self.submit, self.settings, self.clock)
        self.probes, self.poller = w

    async def _stop_watching(self) -> None:
        for watcher in (self.probes, self.poller):
            if watcher is not None:
                await watcher.stop()
        self.probes = self.poller = None


class Leadership:
    """Takes, keeps and gives back the leader lease; runs `duties` while it holds it."""

    def __init__(
        self,
        store: PostgresStore,
        node_id: str,
        ttl_s: float,
        duties: LeaderDuties,
        *,
        poll_s: float = ALERT_POLL_S,
    ) -> None:
        self.store = store
        self.id = node_id
        self.ttl = float(ttl_s)
        self.duties = duties
        self.poll_s = min(poll_s, self.ttl / 3)
        self.lease: Lease | None = None
        self.valid_until = 0.0  # monotonic time the lease is surely ours until
        self.terms = 0  # how many times this node became the leader

    @property
    def leading(self) -> bool:
        return self.lease is not None

    async def run(self) -> None:
        """Until cancelled: a lease round every ttl / 3, the duties' step every poll_s."""
        last_round = -float("inf")
        try:
            while True:
                mono = time.monotonic()
                if mono - last_round >= self.ttl / 3:
                    last_round = mono
                    await self._round(mono)
                if self.lease is not None and time.monotonic() > self.valid_until:
                    log.warning("leader %s: lease not renewed in time; stepping down", self.id)
                    await self._step_down(release=False)
                if self.lease is not None:
                    try:
                        await self.duties.step()
                    except StoreError as exc:
                        log.warning("leader %s: alert round failed: %s", self.id, exc)
                    except Exception:  # a bug in one round must not end the election
                        log.exception("leader %s: alert round failed", self.id)
                await asyncio.sleep(self.poll_s)
        finally:
            if self.lease is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._step_down(release=True))

    async def _round(self, t0: float) -> None:
        try:
            if self.lease is None:
                got = await asyncio.to_thread(
                    self.store.acquire, self.id, [LEADER_LEASE], self.ttl, 1
                )
                if got:
                    self.lease = got[0]
                    self.valid_until = t0 + self.ttl - LEASE_MARGIN_S
                    self.terms += 1
                    log.warning("leader %s: leading (epoch %d)", self.id, self.lease.epoch)
                    try:
                        await self.duties.start(self.lease)
                    except StoreError:
                        await self._step_down(release=True)
                        raise
                else:
                    await self.duties.follow()
                return
            held = await asyncio.to_thread(self.store.renew, self.id, self.ttl)
            if any(ls == self.lease for ls in held):
                self.valid_until = t0 + self.ttl - LEASE_MARGIN_S
                await self.duties.refresh()
            else:
                log.warning("leader %s: lost the lease; stepping down", self.id)
                await self._step_down(release=False)
        except StoreError as exc:
            log.warning("leader %s: lease round failed: %s", self.id, exc)
        except Exception:
            log.exception("leader %s: lease round failed", self.id)

    async def _step_down(self, *, release: bool) -> None:
        self.lease = None
        await self.duties.stop()
        if release:
            await asyncio.to_thread(self.store.release, self.id, [LEADER_LEASE])

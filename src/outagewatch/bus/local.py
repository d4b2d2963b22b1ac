"""The in-process bus: one writer thread, a journal in the store, group commit.

Every store write of a single-process server goes through this thread, in one order:

- `publish` queues a batch of accepted event lines; the thread takes every batch waiting
  (group commit), appends them to the journal in one transaction, hands them to the engine,
  and only then resolves the publishers' futures: a `202` means the events are durable and
  counted.
- `tick` queues "the time is now T": the engine closes the minutes that ended and, when a
  minute closed (or many events wait), commits the pipeline state, incidents and minute
  counts together with the last journal seq they include (the journal up to it is dropped
  in that transaction). Between commits the journal is what makes events durable.

The queue is bounded: when it is full, `publish` raises `OverloadedError` at once instead of
queueing without limit (the API answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from outagewatch.engine import Committed, Engine
from outagewatch.errors import BusError, OutagewatchError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_GROUP = 512  # batches written in one journal transaction at most
# Between minute closes, commit the pipeline once this many events wait in the journal
# (bounds what a restart replays).
COMMIT_EVENTS = 200_000


class OverloadedError(BusError):
    """The bus's queue is full: refuse now rather than queue without bound."""

    code = "overloaded"


@dataclass
class _Publish:
    batch: bytes
    future: Future[int]


@dataclass
class _Tick:
    now: float
    future: Future[Committed | None]
    commit: bool = False


@dataclass
class _Stop:
    pass


_Job = _Publish | _Tick | _Stop


class LocalBus:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int = 10_000,
        on_commit: Callable[[Committed], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.on_commit = on_commit
        self.clock = clock
        self._q: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="outagewatch-writer", daemon=True)
        self._started = False
        self.groups = 0  # journal transactions written
        self.batches = 0  # batches journaled

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def depth(self) -> int:
        return self._q.qsize()

    # ---------------------------------------------------------------- producers
    async def publish(self, lines: Sequence[bytes], services: Sequence[str]) -> None:
        if not lines:
            return
        fut: Future[int] = Future()
        try:
            self._q.put_nowait(_Publish(b"\n".join(lines), fut))
        except queue.Full:
            raise OverloadedError("the server is over capacity; retry shortly") from None
        await asyncio.wrap_future(fut)

    def publish_sync(self, lines: Sequence[bytes]) -> int:
        """Publish from a non-async caller (the demo feed, tests); blocks until durable."""
        fut: Future[int] = Future()
        self._q.put(_Publish(b"\n".join(lines), fut))
        return fut.result()

    def tick_future(
        self, now: float | None = None, *, commit: bool = False
    ) -> Future[Committed | None]:
        fut: Future[Committed | None] = Future()
        self._q.put(_Tick(self.clock() if now is None else now, fut, commit))
        return fut

    async def tick(self, now: float | None = None, *, commit: bool = False) -> Committed | None:
        """Advance to `now` (default: the clock); commit when a minute closed, when many
        events wait uncommitted, or when `commit` asks. Returns what the commit changed."""
        return await asyncio.wrap_future(self.tick_future(now, commit=commit))

    async def close(self) -> None:
        if self._started and self._thread.is_alive():
            self._q.put(_Stop())
            await asyncio.to_thread(self._thread.join)

    # ---------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        pending: _Job | None = None
        while True:
            job = pending if pending is not None else self._q.get()
            pending = None
            if isinstance(job, _Stop):
                self._final_commit()
                return
            if isinstance(job, _Tick):
                self._tick(job)
                continue
            group = [job]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, _Publish):
                    group.append(nxt)
                else:
                    pending = nxt  # keep the order: ticks and stop after this group
                    break
            self._journal(group)

    def _journal(self, group: list[_Publish]) -> None:
        # The whole group is one journal row: one insert and one fsync for all of it.
        batch = b"\n".join(g.batch for g in group)
        try:
            (seq,) = self.store.append_journal([batch], self.clock())
        except OutagewatchError as exc:
            log.error("journal write failed: %s", exc)
            for g in group:
                _fail(g.future, BusError(f"events could not be made durable: {exc}"))
            return
        self.groups += 1
        self.batches += len(group)
        # One ingest for the whole group: the pipeline's cost per call is mostly fixed.
        try:
            self.engine.ingest(seq, batch.split(b"\n"))
        except Exception as exc:  # durable already: it will be replayed on restart
            log.exception("ingest of journal batch %d failed", seq)
            for g in group:
                _fail(g.future, BusError(f"accepted but not yet counted: {exc}"))
            return
        for g in group:
            _done(g.future, seq)

    def _tick(self, job: _Tick) -> None:
        try:
            closed = self.engine.advance(job.now)
            due = closed or job.commit or self.engine.uncommitted >= COMMIT_EVENTS
            done = self.engine.commit() if due else None
        except Exception as exc:
            log.exception("tick failed")
            _fail(job.future, exc)
            return
        if done is not None and self.on_commit is not None:
            try:
                self.on_commit(done)
            except Exception:
                log.exception("on_commit callback failed")
        _done(job.future, done)

    def _final_commit(self) -> None:
        try:
            done = self.engine.commit()
        except Exception:
            log.exception("final commit failed")
            return
        if done is not None and self.on_commit is not None:
            self.on_commit(done)


def _done(fut: Future[T], value: T) -> None:
    """Resolve a publisher's future; one whose request was cancelled (the client went away)
    no longer wants an answer, and must not take the writer thread down."""
    if fut.set_running_or_notify_cancel():
        fut.set_result(value)


def _fail(fut: Future[Any], exc: BaseException) -> None:
    if fut.set_running_or_notify_cancel():
        fut.set_exception(exc)

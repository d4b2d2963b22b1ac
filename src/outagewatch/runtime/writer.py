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

The queue is bounded, and a refusal is `OverloadedError` at once (the API answers 503 with
Retry-After) rather than a long wait:

- by count (`queue_size` jobs) and by bytes (`max_bytes` of event lines queued or being
  written): memory stays bounded whatever the batch sizes. `publish` refuses past these,
  whoever publishes; `publish_sync` (tests, scripts) waits for room instead.
- by age: while the oldest waiting job has waited more than `max_wait_s`, the writer is
  that far behind and a new batch would wait at least as long. `overloaded()` says so, and
  the API asks it before it reads a POST's body (web/ingest.py), so an HTTP client is told
  to retry within milliseconds instead of waiting. The server's own producers (probe
  results, status polls, the demo feed) are few, bounded by their own design and matter
  (probes confirm incidents): a lag does not refuse them, only a full queue would.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from outagewatch.errors import BusError, OutagewatchError, OverloadedError
from outagewatch.runtime.engine import Committed, Engine

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_GROUP = 512  # batches written in one journal transaction at most
MAX_GROUP_BYTES = 2 << 20  # ...and bytes (the group is joined into one journal row)
# Event bytes queued or being written at most. HTTP bodies are at most 1 MiB and the API
# admits a few MiB of them at once (web/ingest.py), so this binds the other producers.
MAX_QUEUE_BYTES = 64 << 20
# Refuse new batches while the oldest queued job has waited longer than this: a `202`
# should not take seconds, and a client told to retry is better off than one left waiting.
MAX_WAIT_S = 1.0
# Between minute closes, commit the pipeline once this many events wait in the journal
# (bounds what a restart replays).
COMMIT_EVENTS = 200_000


@dataclass
class _Publish:
    batch: bytes
    future: Future[int]
    at: float = 0.0  # time.monotonic() when queued


@dataclass
class _Tick:
    now: float
    future: Future[Committed | None]
    commit: bool = False
    at: float = 0.0


@dataclass
class _Stop:
    at: float = 0.0


_Job = _Publish | _Tick | _Stop


class _JobQueue:
    """The writer's FIFO of jobs; it knows the bytes of its batches (until they are
    written) and how long its oldest job has waited. One lock guards it all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._ready = threading.Condition(self.lock)  # a job was queued
        self._room = threading.Condition(self.lock)  # a group was written
        self.jobs: deque[_Job] = deque()
        self.bytes = 0  # event bytes queued or being written

    def __len__(self) -> int:
        return len(self.jobs)

    def lag(self) -> float:
        """Seconds the oldest waiting job has waited (0 when none waits)."""
        try:
            return max(0.0, time.monotonic() - self.jobs[0].at)
        except IndexError:
            return 0.0

    def put(self, job: _Job) -> None:
        """Queue `job` whatever the queue holds (ticks and stop: one a second at most)."""
        with self.lock:
            self.append(job)

    def append(self, job: _Job) -> None:
        """Queue `job`; the caller holds the lock."""
        job.at = time.monotonic()
        self.jobs.append(job)
        if isinstance(job, _Publish):
            self.bytes += len(job.batch)
        self._ready.notify()

    def wait_room(self, timeout: float) -> None:
        """Wait (holding the lock) until a group was written or `timeout` passed."""
        self._room.wait(timeout)

    def take(self) -> _Tick | _Stop | list[_Publish]:
        """The next tick or stop, or the next group of publishes (in queue order)."""
        with self.lock:
            jobs = self.jobs
            while not jobs:
                self._ready.wait()
            job = jobs.popleft()
            if not isinstance(job, _Publish):
                return job
            group, size = [job], len(job.batch)
            while jobs and len(group) < MAX_GROUP and size < MAX_GROUP_BYTES:
                nxt = jobs[0]
                if not isinstance(nxt, _Publish):
                    break  # keep the order: ticks and stop after this group
                jobs.popleft()
                group.append(nxt)
                size += len(nxt.batch)
            return group

    def done(self, group: list[_Publish]) -> None:
        """`group` is written: its bytes no longer count."""
        with self.lock:
            self.bytes -= sum(len(g.batch) for g in group)
            self._room.notify_all()


class LocalBus:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int = 10_000,
        max_bytes: int = MAX_QUEUE_BYTES,
        max_wait_s: float = MAX_WAIT_S,
        on_commit: Callable[[Committed], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or max_bytes < 1 or max_wait_s <= 0:
            raise ValueError("queue_size, max_bytes and max_wait_s must be positive")
        self.engine = engine
        self.store = engine.store
        self.on_commit = on_commit
        self.clock = clock
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self._q = _JobQueue()
        self._thread = threading.Thread(target=self._run, name="outagewatch-writer", daemon=True)
        self._started = False
        self.groups = 0  # journal transactions written
        self.batches = 0  # batches journaled
        self.refused = 0  # batches `publish` refused (queue full)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting for the writer."""
        return len(self._q)

    @property
    def queued_bytes(self) -> int:
        """Event bytes queued or being written."""
        return self._q.bytes

    def lag(self) -> float:
        """Seconds the oldest waiting job has waited (0 when none waits)."""
        return self._q.lag()

    def overloaded(self, size: int = 0) -> OverloadedError | None:
        """The refusal a batch of `size` bytes from an HTTP client should get now (the queue
        is full, or too far behind), or None. The API asks before it reads a body, to refuse
        without the work of parsing it."""
        lag = self._q.lag()
        if lag > self.max_wait_s:
            retry = min(10, math.ceil(lag))
            return OverloadedError(f"the server is {lag:.1f} s behind; retry in {retry} s", retry)
        return self._full(size)

    def _full(self, size: int) -> OverloadedError | None:
        """The refusal when the queue cannot take `size` more bytes (count or bytes)."""
        q = self._q
        if len(q) >= self.queue_size or (q.bytes and q.bytes + size > self.max_bytes):
            return OverloadedError("the server's queue is full; retry in 1 s", 1)
        return None

    # ---------------------------------------------------------------- producers
    async def publish(self, lines: Sequence[bytes], services: Sequence[str]) -> None:
        if len(lines) != len(services):
            raise ValueError(f"{len(lines)} lines but {len(services)} services")
        if not lines:
            return
        batch = b"\n".join(lines)
        fut: Future[int] = Future()
        with self._q.lock:
            refusal = self._full(len(batch))
            if refusal is None:
                self._q.append(_Publish(batch, fut))
            else:
                self.refused += 1
        if refusal is not None:
            raise refusal
        await asyncio.wrap_future(fut)

    def publish_sync(self, lines: Sequence[bytes]) -> int:
        """Publish from a non-async caller (tests, scripts); blocks until durable, waiting
        for room in the queue rather than refusing."""
        batch = b"\n".join(lines)
        fut: Future[int] = Future()
        with self._q.lock:
            while self._full(len(batch)) is not None:
                self._q.wait_room(0.05)
            self._q.append(_Publish(batch, fut))
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
        while True:
            job = self._q.take()
            if isinstance(job, _Stop):
                self._final_commit()
                return
            if isinstance(job, _Tick):
                self._tick(job)
                continue
            try:
                outcome = self._journal(job)
            except BaseException as exc:  # a bug: answer the publishers, then fail loudly
                outcome = BusError(f"events could not be made durable: {exc}")
                raise
            finally:
                # Room first, then the answers: a publisher told "durable" finds its bytes
                # no longer counted against the queue.
                self._q.done(job)
                for g in job:
                    if isinstance(outcome, int):
                        _done(g.future, outcome)
                    else:
                        _fail(g.future, outcome)

    def _journal(self, group: list[_Publish]) -> int | BusError:
        """Write a group: the journal seq it got, or the error its publishers get."""
        # The whole group is one journal row: one insert and one fsync for all of it.
        batch = b"\n".join(g.batch for g in group)
        try:
            (seq,) = self.store.append_journal([batch], self.clock())
        except OutagewatchError as exc:
            log.error("journal write failed: %s", exc)
            return BusError(f"events could not be made durable: {exc}")
        self.groups += 1
        self.batches += len(group)
        # One ingest for the whole group: the pipeline's cost per call is mostly fixed.
        try:
            self.engine.ingest(seq, batch.split(b"\n"), self.clock())
        except Exception as exc:  # durable already: it will be replayed on restart
            log.exception("ingest of journal batch %d failed", seq)
            return BusError(f"accepted but not yet counted: {exc}")
        return seq

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

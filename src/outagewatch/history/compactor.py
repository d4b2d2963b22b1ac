"""Running compaction: all at once (after `replay`), or in the background (`serve`, `worker`).

Each step is one short transaction of the store (`compact_step`); between steps the
background loop sleeps a little, so the writer lock goes to ingest commits in between.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from outagewatch.store.rollup import Retention

log = logging.getLogger("outagewatch.history")

STEP_BUDGET = 32  # raw hours and blocks per step: a step holds the writer for ~10-40 ms
STEP_PAUSE_S = 0.05  # between steps in the background: the writer is free for ingest
IDLE_S = 300.0  # between rounds once nothing is left (an hour completes every 60 minutes)


class Compactable(Protocol):
    def compact_step(self, now: float, retention: Retention, budget: int = ...) -> int: ...


def compact(store: Compactable, now: float, retention: Retention, budget: int = STEP_BUDGET) -> int:
    """Compact until nothing is left; the number of raw hours and blocks handled."""
    done = 0
    while n := store.compact_step(now, retention, budget):
        done += n
    return done


async def run_compactor(
    store: Compactable,
    retention: Retention,
    clock: Callable[[], float] = time.time,
    *,
    idle_s: float = IDLE_S,
    pause_s: float = STEP_PAUSE_S,
    budget: int = STEP_BUDGET,
) -> None:
    """Compact in the background forever (cancel the task to stop): steps in a thread,
    a pause between steps, a round every `idle_s` seconds."""
    import asyncio  # here: `replay` compacts without an event loop (and its 0.1 s import)

    while True:
        try:
            while await _step(store, clock(), retention, budget):
                await asyncio.sleep(pause_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("compaction failed (it is retried in the next round)")
        await asyncio.sleep(idle_s)


async def _step(store: Compactable, now: float, retention: Retention, budget: int) -> int:
    """One step in a thread; cancelled, it still lets the step's transaction finish before
    it gives up (so the store is never closed under it)."""
    import asyncio

    step = asyncio.ensure_future(asyncio.to_thread(store.compact_step, now, retention, budget))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await step
        raise

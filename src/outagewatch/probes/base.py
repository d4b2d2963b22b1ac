"""What the probe scheduler and the status-page poller share: a limit on concurrent
fetches, an HTTP client guarded against private targets (closed at `stop()` unless it was
given), and the tasks of their loops."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import httpx

from outagewatch.netguard import guarded_client
from outagewatch.probes.checks import Clock

Submit = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Watcher:
    """`start()` in the subclass launches its loops (`_launch`); `await stop()` cancels them
    and closes the client if it is the watcher's own."""

    def __init__(
        self,
        submit: Submit,
        concurrency: int,
        client: httpx.AsyncClient | None,
        guard: dict[str, Any],
        clock: Clock,
        rng: random.Random | None,
    ) -> None:
        """`guard`: the arguments of `guarded_client` for the watcher's own client (made
        when `client` is None)."""
        self.submit = submit
        self.clock = clock
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(concurrency)
        self._own_client = client is None
        self._client = client or guarded_client(**guard)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def _launch(self, loops: Iterable[tuple[str, Coroutine[Any, Any, None]]]) -> None:
        """Start a task per (name, loop), unless the loops already run (the coroutines of
        `loops` are then never made: pass a generator)."""
        if self._tasks:
            return
        for name, loop in loops:
            self._tasks.append(asyncio.create_task(loop, name=name))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._own_client:
            await self._client.aclose()

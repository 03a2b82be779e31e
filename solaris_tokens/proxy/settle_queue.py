"""Settles of finished calls, run in batches.

Inside a proxy ≈ 20 ms of LiteLLM's own work runs between two hook calls, so a settle run from its
success hook always starts with cold CPU caches, and cold it costs ≈ 5× its warm cost
(`bench/bench_hooks.py`, "cold"). Queued for a short window and run together, the settles of a
batch share that warm-up: the first runs cold, the others run the same code right after it, and
their commands leave in one write to Redis (the channel sends one loop turn's commands together).

The debit lands up to one window later; meanwhile the reservation keeps holding the estimate, so
a user can never spend more than the store admitted. A batch still waiting when the event loop
shuts down (`asyncio.run` cancels every task) is settled before its task ends; a settle cut off
mid-way is simply run again, since settles are idempotent by reservation id. A process killed
outright leaves its last window's reservations to their TTL, like the success events LiteLLM
itself drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("solaris_tokens.proxy")

Item = TypeVar("Item")


class SettleQueue(Generic[Item]):
    def __init__(self, settle: Callable[[Item], Awaitable[object]], *, window: float, limit: int) -> None:
        self._settle = settle
        self._window = window
        self._limit = limit
        self._items: list[Item] = []
        self._waiter: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Settles queued and not started yet."""
        return len(self._items)

    def put(self, item: Item) -> None:
        """Queue one settle; it runs when the window ends or the batch is full (call in the loop)."""
        self._items.append(item)
        if len(self._items) >= self._limit:
            self._start(self._take())
        elif self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_task(self._after_window())

    async def drain(self) -> None:
        """Run every queued settle now and wait for every batch in flight."""
        self._start(self._take())
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def aclose(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.cancel()
        await self.drain()

    # --- internals ----------------------------------------------------------------------------

    def _take(self) -> list[Item]:
        batch, self._items = self._items, []
        return batch

    async def _after_window(self) -> None:
        try:
            await asyncio.sleep(self._window)
        except asyncio.CancelledError:  # the loop is shutting down: settle what is queued first
            self._waiter = None
            await self.drain()
            raise
        self._waiter = None
        self._start(self._take())

    def _start(self, batch: list[Item]) -> None:
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[Item]) -> None:
        cancelled = False
        results: list[object]
        try:
            results = list(await asyncio.gather(*map(self._settle, batch), return_exceptions=True))
        except asyncio.CancelledError:
            cancelled = True
            results = [asyncio.CancelledError()] * len(batch)
        cut_off = [isinstance(result, asyncio.CancelledError) for result in results]
        again = [item for item, was_cut in zip(batch, cut_off, strict=True) if was_cut]
        if again:
            # Cut off by the loop's shutdown wherever they were: run them again (idempotent, so a
            # settle that had reached Redis counts once). asyncio.run cancels only once.
            results += await asyncio.gather(*map(self._settle, again), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):  # the settle function handles its own errors: a bug
                log.error("settle failed: %r", result, exc_info=result)
        if cancelled:
            raise asyncio.CancelledError

"""Moves ledger stream entries from Redis into SQL: batch insert, commit, then acknowledge.

Entries are deleted from the stream only after their rows are committed, so a database outage
loses nothing: entries wait (pending) and are written when it returns. Inserts skip rows that
already exist (unique reservation id / credit key / outbox key), so a replayed entry is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from solaris_tokens.clock import to_ms
from solaris_tokens.counters.redis import RedisCounterStore
from solaris_tokens.errors import LedgerUnavailable, StoreUnavailable
from solaris_tokens.ledger.repository import Ledger

log = logging.getLogger("solaris_tokens.flusher")


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LedgerFlusher:
    def __init__(
        self,
        store: RedisCounterStore,
        ledger: Ledger,
        *,
        batch_size: int = 1000,
        consumer: str | None = None,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.batch_size = batch_size
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms = claim_idle_ms

    async def flush_once(self) -> int:
        """Write one batch; returns how many entries were committed (0 when nothing is waiting)."""
        events = await self.store.read_events(self.consumer, self.batch_size, claim_idle_ms=self.claim_idle_ms)
        if not events:
            return 0
        duplicates = await asyncio.to_thread(self.ledger.write_events, events)
        if duplicates:
            undone = await self.store.revert_usage(duplicates, to_ms(self.ledger.clock()))
            log.warning("ledger refused %d duplicate usage entries; %d undone in Redis", len(duplicates), undone)
        await self.store.ack_events(events)
        return len(events)

    async def drain(self, max_batches: int = 10_000) -> int:
        """Flush until the streams are empty (or `max_batches` batches were written)."""
        total = 0
        for _ in range(max_batches):
            written = await self.flush_once()
            total += written
            if written == 0:
                break
        return total

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Flush forever (in the proxy or a worker) until `stop` is set; outages are logged and retried."""
        while not stop.is_set():
            try:
                await self.drain(max_batches=50)
            except (LedgerUnavailable, StoreUnavailable) as exc:
                log.warning("ledger flush postponed: %s", exc)
            except Exception:
                log.exception("ledger flush failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

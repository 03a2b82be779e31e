"""Requests refused because the counter store was down (F8), kept for later compensation (X4).

They are noted in memory at once (the request path never waits on the database, which may be
down too) and written to the ledger's `rejections` table by a background task, from a thread of
their own so a hanging database connection blocks nothing else. While the database is away they
wait in a bounded buffer (the oldest are dropped, and counted, if an outage outlasts it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from solaris_tokens.ledger.repository import Ledger

log = logging.getLogger("solaris_tokens.proxy")

_BATCH = 500


class RejectionReason(StrEnum):
    """The `rejections.reason` values the proxy writes."""

    STORE_UNAVAILABLE = "store_unavailable"  # Redis unreachable or too slow: answered 503
    FAIL_OPEN = "fail_open"  # same outage with fail_open on: admitted without a reservation


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    email: str
    reason: RejectionReason
    model: str
    estimate: int
    at: datetime


class RejectionRecorder:
    def __init__(self, ledger: Ledger, *, capacity: int = 50_000) -> None:
        self.ledger = ledger
        self._pending: deque[RejectedRequest] = deque(maxlen=capacity)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="solaris-rejections")
        self._wake: asyncio.Event | None = None
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, item: RejectedRequest) -> None:
        """Note a refused request; never blocks."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(item)
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> int:
        """Write what is buffered; returns how many rows were committed. Raises when the database fails."""
        total = 0
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            loop = asyncio.get_running_loop()
            done, error = await loop.run_in_executor(self._executor, self._write, batch)
            total += done
            self.written += done
            if error is not None:
                self._pending.extendleft(reversed(batch[done:]))
                raise error
        return total

    def _write(self, batch: list[RejectedRequest]) -> tuple[int, Exception | None]:
        for done, item in enumerate(batch):
            try:
                self.ledger.record_rejection(item.email, item.reason.value, item.model, item.estimate, at=item.at)
            except Exception as exc:
                return done, exc
        return len(batch), None

    async def run(self, stop: asyncio.Event, *, retry_seconds: float = 5.0) -> None:
        """Write rejections as they come until `stop` is set; database outages are retried."""
        self._wake = asyncio.Event()
        if self._pending:
            self._wake.set()
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            waking = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({stopping, waking}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            waking.cancel()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("could not record %d rejected requests yet: %s", len(self._pending), exc)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=retry_seconds)
                except TimeoutError:
                    self._wake.set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

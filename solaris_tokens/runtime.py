"""Wiring: builds the store, ledger, quota service and flusher from one Settings object."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from redis.asyncio import Redis
from sqlalchemy import Engine

from solaris_tokens.clock import Clock, utc_now
from solaris_tokens.counters.channel import RedisChannel
from solaris_tokens.counters.connect import async_client, redis_url
from solaris_tokens.counters.redis import RedisCounterStore
from solaris_tokens.keys import KeyBuilder
from solaris_tokens.ledger.database import make_engine, upgrade
from solaris_tokens.ledger.flusher import LedgerFlusher
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.quota import QuotaService
from solaris_tokens.settings import Settings

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    engine: Engine
    store: RedisCounterStore
    ledger: Ledger
    quota: QuotaService
    flusher: LedgerFlusher

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.redis.aclose()
        self.engine.dispose()


def build_runtime(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    engine: Engine | None = None,
    clock: Clock = utc_now,
    migrate: bool = True,
) -> Runtime:
    settings = settings or Settings()
    redis = redis or async_client(redis_url(settings), settings)
    if engine is None:
        engine = make_engine(settings.resolved_database_url)
        if migrate:
            upgrade(engine)
    keys = KeyBuilder(settings.key_prefix, settings.shards)
    timeout = settings.redis_timeout_seconds
    store = RedisCounterStore(
        redis,
        keys,
        timeout_seconds=timeout,
        reservation_retention_ms=settings.settled_id_retention_seconds * 1000,
        channel=RedisChannel.for_client(redis, timeout=timeout) if settings.redis_pipeline else None,
    )
    ledger = Ledger(engine, settings, clock)
    quota = QuotaService(settings, store, ledger, clock)
    flusher = LedgerFlusher(store, ledger, batch_size=settings.flush_batch_size)
    return Runtime(settings, redis, engine, store, ledger, quota, flusher)


@lru_cache(maxsize=8)
def shared_engine(url: str) -> Engine:
    """One migrated engine per database URL and process (CLI commands, Celery tasks)."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def run_sync(work: Callable[[Runtime], Awaitable[T]], settings: Settings | None = None, *, clock: Clock = utc_now) -> T:
    """Run async core work from synchronous code (CLI, Celery) with a runtime of its own event loop."""
    settings = settings or Settings()

    async def main() -> T:
        runtime = build_runtime(settings, engine=shared_engine(settings.resolved_database_url), clock=clock)
        try:
            return await work(runtime)
        finally:
            await runtime.store.aclose()
            await runtime.redis.aclose()

    return asyncio.run(main())

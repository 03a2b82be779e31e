"""End-to-end fixtures: the fake upstream, fresh databases, a test-side view of the proxy's stores."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from redis.asyncio import Redis
from sqlalchemy import Engine

from solaris_tokens.counters.connect import async_client
from solaris_tokens.ledger.database import make_engine
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings
from tests.e2e.upstream import FakeUpstream
from tests.support import REAL_POSTGRES_URL, count_rows, need_service, postgres_reachable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

T = TypeVar("T")


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@contextmanager
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database (the proxy migrates it), dropped afterwards."""
    ok, detail = postgres_reachable()
    need_service("PostgreSQL", ok, detail)
    name = f"solaris_e2e_{uuid.uuid4().hex[:10]}"
    admin = REAL_POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield REAL_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def solaris_env(settings: Settings) -> dict[str, str]:
    """The SOLARIS_* environment that gives the proxy process exactly `settings`' stores."""
    env = {
        "SOLARIS_KEY_PREFIX": settings.key_prefix,
        "SOLARIS_SHARDS": str(settings.shards),
        "SOLARIS_STATE_DIR": str(settings.state_dir),
        "SOLARIS_SQLITE_PATH": str(settings.sqlite_path),
        "SOLARIS_FLUSH_INTERVAL_SECONDS": str(settings.flush_interval_seconds),
        "SOLARIS_TRUSTED_KEY_ALIASES": ",".join(settings.trusted_key_aliases),
        "SOLARIS_PUBLIC_BASE_URL": settings.public_base_url,
    }
    if settings.redis_url:
        env["SOLARIS_REDIS_URL"] = settings.redis_url
    else:  # as scripts/serve starts the embedded mode
        env["SOLARIS_REDIS_TIMEOUT_SECONDS"] = "2"
        env["SOLARIS_REDIS_MAX_CONNECTIONS"] = "32"
    if settings.database_url:
        env["SOLARIS_DATABASE_URL"] = settings.database_url
    return env


def proxy_redis(settings: Settings) -> Redis:
    """A client to the proxy's Redis: the configured one, or its embedded stand-in (address in state_dir)."""
    url = settings.redis_url or (Path(settings.state_dir) / "redis.url").read_text().strip()
    return async_client(url, settings)


def observer(settings: Settings, engine: Engine) -> Runtime:
    """A runtime over the same stores as the proxy, to read (and set up) what the tests check."""
    return build_runtime(settings, redis=proxy_redis(settings), engine=engine, migrate=False)


def ledger_engine(settings: Settings) -> Engine:
    return make_engine(settings.resolved_database_url)


async def eventually(check: Callable[[], Awaitable[T]], *, until: Callable[[T], bool], deadline: float = 20.0) -> T:
    """Poll `check` until `until(value)`: the proxy settles and flushes after answering, in the background."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    value = await check()
    while not until(value):
        if loop.time() > end:
            raise AssertionError(f"condition not reached; last value: {value!r}")
        await asyncio.sleep(0.05)
        value = await check()
    return value


async def rows_eventually(engine: Engine, expected: int, model: type, *where: object) -> None:
    """Wait until the ledger holds `expected` matching rows (the flusher writes in the background)."""

    async def current() -> int:
        return await asyncio.to_thread(count_rows, engine, model, *where)

    await eventually(current, until=lambda n: n == expected)

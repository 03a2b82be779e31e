"""Fixtures: every storage-touching test runs on the embedded layer (fakeredis + SQLite) and on the
real servers (Redis + PostgreSQL of this machine), selected by the `backend` parameter."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import psycopg
import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import Engine, text

from solaris_tokens.counters.connect import async_client
from solaris_tokens.ledger.database import make_engine, upgrade
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings
from tests.support import (
    REAL_POSTGRES_URL,
    REAL_REDIS_URL,
    FakeClock,
    need_service,
    postgres_reachable,
    redis_reachable,
)

# Importing litellm must never reach for the internet (its model cost map) in any test.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BACKENDS = ["embedded", "real"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def real_url() -> str:
    """The real Redis server's URL (skipped without it on a developer machine, failed in CI)."""
    ok, detail = redis_reachable()
    need_service("Redis", ok, detail)
    return REAL_REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head; dropped at the end."""
    ok, detail = postgres_reachable()
    need_service("PostgreSQL", ok, detail)
    name = f"solaris_t_{uuid.uuid4().hex[:10]}"
    admin = REAL_POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = REAL_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables)
        if names:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        key_prefix=prefix,
        shards=4,
        sqlite_path=tmp_path / "ledger.db",
        state_dir=tmp_path / "state",
        redis_url=REAL_REDIS_URL if backend == "real" else None,
    )


@pytest.fixture
async def redis_client(backend: str, settings: Settings) -> AsyncIterator[Redis]:
    if backend == "embedded":
        client: Redis = fakeredis.FakeAsyncRedis(
            server=fakeredis.FakeServer(),
            decode_responses=True,
            connection_pool_class=BlockingConnectionPool,
            max_connections=64,
        )
        yield client
        await client.aclose()
        return
    ok, detail = redis_reachable()
    need_service("Redis", ok, detail)
    client = async_client(REAL_REDIS_URL, settings)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def engine(backend: str, settings: Settings, request: pytest.FixtureRequest) -> Iterator[Engine]:
    if backend == "embedded":
        eng = make_engine(settings.resolved_database_url)
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    eng = make_engine(url)
    _truncate_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
async def runtime(settings: Settings, redis_client: Redis, engine: Engine, clock: FakeClock) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings, redis=redis_client, engine=engine, clock=clock)
    rt.flusher.claim_idle_ms = 0
    yield rt

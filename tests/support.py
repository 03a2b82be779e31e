"""Shared test helpers: an injectable clock, real-service probes, ledger and Redis look-ups."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from solaris_tokens.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REAL_REDIS_URL = os.environ.get("SOLARIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REAL_POSTGRES_URL = os.environ.get("SOLARIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class FakeClock:
    """A settable UTC clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def real_redis_settings(directory: Path, prefix: str, **changes: Any) -> Settings:
    """Settings on the real Redis under a key prefix of their own (`prefix` + a random suffix),
    the embedded ledger and state files under `directory`."""
    return Settings(
        redis_url=REAL_REDIS_URL,
        key_prefix=f"{prefix}{uuid.uuid4().hex[:8]}",
        sqlite_path=directory / "ledger.db",
        state_dir=directory / "state",
        **changes,
    )


def need_service(name: str, reachable: bool, detail: str = "") -> None:
    """Skip on a developer machine without the service; fail in CI, where it must be there."""
    if reachable:
        return
    message = f"{name} is not reachable{': ' + detail if detail else ''}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: real-service tests must run)")
    pytest.skip(message)


def count_rows(engine: Engine, model: type, *where: object) -> int:
    """How many rows of `model` in the ledger match `where`."""
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model).where(*where)).one())  # type: ignore[arg-type]


def drop_redis_keys(prefix: str, url: str = REAL_REDIS_URL) -> None:
    """Delete every key of one test's (or benchmark's) key prefix on the real Redis."""
    import redis

    client = redis.Redis.from_url(url)
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if names:
        client.delete(*names)
    client.close()


def redis_reachable(url: str = REAL_REDIS_URL) -> tuple[bool, str]:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True, ""
    except Exception as exc:
        return False, str(exc)


def postgres_reachable(url: str = REAL_POSTGRES_URL) -> tuple[bool, str]:
    import psycopg

    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True, ""
    except Exception as exc:
        return False, str(exc)

"""Fixtures for the admin CLI tests.

CLI commands call `run_sync`, which builds its own runtime (Redis client, engine, event loop) from
settings, so these tests are synchronous and point the settings at backends a second runtime can
reach: the real Redis + the session's PostgreSQL database, or the embedded stand-in (a fakeredis
TCP server) + the test's SQLite file. Setup and assertions that need the core go through
`core(work)`, which runs async work the same way the CLI does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from solaris_tokens.cli import common
from solaris_tokens.cli.app import app
from solaris_tokens.counters import connect
from solaris_tokens.domain import CallDetails, Decision, Usage
from solaris_tokens.ledger.models import CreditEntry, OutboxMessage
from solaris_tokens.runtime import Runtime, run_sync
from solaris_tokens.settings import Settings
from tests.support import REAL_REDIS_URL, FakeClock, need_service, redis_reachable

T = TypeVar("T")

ADMINS = ["admin@solaris.test", "ops@solaris.test"]


@pytest.fixture
def cli_settings(
    backend: str, settings: Settings, engine: Engine, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    settings.admin_emails = list(ADMINS)
    if backend == "real":
        ok, detail = redis_reachable()
        need_service("Redis", ok, detail)
        settings.database_url = request.getfixturevalue("postgres_url")
    else:
        settings.redis_url = connect.embedded_url(settings)
    yield settings
    if backend == "real":
        client = redis.Redis.from_url(REAL_REDIS_URL)
        keys = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@dataclass
class Cli:
    runner: CliRunner

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(app, list(args), env={"COLUMNS": "200"})
        assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(cli_settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(common, "settings_factory", lambda: cli_settings)
    monkeypatch.setattr(common, "clock", clock)
    return Cli(CliRunner())


Core = Callable[[Callable[[Runtime], Awaitable[Any]]], Any]


@pytest.fixture
def core(cli_settings: Settings, clock: FakeClock) -> Core:
    """Run async core work on a runtime of its own, as a CLI command does."""

    def run(work: Callable[[Runtime], Awaitable[T]]) -> T:
        return run_sync(work, cli_settings, clock=clock)

    return run


@dataclass
class Helpers:
    core: Core
    engine: Engine

    def use(self, email: str, prompt: int, completion: int, model: str = "gpt-4o", estimate: int = 100) -> None:
        """One admitted request that really used prompt + completion tokens."""

        async def work(rt: Runtime) -> None:
            decision = await rt.quota.authorize(email, estimate)
            assert decision.admitted, decision
            await rt.quota.settle(email, decision.reservation_id, Usage(prompt, completion, CallDetails(model=model)))
            await rt.flusher.drain()

        self.core(work)

    def authorize(self, email: str, estimate: int = 100) -> Decision:
        async def work(rt: Runtime) -> Decision:
            decision = await rt.quota.authorize(email, estimate)
            if decision.admitted:
                await rt.quota.release(email, decision.reservation_id)
            return decision

        result: Decision = self.core(work)
        return result

    def outbox(self, kind: str | None = None) -> list[OutboxMessage]:
        with Session(self.engine) as s:
            stmt = select(OutboxMessage).order_by(col(OutboxMessage.id))
            if kind:
                stmt = stmt.where(OutboxMessage.kind == kind)
            return list(s.exec(stmt).all())

    def payload(self, row: OutboxMessage) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(row.payload)
        return data

    def credits(self) -> list[CreditEntry]:
        def drain(rt: Runtime) -> Awaitable[int]:
            return rt.flusher.drain()

        self.core(drain)
        with Session(self.engine) as s:
            return list(s.exec(select(CreditEntry).order_by(col(CreditEntry.id))).all())


@pytest.fixture
def helpers(core: Core, engine: Engine) -> Helpers:
    return Helpers(core, engine)

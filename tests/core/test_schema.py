"""The migrations build exactly the schema the models declare, and the ledger's invariants live in the database."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel

import solaris_tokens.ledger.schema  # noqa: F401  (registers every table)
from solaris_tokens.domain import CreditKind, Usage
from solaris_tokens.ledger.database import make_engine, upgrade
from solaris_tokens.runtime import Runtime


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE usage_entries SET prompt_tokens = 0",
        "DELETE FROM usage_entries",
        "UPDATE credit_entries SET amount = 1",
        "DELETE FROM audit_log",
    ],
)
async def test_ledger_tables_are_append_only(runtime: Runtime, statement: str) -> None:
    d = await runtime.quota.authorize("ana@x.com", 10)
    await runtime.quota.settle("ana@x.com", d.reservation_id, Usage(5, 5))
    await runtime.quota.credit("ana@x.com", 5, CreditKind.BONUS, key="b1", actor="t")
    await runtime.flusher.drain()
    with pytest.raises(DatabaseError, match="append-only"), runtime.engine.begin() as conn:
        conn.execute(text(statement))


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO credit_entries (user_id, kind, amount, idempotency_key, actor, reason, created_at)"
        " VALUES (1, 'bonus', 0, 'zero', 'a', '', CURRENT_TIMESTAMP)",
        "INSERT INTO credit_entries (user_id, kind, amount, idempotency_key, actor, reason, created_at)"
        " VALUES (1, 'gift', 10, 'kind', 'a', '', CURRENT_TIMESTAMP)",
        "INSERT INTO usage_entries (reservation_id, user_id, call_id, model, prompt_tokens, completion_tokens,"
        " monthly_tokens, additional_tokens, period, outcome, settled_at)"
        " VALUES ('r-split', 1, '', '', 10, 10, 5, 5, '2026-11', 'settled', CURRENT_TIMESTAMP)",
        "INSERT INTO usage_entries (reservation_id, user_id, call_id, model, prompt_tokens, completion_tokens,"
        " monthly_tokens, additional_tokens, period, outcome, settled_at)"
        " VALUES ('r-neg', 1, '', '', -10, 10, 0, 0, '2026-11', 'settled', CURRENT_TIMESTAMP)",
    ],
)
async def test_database_refuses_invalid_ledger_rows(runtime: Runtime, statement: str) -> None:
    await runtime.quota.ensure_loaded("ana@x.com")
    with pytest.raises(DatabaseError), runtime.engine.begin() as conn:
        conn.execute(text(statement))


def test_migrations_of_two_ledgers_at_once_in_one_process_both_complete(tmp_path: Path) -> None:
    """Alembic keeps the running migration in module globals: two runtimes built at the same time
    in threads of one process (the proxy builds its runtime in a thread) must not break each other."""
    engines = [make_engine(f"sqlite:///{tmp_path / f'ledger{i}.db'}") for i in range(4)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        start.wait()
        try:
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for engine in engines:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
        engine.dispose()

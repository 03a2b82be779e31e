"""Alembic environment: runs against the engine solaris-tokens hands over (online mode only)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import solaris_tokens.ledger.schema  # noqa: F401  (registers every table)

config = context.config
target_metadata = SQLModel.metadata

engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()

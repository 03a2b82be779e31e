"""Imports every module that defines tables, so SQLModel.metadata (and Alembic) sees them all."""

from solaris_tokens.ledger import models  # noqa: F401

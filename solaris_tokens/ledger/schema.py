"""Imports every module that defines tables, so SQLModel.metadata (and Alembic) sees them all."""

import solaris_tokens.ledger.purchase_models
import solaris_tokens.ledger.renewal_models  # noqa: F401
from solaris_tokens.ledger import models  # noqa: F401

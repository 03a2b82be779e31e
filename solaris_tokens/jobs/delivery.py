"""Email task: deliver the due outbox rows. The logic is `notify.delivery.OutboxDelivery`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from solaris_tokens.errors import LedgerUnavailable
from solaris_tokens.jobs.celery_app import app
from solaris_tokens.notify.delivery import OutboxDelivery
from solaris_tokens.runtime import shared_engine
from solaris_tokens.settings import Settings


@lru_cache(maxsize=1)
def _delivery() -> OutboxDelivery:
    """One per worker process (built at the first run, after the fork)."""
    settings = Settings()
    return OutboxDelivery.from_settings(settings, shared_engine(settings.resolved_database_url))


@app.task(  # type: ignore[untyped-decorator]
    name="solaris.email.deliver",
    ignore_result=True,
    autoretry_for=(LedgerUnavailable, OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
)
def deliver_emails() -> dict[str, Any]:
    """Safe to run concurrently and twice: each row is claimed by one run before it is sent."""
    report = _delivery().run()
    return {"sent": report.sent, "retried": report.retried, "failed": report.failed}

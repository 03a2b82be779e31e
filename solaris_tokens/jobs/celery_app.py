"""The Celery application: broker from settings, UTC beat schedule, thin task modules.

Tasks translate and delegate to the core; they must be safe to run twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from solaris_tokens.counters.connect import redis_url
from solaris_tokens.settings import Settings

TASK_MODULES = ["solaris_tokens.jobs.ledger"]


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    broker = settings.celery_broker_url or redis_url(settings)
    app = Celery("solaris_tokens", broker=broker, backend=settings.celery_result_backend, include=TASK_MODULES)
    schedule: dict[str, dict[str, Any]] = {
        "flush-ledger": {"task": "solaris.ledger.flush", "schedule": timedelta(seconds=5)},
    }
    app.conf.update(
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        beat_schedule=schedule,
    )
    return app


app = make_app()

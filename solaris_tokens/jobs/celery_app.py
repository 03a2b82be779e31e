"""The Celery application: broker from settings, UTC beat schedule, thin task modules.

Tasks translate and delegate to the core; they must be safe to run twice.

Importing this module has no side effect beyond reading the settings: nothing connects and no
embedded server starts until a task runs. The broker is, in order: `SOLARIS_CELERY_BROKER_URL`;
else `SOLARIS_REDIS_URL` (Redis, the production choice); else, in embedded mode (neither set), a
SQLite file next to the ledger's through kombu's SQLAlchemy transport, so `celery -A celery_worker
worker -B` works on a laptop with nothing installed. The embedded Redis stand-in is not used as
the broker: it lives only as long as the process that started it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab

from solaris_tokens.settings import Settings

TASK_MODULES = ["solaris_tokens.jobs.ledger", "solaris_tokens.jobs.delivery", "solaris_tokens.jobs.renewal"]
EMBEDDED_BROKER_FILE = "solaris-celery-broker.sqlite"


def embedded_broker_path(settings: Settings) -> Path:
    return (settings.sqlite_path.parent / EMBEDDED_BROKER_FILE).absolute()


def broker_url(settings: Settings) -> str:
    if settings.celery_broker_url:
        return settings.celery_broker_url
    if settings.redis_url:
        return settings.redis_url
    return f"sqla+sqlite:///{embedded_broker_path(settings)}"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks (UTC). Each expires after one period: a stopped worker finds no backlog."""
    flush = timedelta(seconds=5)
    deliver = timedelta(seconds=settings.email_delivery_interval_seconds)
    return {
        "flush-ledger": {
            "task": "solaris.ledger.flush",
            "schedule": flush,
            "options": {"expires": flush.total_seconds()},
        },
        "deliver-emails": {
            "task": "solaris.email.deliver",
            "schedule": deliver,
            "options": {"expires": deliver.total_seconds()},
        },
        # Monthly (R1–R3): no expiry, a late run is still due; the jobs are idempotent.
        "monthly-renewal": {"task": "solaris.renewal.run", "schedule": crontab(minute=0, hour=0, day_of_month=1)},
        "monthly-report": {"task": "solaris.report.monthly", "schedule": crontab(minute=30, hour=0, day_of_month=1)},
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery(
        "solaris_tokens",
        broker=broker_url(settings),
        backend=settings.celery_result_backend,
        include=TASK_MODULES,
    )
    app.conf.update(
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        beat_schedule=beat_schedule(settings),
    )
    return app


app = make_app()

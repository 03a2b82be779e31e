"""Entry point for the workers: `celery -A celery_worker worker -B --loglevel=info`.

Broker and schedule: see solaris_tokens/jobs/celery_app.py and docs/alerts.md.
"""

from solaris_tokens.jobs.celery_app import app

__all__ = ["app"]

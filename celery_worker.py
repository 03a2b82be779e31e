"""Entry point for the workers: `celery -A celery_worker worker -B --loglevel=info`."""

from solaris_tokens.jobs.celery_app import app

__all__ = ["app"]

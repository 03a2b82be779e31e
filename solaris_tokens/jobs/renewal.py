"""Monthly tasks (SPEC R1–R3): the renewal at 00:00 UTC on the 1st, then the admins' report.

Thin: they pick the month and delegate to `solaris_tokens.renewal` / `solaris_tokens.report`, which
are idempotent, so a second beat, a redelivered message or a late run changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

from celery import Task

from solaris_tokens.clock import utc_now
from solaris_tokens.errors import LedgerUnavailable, StoreUnavailable
from solaris_tokens.jobs.celery_app import app
from solaris_tokens.renewal import RenewalNotDue, period_to_renew, renew
from solaris_tokens.report import send_monthly_report
from solaris_tokens.runtime import run_sync

_OUTAGES = (LedgerUnavailable, StoreUnavailable)
_MAX_WAIT_SECONDS = 3600  # waits longer than the grace period are a wrong month, not an early beat
_RETRY = {"autoretry_for": _OUTAGES, "retry_backoff": 30, "retry_backoff_max": 600, "max_retries": 100}


@app.task(name="solaris.renewal.run", bind=True, ignore_result=True, **_RETRY)  # type: ignore[untyped-decorator]
def run_renewal(self: Task, month: str | None = None) -> dict[str, Any]:
    """Renew the month that ended (or `month`); waits out the grace period after midnight by retrying."""
    month = month or period_to_renew(utc_now()).name
    try:
        result = run_sync(lambda runtime: renew(runtime, month))
    except RenewalNotDue as exc:
        wait = max(1, math.ceil((exc.due_at - utc_now()).total_seconds()))
        if wait > _MAX_WAIT_SECONDS:
            raise
        raise self.retry(exc=exc, countdown=wait, kwargs={"month": month}) from exc
    return result.as_dict()


@app.task(name="solaris.report.monthly", ignore_result=True, **_RETRY)  # type: ignore[untyped-decorator]
def send_report(month: str | None = None) -> dict[str, Any]:
    """Email the month's report to the admins (once per admin and month)."""
    report, emailed = run_sync(lambda runtime: send_monthly_report(runtime, month))
    return {"period": report.period, "emailed": emailed, "tokens": report.totals.tokens}

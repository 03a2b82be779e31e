"""Ledger tasks: drain the Redis ledger streams into SQL (the proxy does it too; both are safe)."""

from __future__ import annotations

from solaris_tokens.jobs.celery_app import app
from solaris_tokens.runtime import Runtime, run_sync


async def _drain(runtime: Runtime) -> int:
    return await runtime.flusher.drain()


@app.task(name="solaris.ledger.flush", ignore_result=True)  # type: ignore[untyped-decorator]
def flush_ledger() -> int:
    return run_sync(_drain)

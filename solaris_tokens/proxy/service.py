"""What the hooks need, built once per proxy process inside its event loop.

Building touches disk and network (the ledger's migrations, the embedded Redis stand-in when no
SOLARIS_REDIS_URL is set), so it runs in a thread; then two background tasks start: the ledger
flusher (Redis streams → SQL) and the writer of store-down rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from solaris_tokens import estimate
from solaris_tokens.notify.delivery import OutboxDelivery
from solaris_tokens.proxy.gate import QuotaGate
from solaris_tokens.proxy.rejections import RejectionRecorder
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings

log = logging.getLogger("solaris_tokens.proxy")


async def warm_redis(runtime: Runtime, connections: int) -> int:
    """Open `connections` pooled connections now (concurrent PINGs each take one), best effort.

    A connection costs a few round trips to set up; a cold pool hit by a burst of requests spends
    the per-operation deadline connecting and answers 503 under load. Returns how many answered.
    """
    if connections <= 0:
        return 0

    async def ping() -> bool:
        try:
            return bool(await asyncio.wait_for(runtime.redis.ping(), timeout=5))
        except Exception:
            return False

    results = await asyncio.gather(*(ping() for _ in range(connections)))
    return sum(results)


def _build(settings: Settings) -> Runtime:
    try:
        return build_runtime(settings)
    except Exception as exc:
        # The ledger is down at start-up: requests of users already in Redis can still be served,
        # and the flusher writes their usage once it is back. `solaris-tokens db upgrade` migrates.
        log.warning("ledger not reachable at start-up (%r); starting without migrating it", exc)
        return build_runtime(settings, migrate=False)


async def deliver_emails(runtime: Runtime, stop: asyncio.Event) -> None:
    """Deliver due outbox emails from the proxy (embedded mode: no Celery worker is running).

    The same delivery the `solaris.email.deliver` task runs, in a thread, every
    `email_delivery_interval_seconds`; claims make it safe next to workers too.
    """
    delivery = OutboxDelivery.from_settings(runtime.settings, runtime.engine, clock=runtime.ledger.clock)
    interval = runtime.settings.email_delivery_interval_seconds
    while not stop.is_set():
        try:
            await asyncio.to_thread(delivery.run)
        except Exception:
            log.exception("email delivery failed; retrying in %.0f s", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


class ProxyService:
    def __init__(self, runtime: Runtime, gate: QuotaGate) -> None:
        self.runtime = runtime
        self.gate = gate
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls, settings: Settings | None = None, *, runtime: Runtime | None = None, background: bool = True
    ) -> ProxyService:
        """Build (or adopt) a runtime and start the background work in the running loop."""
        if runtime is None:
            settings = settings or Settings()
            runtime = await asyncio.to_thread(_build, settings)
        await asyncio.to_thread(estimate.warm_up)
        if runtime.settings.redis_url:  # the embedded stand-in keeps a polling thread per connection
            warm = min(runtime.settings.redis_warm_connections, runtime.settings.redis_max_connections)
            await warm_redis(runtime, warm)
        # The store's first call loads its scripts: here, not under the first request's deadline
        # (best effort: a Redis down at start-up is retried by the first request).
        await runtime.store.ping()
        gate = QuotaGate(runtime, recorder=RejectionRecorder(runtime.ledger))
        service = cls(runtime, gate)
        if background:
            service.tasks.append(asyncio.create_task(gate.recorder.run(service.stop), name="solaris-rejections"))
            if runtime.settings.proxy_flush_ledger:
                interval = runtime.settings.flush_interval_seconds
                flusher = runtime.flusher.run(interval, service.stop)
                service.tasks.append(asyncio.create_task(flusher, name="solaris-ledger-flusher"))
            if runtime.settings.proxy_deliver_emails:
                mailer = deliver_emails(runtime, service.stop)
                service.tasks.append(asyncio.create_task(mailer, name="solaris-email-delivery"))
        log.info(
            "solaris-tokens ready (redis: %s, ledger: %s)",
            "configured" if runtime.settings.redis_url else "embedded",
            runtime.engine.url.render_as_string(hide_password=True),
        )
        return service

    async def aclose(self, *, close_runtime: bool = True) -> None:
        """Stop the background tasks (writing what is buffered first) and release connections."""
        await self.gate.drain()  # before the flusher stops: it writes these settles to the ledger
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        await self.gate.aclose()
        with contextlib.suppress(Exception):
            await self.gate.recorder.flush()
        self.gate.recorder.close()
        if close_runtime:
            await self.runtime.aclose()

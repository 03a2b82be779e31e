"""Durability and recovery (SPEC X3, X5): the ledger outage, lost Redis data, two processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, func, select

from solaris_tokens.domain import AlertKind, CallDetails, CreditKind, Usage, Verdict
from solaris_tokens.errors import LedgerUnavailable
from solaris_tokens.ledger.flusher import LedgerFlusher
from solaris_tokens.ledger.models import CreditEntry, UsageEntry
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.runtime import Runtime
from tests.support import REAL_REDIS_URL, need_service, redis_reachable

MARIA = "maria.silva@x.com"


async def _traffic(runtime: Runtime, emails: list[str], rounds: int) -> None:
    for i in range(rounds):
        for email in emails:
            d = await runtime.quota.authorize(email, 100)
            assert d.admitted
            await runtime.quota.settle(
                email, d.reservation_id, Usage(40 + i, 7, CallDetails(model="m", call_id=f"c{i}"))
            )


async def test_ledger_outage_loses_nothing_and_writes_each_row_once(runtime: Runtime) -> None:
    emails = [f"user{i}@x.com" for i in range(5)]
    await _traffic(runtime, emails, 2)
    await runtime.flusher.drain()

    # The ledger becomes unreachable while requests keep settling.
    down = Ledger(create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none"), runtime.settings)
    broken = LedgerFlusher(runtime.store, down, consumer=runtime.flusher.consumer, claim_idle_ms=0)
    await _traffic(runtime, emails, 3)
    with pytest.raises(LedgerUnavailable):
        await broken.flush_once()
    await _traffic(runtime, emails, 1)
    with pytest.raises(LedgerUnavailable):
        await broken.drain()

    # It returns: every entry is written exactly once, including the ones a failed batch had taken.
    written = await runtime.flusher.drain()
    assert written == 5 * 4
    assert await runtime.flusher.drain() == 0
    with Session(runtime.engine) as s:
        rows = s.exec(select(UsageEntry.reservation_id)).all()
    assert len(rows) == len(set(rows)) == 5 * 6
    for email in emails:
        assert (await runtime.quota.reconcile(email)).zero


async def test_redis_losing_its_data_rebuilds_identical_counters(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 10_000, actor="test")
    await runtime.quota.credit(MARIA, 2_000, CreditKind.PURCHASE, key="order-7", actor="admin")
    for usage in (Usage(6000, 2000), Usage(1500, 1000)):
        d = await runtime.quota.authorize(MARIA, 100)
        await runtime.quota.settle(MARIA, d.reservation_id, usage)
    before = await runtime.quota.counters(MARIA)
    assert (before.used, before.additional, before.requests) == (10_000, 1_500, 2)
    assert before.alerts_fired  # 80% and 95% were crossed
    await runtime.flusher.drain()

    await runtime.store.forget_user(MARIA)  # Redis restarted without persistence
    assert await runtime.store.counters(MARIA, "2026-11") is None

    # The next decision rebuilds from the ledger before deciding: no spent token comes back.
    d = await runtime.quota.authorize(MARIA, 1_501)
    assert d.verdict is Verdict.EXHAUSTED
    after = await runtime.quota.counters(MARIA)
    assert (after.used, after.additional, after.requests, after.limit) == (10_000, 1_500, 2, 10_000)
    assert set(after.alerts_fired) == {*before.alerts_fired, AlertKind.BLOCKED}  # none re-armed
    assert (await runtime.quota.reconcile(MARIA)).zero
    # The credit key is remembered too: replaying the purchase does not credit again.
    again = await runtime.quota.credit(MARIA, 2_000, CreditKind.PURCHASE, key="order-7", actor="admin")
    assert again.additional == 1_500


async def test_rebuild_sets_never_adds_and_counts_undrained_entries(runtime: Runtime) -> None:
    d = await runtime.quota.authorize(MARIA, 100)
    await runtime.quota.settle(MARIA, d.reservation_id, Usage(70, 30))
    await runtime.flusher.drain()
    d = await runtime.quota.authorize(MARIA, 100)
    await runtime.quota.settle(MARIA, d.reservation_id, Usage(20, 5))  # still in the stream
    for _ in range(3):  # rebuilding many times (say, one per replica) never multiplies anything
        await runtime.quota.rebuild(MARIA)
    c = await runtime.quota.counters(MARIA)
    assert (c.used, c.requests) == (125, 2)
    assert (await runtime.quota.reconcile(MARIA)).zero


async def test_reconcile_reports_drift_and_rebuild_fixes_it(runtime: Runtime) -> None:
    d = await runtime.quota.authorize(MARIA, 100)
    await runtime.quota.settle(MARIA, d.reservation_id, Usage(70, 30))
    await runtime.flusher.drain()
    period_key = runtime.store.keys.user(MARIA).period("2026-11")
    await runtime.redis.hincrby(period_key, "used", 55)  # someone edited Redis by hand
    drift = await runtime.quota.reconcile(MARIA)
    assert (drift.used, drift.additional, drift.zero) == (55, 0, False)
    await runtime.quota.rebuild(MARIA)
    assert (await runtime.quota.reconcile(MARIA)).zero
    assert (await runtime.quota.counters(MARIA)).used == 100


async def test_redis_unreachable_raises_store_unavailable_fast(runtime: Runtime) -> None:
    from solaris_tokens.counters.connect import async_client
    from solaris_tokens.counters.redis import RedisCounterStore
    from solaris_tokens.errors import StoreUnavailable
    from solaris_tokens.quota import QuotaService

    dead = async_client("redis://127.0.0.1:9/0", runtime.settings)
    store = RedisCounterStore(dead, runtime.store.keys, timeout_seconds=0.2)
    quota = QuotaService(runtime.settings, store, runtime.ledger, runtime.quota.clock)
    with pytest.raises(StoreUnavailable):
        await quota.authorize(MARIA, 10)
    await dead.aclose()


_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from solaris_tokens.runtime import build_runtime
    from solaris_tokens.settings import Settings
    from solaris_tokens.ledger.database import make_engine

    async def main():
        settings = Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2], shards=4)
        rt = build_runtime(settings, engine=make_engine(sys.argv[3]), migrate=False)
        rt.store.timeout_seconds = 60
        decisions = await asyncio.gather(*(rt.quota.authorize(sys.argv[4], 100) for _ in range(500)))
        print(json.dumps(sum(d.admitted for d in decisions)))
        await rt.aclose()

    asyncio.run(main())
    """
)


def test_two_processes_sharing_one_redis_admit_exactly_what_fits(postgres_url: str) -> None:
    ok, detail = redis_reachable()
    need_service("Redis", ok, detail)
    from solaris_tokens.ledger.database import make_engine
    from solaris_tokens.runtime import build_runtime
    from solaris_tokens.settings import Settings

    prefix = f"t{uuid.uuid4().hex[:8]}"
    email = f"{prefix}@x.com"
    settings = Settings(redis_url=REAL_REDIS_URL, key_prefix=prefix, shards=4)

    async def setup() -> None:
        rt = build_runtime(settings, engine=make_engine(postgres_url), migrate=False)
        await rt.quota.ensure_loaded(email)
        await rt.quota.set_limit(email, 123 * 100, actor="test")
        await rt.aclose()

    asyncio.run(setup())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, REAL_REDIS_URL, prefix, postgres_url, email],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    admitted = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(admitted) == 123

    async def cleanup() -> None:
        rt = build_runtime(settings, engine=make_engine(postgres_url), migrate=False)
        keys = [k async for k in rt.redis.scan_iter(match=f"{prefix}:*")]
        await rt.redis.delete(*keys)
        await rt.aclose()

    asyncio.run(cleanup())


async def test_credit_rows_reach_the_ledger_with_actor_and_reason(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.credit(MARIA, 777, CreditKind.COMPENSATION, key="inc-1", actor="ana", reason="outage")
    await runtime.flusher.drain()
    with Session(runtime.engine) as s:
        row = s.exec(select(CreditEntry)).one()
        total = s.exec(select(func.count()).select_from(CreditEntry)).one()
    assert (row.amount, row.kind, row.actor, row.reason, total) == (777, "compensation", "ana", "outage", 1)

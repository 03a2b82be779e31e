"""The quota core's worked examples (SPEC F2, F4, F6, F7, P1, R1), on both backends."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from solaris_tokens.domain import CallDetails, CreditKind, CreditOutcome, ReleaseOutcome, SettleOutcome, Usage, Verdict
from solaris_tokens.errors import InvalidInput, UnknownUser
from solaris_tokens.ledger.models import AuditEntry, CreditEntry, UsageEntry, User
from solaris_tokens.runtime import Runtime
from tests.support import FakeClock, count_rows

MARIA = "maria.silva@x.com"


async def test_first_request_creates_user_and_debits_450(runtime: Runtime) -> None:
    decision = await runtime.quota.authorize(MARIA, 500)
    assert decision.verdict is Verdict.ADMITTED
    assert decision.snapshot.limit == 1_000_000
    settlement = await runtime.quota.settle(
        MARIA, decision.reservation_id, Usage(300, 150, CallDetails(model="gpt-4o"))
    )
    assert settlement.outcome is SettleOutcome.SETTLED
    assert (settlement.monthly_tokens, settlement.additional_tokens) == (450, 0)
    await runtime.flusher.drain()

    account = await runtime.quota.account(MARIA)
    assert account.available == 999_550
    assert (account.name, account.plan, account.status.value) == ("Maria Silva", "basic", "active")
    assert count_rows(runtime.engine, UsageEntry) == 1
    assert count_rows(runtime.engine, AuditEntry, AuditEntry.action == "user.created") == 1


async def test_concurrent_first_requests_create_exactly_one_user(runtime: Runtime) -> None:
    decisions = await asyncio.gather(*(runtime.quota.authorize("new.user@x.com", 10) for _ in range(50)))
    assert all(d.admitted for d in decisions)
    assert count_rows(runtime.engine, User) == 1
    assert count_rows(runtime.engine, AuditEntry, AuditEntry.action == "user.created") == 1


async def test_thousand_concurrent_reserves_admit_exactly_what_fits(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 37 * 100, actor="test")
    # 1,000 calls queue on one pool, or one pipelined connection they all wait for: the deadline is
    # not under test here (a slow machine took over 0.5 s to start them all).
    runtime.store.timeout_seconds = 60
    if runtime.store.channel is not None:
        runtime.store.channel.timeout = 60
    decisions = await asyncio.gather(*(runtime.quota.authorize(MARIA, 100) for _ in range(1000)))
    admitted = [d for d in decisions if d.admitted]
    assert len(admitted) == 37
    assert {d.verdict for d in decisions} == {Verdict.ADMITTED, Verdict.EXHAUSTED}
    assert len({d.reservation_id for d in admitted}) == 37
    counters = await runtime.quota.counters(MARIA)
    assert counters.reserved == 3700


async def test_rejection_reports_the_spec_snapshot(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="test")
    d = await runtime.quota.authorize(MARIA, 1000)
    await runtime.quota.settle(MARIA, d.reservation_id, Usage(600, 400))
    blocked = await runtime.quota.authorize(MARIA, 1)
    assert blocked.verdict is Verdict.EXHAUSTED
    assert blocked.reservation_id == ""
    snap = blocked.snapshot
    assert (snap.used, snap.limit, snap.additional, snap.period) == (1000, 1000, 0, "2026-11")
    assert snap.next_reset == datetime(2026, 12, 1, tzinfo=UTC)


async def test_settle_twice_debits_once(runtime: Runtime) -> None:
    d = await runtime.quota.authorize(MARIA, 500)
    first = await runtime.quota.settle(MARIA, d.reservation_id, Usage(100, 50))
    second = await runtime.quota.settle(MARIA, d.reservation_id, Usage(100, 50))
    assert (first.outcome, second.outcome) == (SettleOutcome.SETTLED, SettleOutcome.DUPLICATE)
    assert await runtime.quota.release(MARIA, d.reservation_id) is ReleaseOutcome.UNKNOWN
    await runtime.flusher.drain()
    c = await runtime.quota.counters(MARIA)
    assert (c.used, c.reserved, c.requests) == (150, 0, 1)
    assert count_rows(runtime.engine, UsageEntry) == 1


async def test_release_frees_the_reservation_once(runtime: Runtime) -> None:
    d = await runtime.quota.authorize(MARIA, 500)
    assert (await runtime.quota.counters(MARIA)).reserved == 500
    assert await runtime.quota.release(MARIA, d.reservation_id) is ReleaseOutcome.RELEASED
    assert await runtime.quota.release(MARIA, d.reservation_id) is ReleaseOutcome.UNKNOWN
    assert await runtime.quota.release(MARIA, "never-reserved") is ReleaseOutcome.UNKNOWN
    c = await runtime.quota.counters(MARIA)
    assert (c.used, c.reserved) == (0, 0)


async def test_a_zero_token_reservation_settles_releases_and_replays(runtime: Runtime) -> None:
    """Real Redis refuses HINCRBY by "-0" (what Lua's -x gives for 0): the state machine found a
    0-token reservation whose release failed (settle.lua and revert.lua had the same form)."""
    released = await runtime.quota.authorize(MARIA, 0)
    assert await runtime.quota.release(MARIA, released.reservation_id) is ReleaseOutcome.RELEASED
    settled = await runtime.quota.authorize(MARIA, 0)
    outcome = await runtime.quota.settle(MARIA, settled.reservation_id, Usage(0, 0))
    assert outcome.outcome is SettleOutcome.SETTLED
    await runtime.flusher.drain()
    c = await runtime.quota.counters(MARIA)
    assert (c.used, c.reserved, c.requests) == (0, 0, 1)


async def test_credit_twice_with_one_key_credits_once(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    first = await runtime.quota.credit(MARIA, 500_000, CreditKind.PURCHASE, key="order-1", actor="admin")
    again = await runtime.quota.credit(MARIA, 500_000, CreditKind.PURCHASE, key="order-1", actor="admin")
    assert (first.outcome, again.outcome) == (CreditOutcome.CREDITED, CreditOutcome.DUPLICATE)
    await runtime.flusher.drain()
    replay = await runtime.quota.credit(MARIA, 500_000, CreditKind.PURCHASE, key="order-1", actor="admin")
    assert replay.outcome is CreditOutcome.DUPLICATE
    account = await runtime.quota.account(MARIA)
    assert account.additional == 500_000
    assert account.available == 1_500_000
    assert count_rows(runtime.engine, CreditEntry) == 1


async def test_concurrent_credits_with_one_key_credit_once(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    results = await asyncio.gather(
        *(runtime.quota.credit(MARIA, 1000, CreditKind.BONUS, key="bonus-x", actor="a") for _ in range(20))
    )
    assert sum(r.outcome is CreditOutcome.CREDITED for r in results) == 1
    assert (await runtime.quota.counters(MARIA)).additional == 1000


async def test_credit_for_unknown_user_is_refused(runtime: Runtime) -> None:
    with pytest.raises(UnknownUser):
        await runtime.quota.credit("nobody@x.com", 10, CreditKind.BONUS, key="k", actor="a")


async def test_monthly_allowance_is_spent_before_additional_tokens(runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="test")
    await runtime.quota.credit(MARIA, 500, CreditKind.PURCHASE, key="p1", actor="a")
    d = await runtime.quota.authorize(MARIA, 1200)
    assert d.admitted
    s = await runtime.quota.settle(MARIA, d.reservation_id, Usage(1000, 200))
    assert (s.monthly_tokens, s.additional_tokens, s.additional) == (1000, 200, 300)
    await runtime.flusher.drain()
    row = _only_usage(runtime)
    assert (row.monthly_tokens, row.additional_tokens) == (1000, 200)


async def test_usage_beyond_everything_is_kept_not_lost(runtime: Runtime) -> None:
    """A request that used more than its estimate and more than what was left still debits all of it."""
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="test")
    d = await runtime.quota.authorize(MARIA, 900)
    s = await runtime.quota.settle(MARIA, d.reservation_id, Usage(1000, 500))
    assert (s.monthly_tokens, s.additional_tokens, s.used) == (1500, 0, 1500)
    blocked = await runtime.quota.authorize(MARIA, 0)
    assert blocked.snapshot.available == -500
    assert blocked.verdict is Verdict.EXHAUSTED


async def test_month_turns_at_midnight_utc_keeping_additional_tokens(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(datetime(2026, 1, 31, 23, 59, 59, 999_000, tzinfo=UTC))
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="test")
    await runtime.quota.credit(MARIA, 300, CreditKind.BONUS, key="b1", actor="a")
    d = await runtime.quota.authorize(MARIA, 1100)
    await runtime.quota.settle(MARIA, d.reservation_id, Usage(1000, 100))
    late_january = await runtime.quota.authorize(MARIA, 201)
    assert late_january.verdict is Verdict.EXHAUSTED
    assert late_january.snapshot.next_reset == datetime(2026, 2, 1, tzinfo=UTC)

    clock.set(datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC))
    february = await runtime.quota.authorize(MARIA, 201)
    assert february.admitted
    assert (february.snapshot.used, february.snapshot.additional, february.snapshot.period) == (0, 200, "2026-02")
    assert february.snapshot.next_reset == datetime(2026, 3, 1, tzinfo=UTC)
    s = await runtime.quota.settle(MARIA, february.reservation_id, Usage(150, 0))
    await runtime.flusher.drain()
    assert s.used == 150
    periods = sorted(r.period for r in _usage_rows(runtime))
    assert periods == ["2026-01", "2026-02"]


async def test_expired_reservation_stops_counting_and_is_audited(runtime: Runtime, clock: FakeClock) -> None:
    d = await runtime.quota.authorize(MARIA, 700)
    clock.advance(seconds=runtime.settings.reservation_ttl_seconds + 1)
    other = await runtime.quota.authorize(MARIA, 1)
    assert other.snapshot.reserved == 1  # the crashed proxy's 700 no longer count
    late = await runtime.quota.settle(MARIA, d.reservation_id, Usage(400, 100))
    assert late.outcome is SettleOutcome.LATE  # the real usage is still debited
    assert late.used == 500
    await runtime.flusher.drain()
    assert count_rows(runtime.engine, AuditEntry, AuditEntry.action == "reservation.expired") == 1


@pytest.mark.parametrize(
    "prompt, completion",
    [(-1, 10), (10, -5), (1.5, 1), (float("nan"), 1), (math.inf, 1), (True, 1), ("10", 1), (None, 1), (10**12, 0)],
)
async def test_bad_usage_is_rejected_and_changes_nothing(runtime: Runtime, prompt: object, completion: object) -> None:
    d = await runtime.quota.authorize(MARIA, 500)
    before = await runtime.quota.counters(MARIA)
    with pytest.raises(InvalidInput):
        await runtime.quota.settle(MARIA, d.reservation_id, Usage(prompt, completion))  # type: ignore[arg-type]
    after = await runtime.quota.counters(MARIA)
    assert after == before
    ok = await runtime.quota.settle(MARIA, d.reservation_id, Usage(1, 1))
    assert ok.outcome is SettleOutcome.SETTLED


@pytest.mark.parametrize("estimate", [-1, 2.0, float("nan"), 10**12, "5"])
async def test_bad_estimate_is_rejected(runtime: Runtime, estimate: object) -> None:
    with pytest.raises(InvalidInput):
        await runtime.quota.authorize(MARIA, estimate)  # type: ignore[arg-type]


@pytest.mark.parametrize("tokens", [0, -10, 1.0, 10**15, False])
async def test_bad_credit_is_rejected_and_changes_nothing(runtime: Runtime, tokens: object) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    with pytest.raises(InvalidInput):
        await runtime.quota.credit(MARIA, tokens, CreditKind.BONUS, key="k1", actor="a")  # type: ignore[arg-type]
    assert (await runtime.quota.counters(MARIA)).additional == 0
    await runtime.flusher.drain()
    assert count_rows(runtime.engine, CreditEntry) == 0


def _usage_rows(runtime: Runtime) -> list[UsageEntry]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(UsageEntry)).all())


def _only_usage(runtime: Runtime) -> UsageEntry:
    rows = _usage_rows(runtime)
    assert len(rows) == 1
    return rows[0]

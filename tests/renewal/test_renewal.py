"""The monthly renewal (SPEC R1, R2) as worked examples, on both backends, with an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, func, select

from solaris_tokens import renewal
from solaris_tokens.domain import AlertKind, CallDetails, CreditKind, Usage
from solaris_tokens.ledger.flusher import LedgerFlusher
from solaris_tokens.ledger.models import AuditEntry, User
from solaris_tokens.ledger.renewal_models import PeriodSummary
from solaris_tokens.policy import Period
from solaris_tokens.renewal import RenewalJob, RenewalNotDue, efficiency_percent, period_to_renew, renew
from solaris_tokens.runtime import Runtime
from tests.renewal.helpers import credit, ledger_usage, outbox, payload, render, spend, summaries
from tests.support import FakeClock

MARIA = "maria.silva@x.com"
NOVEMBER = Period(2026, 11)
LAST_SECOND_OF_NOVEMBER = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
TURN = datetime(2026, 12, 1, tzinfo=UTC)
AFTER_GRACE = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)


def user_id(runtime: Runtime, email: str) -> int:
    return int(runtime.ledger.require_user(email).id or 0)


def renewal_audits(runtime: Runtime) -> list[AuditEntry]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == renewal.RENEWAL_ACTION)))


async def test_renewal_email_reports_last_month_and_keeps_additional_tokens(runtime: Runtime, clock: FakeClock) -> None:
    """Spec flow "Fase 4: Renovação Mensal": 850.000 of 1.000.000 used, 150.000 additional kept."""
    await credit(runtime, clock, MARIA, 150_000, CreditKind.PURCHASE, at=datetime(2026, 11, 3, tzinfo=UTC))
    for day in range(5):
        await spend(runtime, clock, MARIA, 170_000, at=datetime(2026, 11, 10 + day, 14, tzinfo=UTC))

    clock.set(AFTER_GRACE)
    result = await renew(runtime)

    assert (result.period, result.users, result.renewed, result.emails) == ("2026-11", 1, 1, 1)
    summary = summaries(runtime, "2026-11")[user_id(runtime, MARIA)]
    assert (summary.used, summary.monthly_limit, summary.efficiency_percent, summary.requests) == (
        850_000,
        1_000_000,
        85,
        5,
    )
    assert (summary.additional_used, summary.additional_end, summary.plan) == (0, 150_000, "basic")

    [email] = outbox(runtime, "renewal")
    assert (email.recipient, email.dedupe_key, email.user_id) == (MARIA, "2026-12", user_id(runtime, MARIA))
    subject, body, html = render("renewal", payload(email))
    assert subject == "🔄 Seus tokens mensais foram renovados"
    for line in (
        "Olá Maria Silva,",
        "Seus tokens mensais foram renovados automaticamente!",
        "• Tokens utilizados: 850.000 de 1.000.000",
        "• Eficiência: 85%",
        "• Consultas realizadas: 5",
        "• Tokens mensais: 1.000.000 (renovados)",
        "• Tokens adicionais: 150.000 (mantidos)",
        "• Total disponível: 1.150.000 tokens",
        "Continue aproveitando a IA SOLARIS!",
    ):
        assert line in body.splitlines()
    assert "Total disponível: <strong>1.150.000</strong> tokens" in html

    [audit] = renewal_audits(runtime)
    assert (audit.target, audit.actor) == (MARIA, "system")
    account = await runtime.quota.account(MARIA)
    assert (account.period, account.used, account.additional, account.available) == ("2026-12", 0, 150_000, 1_150_000)


async def test_additional_tokens_survive_the_renewal(runtime: Runtime, clock: FakeClock) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="admin")
    await credit(runtime, clock, MARIA, 500, CreditKind.BONUS)
    settled = await spend(runtime, clock, MARIA, 1200)
    assert (settled.monthly_tokens, settled.additional_tokens) == (1000, 200)

    clock.set(AFTER_GRACE)
    await renew(runtime)

    summary = summaries(runtime, "2026-11")[user_id(runtime, MARIA)]
    assert (summary.used, summary.additional_used, summary.additional_end, summary.efficiency_percent) == (
        1000,
        200,
        300,
        100,
    )
    account = await runtime.quota.account(MARIA)
    assert (account.used, account.additional, account.available) == (0, 300, 1300)
    assert payload(outbox(runtime, "renewal")[0])["total_available"] == 1300


async def test_usage_at_the_turn_lands_in_its_own_period(runtime: Runtime, clock: FakeClock) -> None:
    """23:59:59 on the 30th is November's; 00:00:00 on the 1st and a call settling after midnight are December's."""
    await spend(runtime, clock, MARIA, 1_000, at=LAST_SECOND_OF_NOVEMBER)
    clock.set(datetime(2026, 11, 30, 23, 59, 59, 900_000, tzinfo=UTC))
    straddling = await runtime.quota.authorize(MARIA, 500)
    await spend(runtime, clock, MARIA, 2_000, at=TURN)
    clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    await runtime.quota.settle(MARIA, straddling.reservation_id, Usage(300, 200, CallDetails(model="gpt-4o")))

    clock.set(AFTER_GRACE)
    await renew(runtime)

    uid = user_id(runtime, MARIA)
    assert ledger_usage(runtime, "2026-11", uid) == (1_000, 1_000, 0, 1)
    assert ledger_usage(runtime, "2026-12", uid) == (2_500, 2_500, 0, 2)
    summary = summaries(runtime, "2026-11")[uid]
    assert (summary.used, summary.requests) == (1_000, 1)
    account = await runtime.quota.account(MARIA)
    assert (account.used, account.requests) == (2_500, 2)


async def test_summary_matches_the_ledger_to_the_token(runtime: Runtime, clock: FakeClock) -> None:
    emails = [f"user{i}@x.com" for i in range(7)]
    for i, email in enumerate(emails):
        for j in range(i + 1):
            await spend(runtime, clock, email, 1_000 * (i + 1) + 37 * j, at=datetime(2026, 11, 1 + i + j, tzinfo=UTC))
    await spend(runtime, clock, emails[0], 999, at=datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))

    clock.set(AFTER_GRACE)
    result = await RenewalJob(runtime, batch_size=3).run(NOVEMBER)

    assert (result.users, result.renewed) == (7, 7)
    rows = summaries(runtime, "2026-11")
    for email in emails:
        uid = user_id(runtime, email)
        _total, monthly, additional, requests = ledger_usage(runtime, "2026-11", uid)
        assert (rows[uid].used, rows[uid].additional_used, rows[uid].requests) == (monthly, additional, requests)
    assert sum(r.used for r in rows.values()) == ledger_usage(runtime, "2026-11")[1]


async def test_running_twice_late_or_concurrently_renews_each_user_once(runtime: Runtime, clock: FakeClock) -> None:
    for i in range(5):
        await spend(runtime, clock, f"user{i}@x.com", 100 * (i + 1))

    clock.set(AFTER_GRACE)
    first, second = await asyncio.gather(
        RenewalJob(runtime, batch_size=2).run(NOVEMBER), RenewalJob(runtime, batch_size=2).run(NOVEMBER)
    )
    assert first.renewed + second.renewed == 5
    assert first.emails + second.emails == 5
    assert (first.users, second.users) == (5, 5)

    clock.set(datetime(2026, 12, 3, 9, 30, tzinfo=UTC))  # hours late, by hand
    again = await renew(runtime, "2026-11")
    assert (again.users, again.renewed, again.emails, again.already_renewed) == (5, 0, 0, 5)

    assert len(summaries(runtime, "2026-11")) == 5
    messages = outbox(runtime, "renewal")
    assert len(messages) == 5
    assert len({m.recipient for m in messages}) == 5
    assert len(renewal_audits(runtime)) == 5


async def test_renewal_waits_for_the_grace_period_and_refuses_an_unended_month(
    runtime: Runtime, clock: FakeClock
) -> None:
    await spend(runtime, clock, MARIA, 100)
    clock.set(TURN)
    with pytest.raises(RenewalNotDue) as early:
        await renew(runtime)
    assert early.value.due_at == datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    with pytest.raises(RenewalNotDue):
        await renew(runtime, "2026-12")
    assert summaries(runtime, "2026-11") == {}
    assert outbox(runtime, "renewal") == []


async def test_only_users_active_at_the_turn_are_renewed(runtime: Runtime, clock: FakeClock) -> None:
    await spend(runtime, clock, MARIA, 100)
    await spend(runtime, clock, "suspended@x.com", 100)
    await spend(runtime, clock, "back@x.com", 100)
    await runtime.quota.change_user("suspended@x.com", {"status": "suspended"}, actor="admin", action="user.suspend")
    await runtime.quota.change_user(
        "back@x.com",
        {"status": "suspended", "suspended_until": datetime(2026, 11, 20, tzinfo=UTC)},
        actor="admin",
        action="user.suspend",
    )
    await spend(runtime, clock, "newcomer@x.com", 100, at=datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC))

    clock.set(AFTER_GRACE)
    result = await renew(runtime)

    assert (result.users, result.renewed) == (2, 2)
    assert sorted(m.recipient for m in outbox(runtime, "renewal")) == ["back@x.com", MARIA]


async def test_alerts_fire_again_in_the_new_month(runtime: Runtime, clock: FakeClock) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="admin")
    november = [await spend(runtime, clock, MARIA, n) for n in (850, 100)]
    clock.set(AFTER_GRACE)
    await renew(runtime)
    december = [await spend(runtime, clock, MARIA, n) for n in (800, 160)]

    assert [s.alerts for s in november] == [(AlertKind.WARNING,), (AlertKind.URGENT,)]
    assert [s.alerts for s in december] == [(AlertKind.WARNING,), (AlertKind.URGENT,)]
    await runtime.flusher.drain()
    for kind in ("warning", "urgent"):
        assert [m.dedupe_key for m in outbox(runtime, kind)] == ["2026-11", "2026-12"]


async def test_summary_includes_entries_another_flusher_is_still_writing(
    runtime: Runtime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy's flusher took November's last entries and has not committed them yet: the job waits."""
    await spend(runtime, clock, MARIA, 4_000, at=LAST_SECOND_OF_NOVEMBER)
    other = LedgerFlusher(runtime.store, runtime.ledger, consumer="proxy-2")
    held = await runtime.store.read_events(other.consumer, 100, claim_idle_ms=10**9)
    assert held
    runtime.flusher.claim_idle_ms = 10**9  # too soon to take them over
    pauses: list[float] = []

    async def other_flusher_commits(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.to_thread(runtime.ledger.write_events, held)
        await runtime.store.ack_events(held)

    monkeypatch.setattr(renewal, "_pause", other_flusher_commits)
    clock.set(AFTER_GRACE)
    await renew(runtime)

    assert len(pauses) == 1
    assert summaries(runtime, "2026-11")[user_id(runtime, MARIA)].used == 4_000


async def test_progress_reports_every_batch(runtime: Runtime, clock: FakeClock) -> None:
    for i in range(5):
        await spend(runtime, clock, f"user{i}@x.com", 10)
    calls: list[tuple[int, int]] = []
    clock.set(AFTER_GRACE)
    await RenewalJob(runtime, batch_size=2).run(NOVEMBER, lambda done, total: calls.append((done, total)))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]


async def test_period_summaries_are_append_only(runtime: Runtime, clock: FakeClock) -> None:
    await spend(runtime, clock, MARIA, 10)
    clock.set(AFTER_GRACE)
    await renew(runtime)
    for statement in ("UPDATE period_summaries SET used = 0", "DELETE FROM period_summaries"):
        with pytest.raises(DBAPIError, match="append-only"), runtime.engine.begin() as conn:
            conn.execute(text(statement))
    with Session(runtime.engine) as s:
        assert s.exec(select(func.count(col(PeriodSummary.id)))).one() == 1
        assert s.exec(select(func.count(col(User.id)))).one() == 1


def test_efficiency_is_a_whole_percent_rounded_half_up() -> None:
    assert [efficiency_percent(u, 1_000_000) for u in (0, 850_000, 4_999, 5_000, 1_200_000)] == [0, 85, 0, 1, 120]
    assert efficiency_percent(10, 0) == 0


def test_the_period_to_renew_is_the_last_one_that_ended() -> None:
    assert period_to_renew(TURN) == NOVEMBER
    assert period_to_renew(datetime(2027, 1, 1, 0, 1, tzinfo=UTC)) == Period(2026, 12)
    assert period_to_renew(TURN, "2026-06") == Period(2026, 6)

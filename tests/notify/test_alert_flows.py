"""Phase 2 of the user flows (SPEC A1–A4, C1): 80% / 95% / blocked alerts, once per user and period,
from the request path to one outbox row and one email — on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from solaris_tokens.domain import AlertKind, Verdict
from solaris_tokens.ledger.models import OutboxMessage
from solaris_tokens.notify.outbox import OutboxStatus
from solaris_tokens.notify.transport import email_dir
from solaris_tokens.runtime import Runtime
from tests.notify.helpers import delivery, outbox_rows, spend, spend_concurrently
from tests.support import FakeClock

MARIA = "maria.silva@x.com"
ANA = "ana.power@x.com"


def eml_files(runtime: Runtime) -> list[Path]:
    folder = email_dir(runtime.settings)
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def subjects(runtime: Runtime) -> list[str]:
    out = []
    for path in eml_files(runtime):
        msg = message_from_bytes(path.read_bytes(), policy=default_policy)
        out.append(str(msg["subject"]))
    return sorted(out)


def kinds(runtime: Runtime, email: str) -> list[tuple[str, str]]:
    return sorted((r.kind, r.dedupe_key) for r in outbox_rows(runtime, OutboxMessage.recipient == email))


async def test_phase2_fifty_concurrent_requests_crossing_80_95_and_block_send_one_email_each(
    runtime: Runtime, clock: FakeClock
) -> None:
    await spend(runtime, MARIA, 790_000)

    # 80%: 50 requests of 1.000 tokens cross 800.000 together; exactly one of them reports it.
    settled = await spend_concurrently(runtime, MARIA, 50, 1_000)
    assert sum(AlertKind.WARNING in s.alerts for s in settled) == 1
    await runtime.flusher.drain()
    assert kinds(runtime, MARIA) == [("warning", "2026-11")]
    report = delivery(runtime, clock).run()
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)

    # 95%
    await spend(runtime, MARIA, 100_000)  # 940.000
    settled = await spend_concurrently(runtime, MARIA, 50, 1_000)  # 990.000
    assert sum(AlertKind.URGENT in s.alerts for s in settled) == 1
    await runtime.flusher.drain()
    assert kinds(runtime, MARIA) == [("urgent", "2026-11"), ("warning", "2026-11")]

    # Block: spend what is left, then 50 requests are refused together; one block email.
    await spend(runtime, MARIA, 10_000)  # 1.000.000: nothing left
    decisions = await asyncio.gather(*(runtime.quota.authorize(MARIA, 100) for _ in range(50)))
    assert {d.verdict for d in decisions} == {Verdict.EXHAUSTED}
    await runtime.flusher.drain()
    assert kinds(runtime, MARIA) == [("blocked", "2026-11"), ("urgent", "2026-11"), ("warning", "2026-11")]

    report = delivery(runtime, clock).run()
    assert (report.sent, report.retried, report.failed) == (2, 0, 0)
    assert delivery(runtime, clock).run().handled == 0  # a second run finds nothing to send
    assert subjects(runtime) == sorted(
        [
            "⚠️ 80% dos seus tokens foram utilizados",
            "🚨 URGENTE: 95% dos tokens utilizados",
            "⛔ Limite de tokens esgotado",
        ]
    )
    assert {r.status for r in outbox_rows(runtime)} == {OutboxStatus.SENT}


async def test_phase4_new_period_rearms_all_three_alerts(runtime: Runtime, clock: FakeClock) -> None:
    await spend(runtime, MARIA, 1_000_000)  # crosses 80% and 95% in one request
    assert (await runtime.quota.authorize(MARIA, 1)).verdict is Verdict.EXHAUSTED
    await runtime.flusher.drain()
    november = [("blocked", "2026-11"), ("urgent", "2026-11"), ("warning", "2026-11")]
    assert kinds(runtime, MARIA) == november

    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))  # renewal instant
    settled = await spend(runtime, MARIA, 1_000_000)
    assert set(settled.alerts) == {AlertKind.WARNING, AlertKind.URGENT}
    assert (await runtime.quota.authorize(MARIA, 1)).verdict is Verdict.EXHAUSTED
    await runtime.flusher.drain()
    december = [("blocked", "2026-12"), ("urgent", "2026-12"), ("warning", "2026-12")]
    assert kinds(runtime, MARIA) == sorted(november + december)
    assert delivery(runtime, clock).run().sent == 6
    assert len(eml_files(runtime)) == 6


async def test_power_user_is_alerted_at_90_and_98_percent_of_3_million(runtime: Runtime, clock: FakeClock) -> None:
    await runtime.quota.ensure_loaded(ANA)
    await runtime.quota.change_user(ANA, {"plan": "power"}, actor="admin", action="user.set_plan")
    first = await spend(runtime, ANA, 2_600_000)  # 86,7%: past the basic 80%, not the power 90%
    assert first.alerts == ()
    assert (first.limit, first.used) == (3_000_000, 2_600_000)
    warning = await spend(runtime, ANA, 100_000)  # 90%
    assert warning.alerts == (AlertKind.WARNING,)
    assert (await spend(runtime, ANA, 230_000)).alerts == ()  # 97,7%
    assert (await spend(runtime, ANA, 10_000)).alerts == (AlertKind.URGENT,)  # 98%
    await runtime.flusher.drain()

    rows = {r.kind: r for r in outbox_rows(runtime, OutboxMessage.recipient == ANA)}
    assert set(rows) == {"warning", "urgent"}
    assert '"percent": 90' in rows["warning"].payload and '"used": 2700000' in rows["warning"].payload
    assert '"percent": 98' in rows["urgent"].payload
    assert delivery(runtime, clock).run().sent == 2
    assert subjects(runtime) == ["⚠️ 90% dos seus tokens foram utilizados", "🚨 URGENTE: 98% dos tokens utilizados"]


async def test_per_user_thresholds_override_the_plan(runtime: Runtime, clock: FakeClock) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.change_user(
        MARIA, {"warning_percent": 50, "urgent_percent": 70}, actor="admin", action="user.set_alerts"
    )
    assert (await spend(runtime, MARIA, 499_999)).alerts == ()
    assert (await spend(runtime, MARIA, 1)).alerts == (AlertKind.WARNING,)
    assert (await spend(runtime, MARIA, 200_000)).alerts == (AlertKind.URGENT,)
    assert (await spend(runtime, MARIA, 150_000)).alerts == ()  # 85%: the plan's 80% no longer applies
    await runtime.flusher.drain()
    assert kinds(runtime, MARIA) == [("urgent", "2026-11"), ("warning", "2026-11")]
    delivery(runtime, clock).run()
    assert subjects(runtime) == ["⚠️ 50% dos seus tokens foram utilizados", "🚨 URGENTE: 70% dos tokens utilizados"]


async def test_alert_fired_before_redis_lost_its_data_is_not_sent_again(runtime: Runtime, clock: FakeClock) -> None:
    await spend(runtime, MARIA, 850_000)
    await runtime.flusher.drain()
    await runtime.store.forget_user(MARIA)  # Redis restarted empty: counters come back from the ledger
    assert (await spend(runtime, MARIA, 10_000)).alerts == ()
    await runtime.flusher.drain()
    assert kinds(runtime, MARIA) == [("warning", "2026-11")]

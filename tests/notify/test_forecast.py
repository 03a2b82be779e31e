"""Exhaustion estimate of the 80% email (SPEC A1): from the user's own recent pace, or omitted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from solaris_tokens.forecast import Pace, days_until_exhausted, exhaustion_days, recent_pace
from solaris_tokens.runtime import Runtime
from tests.notify.helpers import delivery, eml_text, spend
from tests.support import FakeClock

MARIA = "maria.silva@x.com"
NOW = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)
RESET = datetime(2026, 12, 1, tzinfo=UTC)


def test_steady_pace_gives_the_whole_number_of_days() -> None:
    pace = Pace(700_000, timedelta(days=7))  # 100.000 per day
    assert days_until_exhausted(200_000, pace, now=NOW, reset=RESET) == 2
    assert days_until_exhausted(240_000, pace, now=NOW, reset=RESET) == 2
    assert days_until_exhausted(250_000, pace, now=NOW, reset=RESET) == 3  # 2,5 rounds half up
    assert days_until_exhausted(1_000, pace, now=NOW, reset=RESET) == 1  # never "0 dias"


def test_no_meaningful_pace_gives_no_estimate() -> None:
    assert days_until_exhausted(200_000, Pace(0, timedelta(days=7)), now=NOW, reset=RESET) is None
    assert days_until_exhausted(0, Pace(700_000, timedelta(days=7)), now=NOW, reset=RESET) is None
    assert days_until_exhausted(200_000, Pace(50_000, timedelta(hours=3)), now=NOW, reset=RESET) is None
    # 10.000 a day would need 20 days, but the allowance renews in 3: it will not run out
    late = datetime(2026, 11, 28, tzinfo=UTC)
    assert days_until_exhausted(200_000, Pace(70_000, timedelta(days=7)), now=late, reset=RESET) is None


async def test_phase2_steady_100k_a_day_runs_out_in_2_days(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    for day in range(8):
        if day:
            clock.advance(days=1)
        await spend(runtime, MARIA, 100_000)
    await runtime.flusher.drain()  # 800.000 on Nov 8: the 80% alert
    user = runtime.ledger.require_user(MARIA)
    assert user.id is not None
    pace = recent_pace(runtime.engine, user.id, now=clock())
    assert pace is not None and pace.per_day == 100_000
    assert exhaustion_days(runtime.engine, user.id, remaining=200_000, now=clock()) == 2

    delivery(runtime, clock).run()
    assert "os tokens podem esgotar em aproximadamente 2 dias." in eml_text(runtime, "warning")


async def test_user_younger_than_the_window_is_measured_over_their_own_history(
    runtime: Runtime, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))
    for day in range(4):  # 200.000 a day for three days after the first request
        if day:
            clock.advance(days=1)
        await spend(runtime, MARIA, 200_000)
    await runtime.flusher.drain()
    delivery(runtime, clock).run()
    assert "os tokens podem esgotar em aproximadamente 1 dia." in eml_text(runtime, "warning")


async def test_no_history_omits_the_sentence(runtime: Runtime, clock: FakeClock) -> None:
    user, _ = runtime.ledger.ensure_user(MARIA)
    assert user.id is not None
    assert recent_pace(runtime.engine, user.id, now=clock()) is None
    runtime.ledger.enqueue_email(
        recipient=MARIA,
        kind="warning",
        dedupe_key="2026-11",
        payload={"used": 800_000, "limit": 1_000_000, "additional": 0, "percent": 80, "period": "2026-11"},
        user_id=user.id,
    )
    delivery(runtime, clock).run()
    text = eml_text(runtime, "warning")
    assert "Restam apenas 200.000 tokens para este mês." in text
    assert "Estimativa" not in text


async def test_pace_that_outlasts_the_month_omits_the_sentence(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    await spend(runtime, MARIA, 700_000)
    clock.set(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    for _ in range(7):
        clock.advance(days=1)
        await spend(runtime, MARIA, 15_000)  # 805.000 on Nov 29, at 15.000 a day: 13 days > renewal in 2
    await runtime.flusher.drain()
    user = runtime.ledger.require_user(MARIA)
    assert user.id is not None
    assert exhaustion_days(runtime.engine, user.id, remaining=195_000, now=clock()) is None
    delivery(runtime, clock).run()
    assert "Estimativa" not in eml_text(runtime, "warning")


async def test_user_who_stopped_using_gets_no_estimate(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    await spend(runtime, MARIA, 810_000)
    await runtime.flusher.drain()
    user = runtime.ledger.require_user(MARIA)
    assert user.id is not None
    clock.set(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    assert exhaustion_days(runtime.engine, user.id, remaining=190_000, now=clock()) is None

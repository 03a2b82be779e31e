"""A hypothesis state machine over reserve / settle / release / credit / expiry / month turn / Redis loss.

Invariants: nothing is admitted beyond what is available; no reservation is resolved twice; after
the stream is drained the ledger and the counters agree exactly.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule, run_state_machine_as_test
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import Engine

from solaris_tokens.counters.connect import async_client
from solaris_tokens.domain import CreditKind, CreditOutcome, SettleOutcome, Usage, Verdict
from solaris_tokens.policy import Period
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings
from tests.support import REAL_REDIS_URL, FakeClock

LIMIT = 5_000
TTL = 60


@dataclass
class Model:
    """What the counters should be, computed the plain way."""

    additional: int = 0
    used: dict[str, int] = field(default_factory=dict)
    live: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # rid -> (tokens, expiry)
    settled: set[str] = field(default_factory=set)
    credit_keys: set[str] = field(default_factory=set)

    def purge(self, now: datetime) -> None:
        self.live = {rid: (t, exp) for rid, (t, exp) in self.live.items() if exp > now}

    def available(self, period: str) -> int:
        return LIMIT - self.used.get(period, 0) - sum(t for t, _ in self.live.values()) + self.additional


def machine_for(settings: Settings, engine: Engine, backend: str) -> type[RuleBasedStateMachine]:
    class QuotaMachine(RuleBasedStateMachine):
        reservations = Bundle("reservations")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = FakeClock(datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
            self.email = f"u{uuid.uuid4().hex[:12]}@x.com"
            self.redis: Redis = (
                fakeredis.FakeAsyncRedis(
                    server=fakeredis.FakeServer(),
                    decode_responses=True,
                    connection_pool_class=BlockingConnectionPool,
                    max_connections=16,
                )
                if backend == "embedded"
                else async_client(REAL_REDIS_URL, settings)
            )
            self.rt: Runtime = build_runtime(settings, redis=self.redis, engine=engine, clock=self.clock)
            self.rt.flusher.claim_idle_ms = 0
            self.model = Model()
            self.run(self.rt.quota.ensure_loaded(self.email))
            self.run(self.rt.quota.set_limit(self.email, LIMIT, actor="hypothesis"))

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        @property
        def period(self) -> str:
            return Period.of(self.clock()).name

        @rule(target=reservations, estimate=st.integers(0, 3_000))
        def reserve(self, estimate: int) -> str:
            self.model.purge(self.clock())
            expected = estimate <= self.model.available(self.period)
            decision = self.run(self.rt.quota.authorize(self.email, estimate))
            assert decision.admitted == expected, (decision, self.model)
            if decision.admitted:
                self.model.live[decision.reservation_id] = (estimate, self.clock() + timedelta(seconds=TTL))
                return str(decision.reservation_id)
            assert decision.verdict is Verdict.EXHAUSTED
            return f"rejected-{uuid.uuid4().hex}"

        @rule(rid=reservations, prompt=st.integers(0, 2_000), completion=st.integers(0, 2_000))
        def settle(self, rid: str, prompt: int, completion: int) -> None:
            if rid.startswith("rejected-"):
                return
            self.model.purge(self.clock())
            result = self.run(self.rt.quota.settle(self.email, rid, Usage(prompt, completion)))
            if rid in self.model.settled:
                if result.outcome is not SettleOutcome.DUPLICATE:
                    # Redis no longer remembered the id (past its window, or its data was lost): the
                    # ledger refuses the row and the flusher undoes the counters. Never counted twice.
                    assert result.outcome is SettleOutcome.LATE
                    self.run(self.rt.flusher.drain())
                return
            live = rid in self.model.live
            assert result.outcome is (SettleOutcome.SETTLED if live else SettleOutcome.LATE)
            self.model.live.pop(rid, None)
            self.model.settled.add(rid)
            used = self.model.used.get(self.period, 0)
            total = prompt + completion
            from_additional = min(max(total - max(LIMIT - used, 0), 0), self.model.additional)
            self.model.used[self.period] = used + total - from_additional
            self.model.additional -= from_additional
            assert (result.monthly_tokens, result.additional_tokens) == (total - from_additional, from_additional)

        @rule(rid=consumes(reservations))
        def release(self, rid: str) -> None:
            self.run(self.rt.quota.release(self.email, rid))
            self.model.live.pop(rid, None)

        @rule(amount=st.integers(1, 4_000), key=st.sampled_from(["a", "b", "c", "d"]))
        def credit(self, amount: int, key: str) -> None:
            result = self.run(
                self.rt.quota.credit(self.email, amount, CreditKind.BONUS, key=f"{self.email}:{key}", actor="h")
            )
            if key in self.model.credit_keys:
                assert result.outcome is CreditOutcome.DUPLICATE
            else:
                assert result.outcome is CreditOutcome.CREDITED
                self.model.credit_keys.add(key)
                self.model.additional += amount

        @rule()
        def proxy_crash_expires_reservations(self) -> None:
            self.clock.advance(seconds=TTL + 1)

        @rule()
        def month_turns(self) -> None:
            self.clock.set(Period.of(self.clock()).end + timedelta(seconds=1))

        @rule()
        def redis_loses_its_data(self) -> None:
            self.run(self.rt.flusher.drain())
            self.run(self.rt.store.forget_user(self.email))
            self.model.live.clear()  # reservations lived only in Redis

        @rule()
        def ledger_matches_counters_after_drain(self) -> None:
            self.run(self.rt.flusher.drain())
            drift = self.run(self.rt.quota.reconcile(self.email))
            assert drift.zero, drift

        @invariant()
        def counters_match_model(self) -> None:
            c = self.run(self.rt.quota.counters(self.email))
            assert c.used == self.model.used.get(self.period, 0)
            assert c.additional == self.model.additional

        def teardown(self) -> None:
            self.run(self.rt.redis.aclose())
            self.loop.close()

    return QuotaMachine


@pytest.mark.parametrize("examples", [int(os.environ.get("SOLARIS_STATEFUL_EXAMPLES", "40"))])
def test_quota_state_machine(backend: str, settings: Settings, engine: Engine, examples: int) -> None:
    if backend == "real":
        from tests.support import need_service, redis_reachable

        need_service("Redis", *redis_reachable())
        examples = 15
    settings = settings.model_copy(update={"reservation_ttl_seconds": TTL})
    run_state_machine_as_test(
        machine_for(settings, engine, backend),
        settings=hyp_settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

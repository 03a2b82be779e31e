"""The quota core: authorize → settle / release, credits and profile changes.

It calls only the counter store (Redis, one Lua script per operation) and the ledger (SQL); it
knows nothing about LiteLLM, Celery or the CLI. The hot path is one Redis round trip; the ledger
is touched only to provision a user the store does not know yet (first request, or Redis lost
its data), which sets the counters from the ledger, never adds to them.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from solaris_tokens.clock import Clock, from_ms, to_ms, utc_now
from solaris_tokens.counters.base import CounterStore, StoredCounters
from solaris_tokens.domain import (
    AlertKind,
    Credit,
    CreditKind,
    CreditOutcome,
    Decision,
    ReleaseOutcome,
    Settlement,
    SettleOutcome,
    Snapshot,
    Usage,
    UserStatus,
    Verdict,
    by_value,
)
from solaris_tokens.errors import ConcurrentChange, InvalidInput
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import User
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.policy import Period, require_tokens
from solaris_tokens.settings import Settings

_NO_PROFILE = "no_profile"
_VERDICT_BY_VALUE = by_value(Verdict)
_SETTLE_BY_VALUE = by_value(SettleOutcome)
_LOAD_ATTEMPTS = 5


# json.dumps builds a new encoder whenever an option differs from the defaults: keep one.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def new_reservation_id() -> str:
    """Our own id for a reservation (128 random bits, hex): never taken from the client."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Account:
    """A user's profile and balance, as an admin sees it."""

    email: str
    name: str
    plan: str
    status: UserStatus
    suspended_until: datetime | None
    suspend_reason: str
    limit: int
    used: int
    reserved: int
    additional: int
    requests: int
    warning_percent: int
    urgent_percent: int
    alerts_fired: tuple[AlertKind, ...]
    period: str
    next_reset: datetime
    created_at: datetime | None

    @property
    def available(self) -> int:
        return self.limit - self.used - self.reserved + self.additional

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "name": self.name,
            "plan": self.plan,
            "status": self.status.value,
            "suspended_until": self.suspended_until.isoformat() if self.suspended_until else None,
            "suspend_reason": self.suspend_reason,
            "limit": self.limit,
            "used": self.used,
            "reserved": self.reserved,
            "additional": self.additional,
            "available": self.available,
            "requests": self.requests,
            "warning_percent": self.warning_percent,
            "urgent_percent": self.urgent_percent,
            "alerts_fired": [a.value for a in self.alerts_fired],
            "period": self.period,
            "next_reset": self.next_reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass(frozen=True, slots=True)
class Drift:
    """Where Redis disagrees with the ledger for one user (all zero when they agree)."""

    email: str
    used: int
    additional: int
    requests: int
    limit: int

    @property
    def zero(self) -> bool:
        return not (self.used or self.additional or self.requests or self.limit)


class QuotaService:
    def __init__(self, settings: Settings, store: CounterStore, ledger: Ledger, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self._loading: dict[str, asyncio.Task[None]] = {}

    # --- the request path ---------------------------------------------------------------------

    async def authorize(self, email: str, estimate: int, *, reservation_id: str | None = None) -> Decision:
        """Reserve `estimate` tokens atomically, or say why not (exhausted / suspended)."""
        estimate = require_tokens(estimate, "estimate", cap=self.settings.max_request_tokens)
        rid = reservation_id or new_reservation_id()
        now = self.clock()
        period = Period.of(now)
        now_ms = to_ms(now)
        expires = now_ms + self.settings.reservation_ttl_seconds * 1000
        for _ in range(_LOAD_ATTEMPTS):
            raw = await self.store.reserve(
                email, now_ms=now_ms, period=period.name, reservation_id=rid, estimate=estimate, expires_ms=expires
            )
            if raw.verdict != _NO_PROFILE:
                break
            await self.ensure_loaded(email)
        else:
            raise ConcurrentChange(f"counters for {email} could not be loaded")
        snapshot = Snapshot(raw.used, raw.limit, raw.additional, raw.reserved, period.name, period.end)
        verdict = _VERDICT_BY_VALUE[raw.verdict]
        return Decision(
            verdict=verdict,
            reservation_id=rid if verdict is Verdict.ADMITTED else "",
            estimate=estimate,
            snapshot=snapshot,
            suspended_until=from_ms(raw.suspended_until_ms) if raw.suspended_until_ms else None,
            suspend_reason=raw.suspend_reason,
        )

    async def settle(self, email: str, reservation_id: str, usage: Usage) -> Settlement:
        """Debit real usage in place of the reservation; a second call for the same id changes nothing."""
        cap = self.settings.max_request_tokens
        prompt = require_tokens(usage.prompt_tokens, "prompt_tokens", cap=cap)
        completion = require_tokens(usage.completion_tokens, "completion_tokens", cap=cap)
        if prompt + completion > cap:
            raise InvalidInput(f"usage of {prompt + completion} tokens exceeds the cap of {cap}")
        if not reservation_id:
            raise InvalidInput("a reservation id is required")
        now = self.clock()
        call = usage.call
        payload = _compact_json(
            {
                "call_id": call.call_id,
                "model": call.model,
                "started_ms": call.started_ms,
                "latency_ms": call.latency_ms,
            }
        )
        for _ in range(_LOAD_ATTEMPTS):
            raw = await self.store.settle(
                email,
                now_ms=to_ms(now),
                period=Period.of(now).name,
                reservation_id=reservation_id,
                prompt_tokens=prompt,
                completion_tokens=completion,
                payload=payload,
            )
            if raw.outcome != _NO_PROFILE:
                break
            await self.ensure_loaded(email)
            # Redis lost its memory: its settled-id set is gone, the ledger still knows.
            if await asyncio.to_thread(self.ledger.has_usage, reservation_id):
                return Settlement(SettleOutcome.DUPLICATE)
        else:
            raise ConcurrentChange(f"counters for {email} could not be loaded")
        return Settlement(
            _SETTLE_BY_VALUE[raw.outcome],
            raw.monthly,
            raw.additional_part,
            raw.used,
            raw.limit,
            raw.additional,
            raw.alerts,
        )

    async def release(self, email: str, reservation_id: str) -> ReleaseOutcome:
        """Void a reservation (failed or cancelled call); unknown ids are a no-op."""
        if not reservation_id:
            return ReleaseOutcome.UNKNOWN
        outcome, _ = await self.store.release(email, reservation_id)
        return outcome

    # --- loading counters from the ledger -----------------------------------------------------

    async def ensure_loaded(self, email: str) -> None:
        """Provision the user if new and load their counters if Redis lacks them; one load per process."""
        task = self._loading.get(email)
        if task is None:
            task = asyncio.create_task(self._provision(email))
            self._loading[email] = task
            task.add_done_callback(lambda _t: self._loading.pop(email, None))
        await asyncio.shield(task)

    async def _provision(self, email: str) -> None:
        user, _created = await asyncio.to_thread(self.ledger.ensure_user, email)
        await self._load(email, user, force=False)

    async def _load(self, email: str, user: User, *, force: bool) -> bool:
        for _ in range(_LOAD_ATTEMPTS):
            period = Period.of(self.clock())
            seq: int | None = None
            if force:
                current = await self.store.counters(email, period.name)
                seq = current.seq if current else None
            pending = await self.store.pending_events(email)
            state = await asyncio.to_thread(self.ledger.profile_state, user, period, pending)
            result = await self.store.load(email, state, period=period.name, force_seq=seq)
            if result >= 0:
                return result == 1
        raise ConcurrentChange(f"{email} kept changing while its counters were rebuilt")

    # --- reading --------------------------------------------------------------------------------

    async def counters(self, email: str) -> StoredCounters:
        period = Period.of(self.clock()).name
        for _ in range(_LOAD_ATTEMPTS):
            current = await self.store.counters(email, period)
            if current is not None:
                return current
            await self._load(email, await asyncio.to_thread(self.ledger.require_user, email), force=False)
        raise ConcurrentChange(f"counters for {email} could not be loaded")

    async def account(self, email: str) -> Account:
        user = await asyncio.to_thread(self.ledger.require_user, email)
        c = await self.counters(email)
        period = Period.of(self.clock())
        until = from_ms(c.suspended_until_ms) if c.suspended_until_ms else None
        suspended = c.status == UserStatus.SUSPENDED and (until is None or self.clock() < until)
        return Account(
            email=user.email,
            name=user.name,
            plan=c.plan,
            status=UserStatus.SUSPENDED if suspended else UserStatus.ACTIVE,
            suspended_until=until if suspended else None,
            suspend_reason=c.suspend_reason if suspended else "",
            limit=c.limit,
            used=c.used,
            reserved=c.reserved,
            additional=c.additional,
            requests=c.requests,
            warning_percent=c.warning_percent,
            urgent_percent=c.urgent_percent,
            alerts_fired=c.alerts_fired,
            period=period.name,
            next_reset=period.end,
            created_at=as_utc(user.created_at),
        )

    # --- administration -----------------------------------------------------------------------

    async def credit(
        self, email: str, tokens: int, kind: CreditKind, *, key: str, actor: str, reason: str = ""
    ) -> Credit:
        """Add additional tokens (never expire, kept across months); one credit per idempotency key."""
        tokens = require_tokens(tokens, "tokens", cap=self.settings.max_credit_tokens, allow_zero=False)
        if not key or len(key) > 200:
            raise InvalidInput("an idempotency key of 1 to 200 characters is required")
        await asyncio.to_thread(self.ledger.require_user, email)
        if await asyncio.to_thread(self.ledger.has_credit, key):
            c = await self.counters(email)
            return Credit(CreditOutcome.DUPLICATE, tokens, c.additional)
        for _ in range(_LOAD_ATTEMPTS):
            outcome, additional = await self.store.credit(
                email, key=key, tokens=tokens, kind=kind, actor=actor, reason=reason, now_ms=to_ms(self.clock())
            )
            if outcome != _NO_PROFILE:
                break
            await self.ensure_loaded(email)
        else:
            raise ConcurrentChange(f"counters for {email} could not be loaded")
        result = Credit(CreditOutcome(outcome), tokens, additional)
        if result.outcome is CreditOutcome.CREDITED:
            await asyncio.to_thread(
                self.ledger.audit,
                actor=actor,
                action=f"tokens.{kind.value}",
                target=email,
                before={"additional": additional - tokens},
                after={"additional": additional, "credited": tokens, "key": key},
                reason=reason,
            )
        return result

    async def change_user(
        self, email: str, changes: dict[str, Any], *, actor: str, action: str, reason: str = ""
    ) -> User:
        """Change a user's settings in the ledger (audited), then in Redis if loaded."""
        user = await asyncio.to_thread(
            self.ledger.update_user, email, changes, actor=actor, action=action, reason=reason
        )
        # If Redis is unreachable this raises after the ledger already holds the change; the next
        # load or `ledger rebuild` applies it there.
        await self.store.update_profile(email, self.ledger.effective(user).profile_fields())
        return user

    async def set_limit(self, email: str, tokens: int, *, actor: str, reason: str = "") -> User:
        tokens = require_tokens(tokens, "monthly limit", cap=self.settings.max_credit_tokens)
        return await self.change_user(
            email, {"monthly_limit": tokens}, actor=actor, action="user.set_limit", reason=reason
        )

    # --- X3: rebuild and reconcile ------------------------------------------------------------

    async def rebuild(self, email: str) -> bool:
        """Set (never add) the user's counters from the ledger plus undrained stream entries."""
        user = await asyncio.to_thread(self.ledger.require_user, email)
        return await self._load(email, user, force=True)

    async def reconcile(self, email: str) -> Drift:
        """Compare Redis with what the ledger says Redis should hold."""
        user = await asyncio.to_thread(self.ledger.require_user, email)
        period = Period.of(self.clock())
        for _ in range(_LOAD_ATTEMPTS):
            before = await self.store.counters(email, period.name)
            pending = await self.store.pending_events(email)
            state = await asyncio.to_thread(self.ledger.profile_state, user, period, pending)
            after = await self.store.counters(email, period.name)
            if before is None or after is None:
                return Drift(email, 0, 0, 0, 0)  # not loaded: it will be loaded from the ledger
            if before.seq == after.seq:
                return Drift(
                    email,
                    used=after.used - state.period_used,
                    additional=after.additional - state.additional,
                    requests=after.requests - state.period_requests,
                    limit=after.limit - state.limit,
                )
        raise ConcurrentChange(f"{email} kept changing during reconcile")

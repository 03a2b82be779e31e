"""The counter store interface the quota core talks to, and the values it exchanges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from solaris_tokens.domain import AlertKind, CreditKind, ReleaseOutcome


@dataclass(frozen=True, slots=True)
class ProfileState:
    """Everything needed to (re)build a user's counters, computed from the ledger."""

    limit: int
    additional: int
    status: str
    suspended_until_ms: int
    suspend_reason: str
    plan: str
    warning_percent: int
    urgent_percent: int
    period_used: int = 0
    period_requests: int = 0
    alerts_fired: tuple[AlertKind, ...] = ()
    credit_keys: tuple[str, ...] = ()
    settled_ids: tuple[tuple[str, int], ...] = ()  # (reservation id, settled ms): the duplicate guard

    def profile_fields(self) -> dict[str, str | int]:
        return {
            "limit": self.limit,
            "additional": self.additional,
            "status": self.status,
            "suspended_until": self.suspended_until_ms,
            "suspend_reason": self.suspend_reason,
            "plan": self.plan,
            "warning": self.warning_percent,
            "urgent": self.urgent_percent,
        }


@dataclass(frozen=True, slots=True)
class StoredCounters:
    """A user's counters as Redis holds them now (None when not loaded)."""

    limit: int
    additional: int
    reserved: int
    used: int
    requests: int
    status: str
    suspended_until_ms: int
    suspend_reason: str
    plan: str
    warning_percent: int
    urgent_percent: int
    seq: int
    alerts_fired: tuple[AlertKind, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One entry of a ledger stream, as the Lua scripts wrote it."""

    stream: str
    entry_id: str
    fields: dict[str, str] = field(default_factory=dict)


class RawReserve(NamedTuple):
    """The reserve script's reply. A named tuple, not a frozen dataclass: built on every request,
    and a frozen dataclass's __init__ costs three times as much (0.86 µs against 0.28 for 7 fields)."""

    verdict: str
    used: int = 0
    limit: int = 0
    additional: int = 0
    reserved: int = 0
    suspended_until_ms: int = 0
    suspend_reason: str = ""


class RawSettle(NamedTuple):
    """The settle script's reply (a named tuple for the same reason)."""

    outcome: str
    monthly: int = 0
    additional_part: int = 0
    used: int = 0
    limit: int = 0
    additional: int = 0
    alerts: tuple[AlertKind, ...] = ()


class CounterStore(Protocol):
    """Atomic per-user operations; each is one Lua script on Redis."""

    async def reserve(
        self, email: str, *, now_ms: int, period: str, reservation_id: str, estimate: int, expires_ms: int
    ) -> RawReserve: ...

    async def settle(
        self,
        email: str,
        *,
        now_ms: int,
        period: str,
        reservation_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        payload: str,
    ) -> RawSettle: ...

    async def release(self, email: str, reservation_id: str) -> tuple[ReleaseOutcome, int]: ...

    async def credit(
        self, email: str, *, key: str, tokens: int, kind: CreditKind, actor: str, reason: str, now_ms: int
    ) -> tuple[str, int]: ...

    async def load(self, email: str, state: ProfileState, *, period: str, force_seq: int | None = None) -> int: ...

    async def update_profile(self, email: str, fields: dict[str, str | int]) -> bool: ...

    async def counters(self, email: str, period: str) -> StoredCounters | None: ...

    async def pending_events(self, email: str) -> list[LedgerEvent]: ...

    async def read_events(self, consumer: str, count: int) -> list[LedgerEvent]: ...

    async def ack_events(self, events: list[LedgerEvent]) -> None: ...

    async def revert_usage(self, events: list[LedgerEvent], now_ms: int) -> int: ...

    async def forget_user(self, email: str) -> None: ...

    async def ping(self) -> bool: ...

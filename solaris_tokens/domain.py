"""Enums and frozen value objects shared by every layer; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def by_value(kind: type[E]) -> dict[str, E]:
    """{value: member}: script replies become members by a dictionary lookup, about 20 times
    cheaper than calling the enum class, which the request path would do on every reply."""
    return {member.value: member for member in kind}


class UserStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Verdict(StrEnum):
    """What the authorization step decided for one request."""

    ADMITTED = "admitted"
    EXHAUSTED = "exhausted"
    SUSPENDED = "suspended"


class SettleOutcome(StrEnum):
    SETTLED = "settled"
    LATE = "late"  # the reservation had already expired; the real usage is debited anyway
    DUPLICATE = "duplicate"


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    UNKNOWN = "unknown"  # never reserved, already settled/released, or expired


class CreditKind(StrEnum):
    PURCHASE = "purchase"
    BONUS = "bonus"
    COMPENSATION = "compensation"
    ADJUSTMENT = "adjustment"


class CreditOutcome(StrEnum):
    CREDITED = "credited"
    DUPLICATE = "duplicate"


class AlertKind(StrEnum):
    """Quota alerts, each sent at most once per user and period."""

    WARNING = "warning"  # first threshold (80% on basic, 90% on power)
    URGENT = "urgent"  # second threshold (95% / 98%)
    BLOCKED = "blocked"  # first rejected request of the period


class LedgerEventType(StrEnum):
    """Kinds of entry the Lua scripts append to the ledger stream."""

    USAGE = "usage"
    CREDIT = "credit"
    EXPIRED = "expired"
    ALERT = "alert"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A user's counters at one instant. All token figures are integers."""

    used: int
    limit: int
    additional: int
    reserved: int
    period: str
    next_reset: datetime

    @property
    def available(self) -> int:
        return self.limit - self.used - self.reserved + self.additional


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reservation_id: str
    estimate: int
    snapshot: Snapshot
    suspended_until: datetime | None = None
    suspend_reason: str = ""

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMITTED


@dataclass(frozen=True, slots=True)
class CallDetails:
    """The usage-history fields of a finished call, apart from its token counts."""

    model: str = ""
    call_id: str = ""
    started_ms: int | None = None  # epoch milliseconds, the unit of the ledger stream
    latency_ms: int | None = None


NO_CALL_DETAILS = CallDetails()


@dataclass(frozen=True, slots=True)
class Usage:
    """What one finished request really used, as reported by the provider."""

    prompt_tokens: int
    completion_tokens: int
    call: CallDetails = NO_CALL_DETAILS

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: SettleOutcome
    monthly_tokens: int = 0
    additional_tokens: int = 0
    used: int = 0
    limit: int = 0
    additional: int = 0
    alerts: tuple[AlertKind, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Credit:
    outcome: CreditOutcome
    amount: int
    additional: int

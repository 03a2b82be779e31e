"""Read models over the ledger for admins (SPEC M2, M6): statements, usage over time, the audit log.

Synchronous, like the repository; async callers use threads. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from solaris_tokens.domain import AlertKind
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import AuditEntry, CreditEntry, OutboxMessage, UsageEntry, User
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.policy import Period

_LIMIT_FIELDS = ("monthly_limit", "plan")


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"

    def floor(self, moment: datetime) -> datetime:
        if self is Granularity.HOUR:
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self is Granularity.HOUR else timedelta(days=1)


class LineKind(StrEnum):
    USAGE = "usage"  # a settled request: a debit
    CREDIT = "credit"  # additional tokens (purchase, bonus, compensation, adjustment)
    LIMIT = "limit"  # the monthly limit changed (set-limit, set-plan)


def _ts(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One movement of a user's balance, with the running figures after it."""

    at: datetime
    kind: LineKind
    tokens: int  # signed effect on the balance: debits < 0, credits > 0, limit changes either way
    monthly: int  # tokens of a request taken from the monthly allowance
    additional: int  # signed change of the additional pool (a request's share < 0, a credit > 0)
    used: int  # monthly use so far
    limit: int  # monthly limit in force
    additional_balance: int  # additional tokens held
    balance: int  # available = limit − used + additional_balance
    reference: str = ""  # reservation id, credit key or audit entry id
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    call_id: str = ""
    credit_kind: str = ""
    actor: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _ts(self.at)
        data["kind"] = self.kind.value
        return data


@dataclass(frozen=True, slots=True)
class Statement:
    """A user's ledger for one month. Its closing figures are the account's (less open reservations)."""

    email: str
    period: str
    opening_limit: int
    opening_additional: int
    lines: tuple[StatementLine, ...] = field(default_factory=tuple)

    def _sum(self, kind: LineKind, attr: str) -> int:
        return sum(int(getattr(line, attr)) for line in self.lines if line.kind is kind)

    @property
    def requests(self) -> int:
        return sum(1 for line in self.lines if line.kind is LineKind.USAGE)

    @property
    def used(self) -> int:
        return self._sum(LineKind.USAGE, "monthly")

    @property
    def debited_additional(self) -> int:
        return -self._sum(LineKind.USAGE, "additional")

    @property
    def credited(self) -> int:
        return self._sum(LineKind.CREDIT, "additional")

    @property
    def limit(self) -> int:
        return self.lines[-1].limit if self.lines else self.opening_limit

    @property
    def additional(self) -> int:
        return self.opening_additional + self.credited - self.debited_additional

    @property
    def balance(self) -> int:
        return self.limit - self.used + self.additional

    def totals(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "used": self.used,
            "debited_additional": self.debited_additional,
            "credited": self.credited,
            "limit": self.limit,
            "additional": self.additional,
            "balance": self.balance,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "period": self.period,
            "opening": {
                "limit": self.opening_limit,
                "additional": self.opening_additional,
                "balance": self.opening_limit + self.opening_additional,
            },
            "lines": [line.as_dict() for line in self.lines],
            "totals": self.totals(),
        }


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One settled request, for the requests log."""

    at: datetime
    model: str
    prompt_tokens: int
    completion_tokens: int
    monthly: int
    additional: int
    reservation_id: str
    call_id: str
    outcome: str
    latency_ms: int | None

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _ts(self.at)
        data["total"] = self.total
        return data


@dataclass(frozen=True, slots=True)
class UsageBucket:
    start: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": _ts(self.start),
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total": self.total,
        }


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _ts(self.at)
        return data


@dataclass(frozen=True, slots=True)
class AlertView:
    """A quota alert email (warning / urgent / blocked) and where its delivery stands."""

    at: datetime
    recipient: str
    kind: str
    period: str
    status: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _ts(self.at)
        return data


class LedgerQueries:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # --- users ----------------------------------------------------------------------------------

    def user_emails(self, *, plan: str | None = None) -> list[str]:
        with self.ledger.session() as s:
            stmt = select(User.email).order_by(col(User.email))
            if plan:
                stmt = stmt.where(User.plan == plan)
            return list(s.exec(stmt).all())

    def recent_usage(self, email: str, count: int = 10) -> list[UsageLine]:
        user = self.ledger.require_user(email)
        with self.ledger.session() as s:
            rows = s.exec(
                select(UsageEntry)
                .where(UsageEntry.user_id == user.id)
                .order_by(col(UsageEntry.settled_at).desc(), col(UsageEntry.id).desc())
                .limit(count)
            ).all()
        return [_usage_line(row) for row in rows]

    # --- the statement ----------------------------------------------------------------------------

    def statement(self, email: str, period: Period) -> Statement:
        """Every debit and credit of `period` in order, with running balance (SPEC M2)."""
        user = self.ledger.require_user(email)
        start, end = period.start, period.end
        with self.ledger.session() as s:
            usage = s.exec(
                select(UsageEntry)
                .where(UsageEntry.user_id == user.id, UsageEntry.period == period.name)
                .order_by(col(UsageEntry.settled_at), col(UsageEntry.id))
            ).all()
            credits = s.exec(
                select(CreditEntry)
                .where(
                    CreditEntry.user_id == user.id,
                    col(CreditEntry.created_at) >= start,
                    col(CreditEntry.created_at) < end,
                )
                .order_by(col(CreditEntry.created_at), col(CreditEntry.id))
            ).all()
            credited_before = s.exec(
                select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                    CreditEntry.user_id == user.id, col(CreditEntry.created_at) < start
                )
            ).one()
            spent_before = s.exec(
                select(func.coalesce(func.sum(UsageEntry.additional_tokens), 0)).where(
                    UsageEntry.user_id == user.id, col(UsageEntry.period) < period.name
                )
            ).one()
            audits = s.exec(
                select(AuditEntry)
                .where(AuditEntry.target == email, col(AuditEntry.at) >= start)
                .order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
            ).all()
        opening_limit, limit_changes = self._limit_history(user, audits, end)

        # (at, order within the same instant, id, line builder input)
        events: list[tuple[datetime, int, int, Any]] = []
        events += [(as_utc(a.at) or start, 0, a.id or 0, (a, old, new)) for a, old, new in limit_changes]
        events += [(as_utc(c.created_at) or start, 1, c.id or 0, c) for c in credits]
        events += [(as_utc(u.settled_at) or start, 2, u.id or 0, u) for u in usage]
        events.sort(key=lambda e: (e[0], e[1], e[2]))

        opening_additional = int(credited_before) - int(spent_before)
        running = _Running(limit=opening_limit, additional=opening_additional)
        lines: list[StatementLine] = []
        for at, order, _, item in events:
            if order == 0:
                lines.append(running.limit_change(at, *item))
            elif order == 1:
                lines.append(running.credit(at, item))
            else:
                lines.append(running.usage(at, item))
        return Statement(
            email=email,
            period=period.name,
            opening_limit=opening_limit,
            opening_additional=opening_additional,
            lines=tuple(lines),
        )

    def _limit_history(
        self, user: User, audits: Sequence[AuditEntry], end: datetime
    ) -> tuple[int, list[tuple[AuditEntry, int, int]]]:
        """The limit in force at the period's start, and each change inside it (old, new).

        Walks the audit log backwards from the user's row as it is now, undoing every change of the
        limit override or the plan (their `before` values), so a plan change counts when it moves
        the effective limit.
        """
        state: dict[str, Any] = {"monthly_limit": user.monthly_limit, "plan": user.plan}

        def effective() -> int:
            if state["monthly_limit"] is not None:
                return int(state["monthly_limit"])
            return self.ledger.settings.plan(state["plan"]).monthly_limit

        changes: list[tuple[AuditEntry, int, int]] = []
        for entry in audits:
            before = _json(entry.before)
            if not isinstance(before, dict) or not any(k in before for k in _LIMIT_FIELDS):
                continue
            new = effective()
            for key in _LIMIT_FIELDS:
                if key in before:
                    state[key] = before[key]
            old = effective()
            if (as_utc(entry.at) or end) < end and old != new:
                changes.append((entry, old, new))
        changes.reverse()
        return effective(), changes

    # --- usage over time --------------------------------------------------------------------------

    def usage_buckets(self, email: str, *, by: Granularity, start: datetime, end: datetime) -> list[UsageBucket]:
        """Requests and tokens per hour or day in [start, end); empty buckets are left out."""
        user = self.ledger.require_user(email)
        with self.ledger.session() as s:
            rows = s.exec(
                select(UsageEntry.settled_at, UsageEntry.prompt_tokens, UsageEntry.completion_tokens).where(
                    UsageEntry.user_id == user.id,
                    col(UsageEntry.settled_at) >= start,
                    col(UsageEntry.settled_at) < end,
                )
            ).all()
        buckets: dict[datetime, list[int]] = {}
        for settled_at, prompt, completion in rows:
            key = by.floor(as_utc(settled_at) or start)
            acc = buckets.setdefault(key, [0, 0, 0])
            acc[0] += 1
            acc[1] += int(prompt)
            acc[2] += int(completion)
        return [UsageBucket(key, *buckets[key]) for key in sorted(buckets)]

    def recent_alerts(self, limit: int = 10) -> list[AlertView]:
        with self.ledger.session() as s:
            rows = s.exec(
                select(OutboxMessage)
                .where(col(OutboxMessage.kind).in_([a.value for a in AlertKind]))
                .order_by(col(OutboxMessage.created_at).desc(), col(OutboxMessage.id).desc())
                .limit(limit)
            ).all()
        return [
            AlertView(as_utc(r.created_at) or r.created_at, r.recipient, r.kind, r.dedupe_key, r.status) for r in rows
        ]

    def database_ok(self) -> bool:
        try:
            with self.ledger.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    # --- the audit log ----------------------------------------------------------------------------

    def audit(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditView]:
        """Newest first. `action` matches a prefix: `purchase.` lists every purchase decision."""
        stmt = select(AuditEntry)
        if target:
            stmt = stmt.where(AuditEntry.target == target)
        if actor:
            stmt = stmt.where(AuditEntry.actor == actor)
        if action:
            stmt = stmt.where(col(AuditEntry.action).startswith(action, autoescape=True))
        if since:
            stmt = stmt.where(col(AuditEntry.at) >= since)
        stmt = stmt.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
        with self.ledger.session() as s:
            rows = s.exec(stmt).all()
        return [
            AuditView(
                id=row.id or 0,
                at=as_utc(row.at) or row.at,
                actor=row.actor,
                action=row.action,
                target=row.target,
                before=_json(row.before),
                after=_json(row.after),
                reason=row.reason,
            )
            for row in rows
        ]


@dataclass(slots=True)
class _Running:
    """The running figures while a statement is built, one line at a time."""

    limit: int
    additional: int
    used: int = 0

    @property
    def balance(self) -> int:
        return self.limit - self.used + self.additional

    def limit_change(self, at: datetime, entry: AuditEntry, old: int, new: int) -> StatementLine:
        self.limit = new
        return StatementLine(
            at=at,
            kind=LineKind.LIMIT,
            tokens=new - old,
            monthly=0,
            additional=0,
            used=self.used,
            limit=self.limit,
            additional_balance=self.additional,
            balance=self.balance,
            reference=f"audit:{entry.id}",
            credit_kind=entry.action,
            actor=entry.actor,
            reason=entry.reason,
        )

    def credit(self, at: datetime, entry: CreditEntry) -> StatementLine:
        self.additional += entry.amount
        return StatementLine(
            at=at,
            kind=LineKind.CREDIT,
            tokens=entry.amount,
            monthly=0,
            additional=entry.amount,
            used=self.used,
            limit=self.limit,
            additional_balance=self.additional,
            balance=self.balance,
            reference=entry.idempotency_key,
            credit_kind=entry.kind,
            actor=entry.actor,
            reason=entry.reason,
        )

    def usage(self, at: datetime, entry: UsageEntry) -> StatementLine:
        self.used += entry.monthly_tokens
        self.additional -= entry.additional_tokens
        return StatementLine(
            at=at,
            kind=LineKind.USAGE,
            tokens=-(entry.prompt_tokens + entry.completion_tokens),
            monthly=entry.monthly_tokens,
            additional=-entry.additional_tokens,
            used=self.used,
            limit=self.limit,
            additional_balance=self.additional,
            balance=self.balance,
            reference=entry.reservation_id,
            model=entry.model,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            call_id=entry.call_id,
        )


def _usage_line(row: UsageEntry) -> UsageLine:
    return UsageLine(
        at=as_utc(row.settled_at) or row.settled_at,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        monthly=row.monthly_tokens,
        additional=row.additional_tokens,
        reservation_id=row.reservation_id,
        call_id=row.call_id,
        outcome=row.outcome,
        latency_ms=row.latency_ms,
    )

"""Admin operations the CLI (and later the web dashboard) delegate to (SPEC M1–M6, X4).

Every action goes through the quota core (`QuotaService.change_user`, `credit`), so it is in the
ledger, in the audit log with before/after values, and in Redis at once: a suspension is enforced
by the next reservation, and a suspension with an end lifts itself at that instant (the reserve
script compares `suspended_until` with the request's clock), with no job.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from solaris_tokens.clock import iso_z
from solaris_tokens.domain import Credit, CreditKind, UserStatus
from solaris_tokens.errors import InvalidInput
from solaris_tokens.ledger.flusher import LedgerFlusher
from solaris_tokens.ledger.queries import (
    AlertView,
    AuditView,
    Granularity,
    LedgerQueries,
    Statement,
    UsageBucket,
    UsageLine,
)
from solaris_tokens.notify.formatting import brl as format_brl
from solaris_tokens.notify.formatting import tokens as format_tokens
from solaris_tokens.policy import Period
from solaris_tokens.quota import Account, QuotaService

MAX_REASON = 500  # users.suspend_reason is VARCHAR(500)
MAX_TEXT = 5000
_ACCOUNT_READS = 16  # accounts read concurrently by `users list`


class EmailKind(StrEnum):
    """Outbox kinds written by purchase requests and admin actions (templates in notify/templates)."""

    PURCHASE_RECEIVED = "purchase_received"
    PURCHASE_ADMIN_NOTICE = "purchase_admin_notice"
    PURCHASE_CREDITED = "purchase_credited"
    PURCHASE_REJECTED = "purchase_rejected"
    USER_MESSAGE = "user_message"


class AuditAction(StrEnum):
    """Audit-log actions of admin operations (this module, purchases.py and the core's set_limit)."""

    USER_SUSPEND = "user.suspend"
    USER_RESUME = "user.resume"
    USER_SET_PLAN = "user.set_plan"
    USER_SET_LIMIT = "user.set_limit"
    USER_MESSAGE = "user.message"
    PURCHASE_REQUESTED = "purchase.requested"
    PURCHASE_APPROVED = "purchase.approved"
    PURCHASE_REJECTED = "purchase.rejected"


class MessageTemplate(StrEnum):
    """The messages an admin can send with `users message --template` (texts in user_message.*)."""

    BALANCE = "balance"  # the user's current balance and next reset
    LIMIT_CHANGED = "limit_changed"  # the monthly limit was adjusted
    SUSPENDED = "suspended"  # access suspended: reason and until when
    RESUMED = "resumed"  # access restored
    CONTACT = "contact"  # the team wants to talk to the user (text required)
    CUSTOM = "custom"  # free subject and text


__all__ = [
    "AdminService",
    "AuditAction",
    "EmailKind",
    "Granted",
    "MessageTemplate",
    "Overview",
    "balance_payload",
    "format_brl",  # re-exported from notify.formatting for purchases.py and the CLI
    "format_tokens",
    "normalize_email",
    "parse_instant",
    "percent_used",
    "require_text",
]

# --- small pure helpers shared with purchases.py and the CLI -------------------------------------


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise InvalidInput(f"not a valid email address: {email!r}")
    return email


def require_text(value: str, what: str, *, limit: int = MAX_TEXT) -> str:
    value = value.strip()
    if not value:
        raise InvalidInput(f"{what} is required")
    if len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    return value


def percent_used(account: Account) -> float:
    """Share of the monthly allowance used, for display (alerts use integer comparisons)."""
    return round(account.used * 100 / account.limit, 1) if account.limit > 0 else 0.0


def balance_payload(account: Account) -> dict[str, Any]:
    """The balance figures a user email may show (integers; instants as ISO strings)."""
    return {
        "email": account.email,
        "name": account.name,
        "plan": account.plan,
        "used": account.used,
        "limit": account.limit,
        "additional": account.additional,
        "available": account.available,
        "period": account.period,
        "next_reset": iso_z(account.next_reset),
    }


@dataclass(frozen=True, slots=True)
class Granted:
    """The result of a bonus or compensation credit."""

    credit: Credit
    account: Account
    key: str
    kind: CreditKind

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.credit.outcome.value,
            "kind": self.kind.value,
            "tokens": self.credit.amount,
            "key": self.key,
            "account": self.account.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class Overview:
    """What needs an admin's eye now (SPEC M4): who is near or past their limit, alerts, the queue, health."""

    users: int
    suspended: int
    near_limit: tuple[Account, ...]  # at or past their first alert threshold, most used first
    exhausted: int  # nothing available
    pending_requests: int
    recent_alerts: tuple[AlertView, ...]
    redis_ok: bool
    database_ok: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "suspended": self.suspended,
            "exhausted": self.exhausted,
            "near_limit": [{**a.as_dict(), "percent": percent_used(a)} for a in self.near_limit],
            "pending_requests": self.pending_requests,
            "recent_alerts": [a.as_dict() for a in self.recent_alerts],
            "health": {"redis": self.redis_ok, "database": self.database_ok},
        }


class AdminService:
    """Thin orchestration over QuotaService and the ledger; every write is audited."""

    def __init__(self, quota: QuotaService, flusher: LedgerFlusher | None = None) -> None:
        self.quota = quota
        self.flusher = flusher
        self.ledger = quota.ledger
        self.settings = quota.settings
        self.clock = quota.clock
        self.queries = LedgerQueries(quota.ledger)

    # --- profile changes (M1) -----------------------------------------------------------------

    async def suspend(self, email: str, *, reason: str, until: datetime | None, actor: str) -> Account:
        """Suspend now; with `until`, the suspension lapses by itself at that instant."""
        email = normalize_email(email)
        reason = require_text(reason, "a reason", limit=MAX_REASON)
        if until is not None:
            if until.tzinfo is None:
                raise InvalidInput("the end of a suspension must carry a timezone (e.g. 2026-11-20T18:00:00Z)")
            until = until.astimezone(UTC)
            if until <= self.clock():
                raise InvalidInput(f"the end of the suspension ({iso_z(until)}) is not in the future")
        changes = {"status": UserStatus.SUSPENDED.value, "suspended_until": until, "suspend_reason": reason}
        await self.quota.change_user(email, changes, actor=actor, action=AuditAction.USER_SUSPEND, reason=reason)
        return await self.quota.account(email)

    async def resume(self, email: str, *, actor: str, reason: str = "") -> Account:
        email = normalize_email(email)
        changes = {"status": UserStatus.ACTIVE.value, "suspended_until": None, "suspend_reason": ""}
        await self.quota.change_user(email, changes, actor=actor, action=AuditAction.USER_RESUME, reason=reason)
        return await self.quota.account(email)

    async def set_plan(self, email: str, plan: str, *, actor: str, reason: str = "") -> Account:
        email = normalize_email(email)
        if plan not in self.settings.plans:
            raise InvalidInput(f"unknown plan {plan!r}; known plans: {', '.join(sorted(self.settings.plans))}")
        await self.quota.change_user(
            email, {"plan": plan}, actor=actor, action=AuditAction.USER_SET_PLAN, reason=reason
        )
        return await self.quota.account(email)

    async def set_limit(self, email: str, tokens: int, *, actor: str, reason: str = "") -> Account:
        email = normalize_email(email)
        await self.quota.set_limit(email, tokens, actor=actor, reason=reason)
        return await self.quota.account(email)

    # --- credits (M1 bonus, M5/X4 compensation) -----------------------------------------------

    async def grant(
        self,
        email: str,
        tokens: int,
        kind: CreditKind,
        *,
        reason: str,
        actor: str,
        key: str | None = None,
        notify: bool = True,
    ) -> Granted:
        """Credit additional tokens that never expire; `key` makes a scripted run safe to repeat."""
        if kind is CreditKind.PURCHASE:
            raise InvalidInput("purchases are credited by approving a purchase request")
        email = normalize_email(email)
        reason = require_text(reason, "a reason")
        key = key.strip() if key else f"{kind.value}:{uuid.uuid4().hex}"
        credit = await self.quota.credit(email, tokens, kind, key=key, actor=actor, reason=reason)
        account = await self.quota.account(email)
        if notify:
            # Enqueued on a repeat too: the outbox key makes it once, and a crash before it heals.
            await asyncio.to_thread(self._enqueue_credited, account, tokens, kind, key, reason)
        return Granted(credit, account, key, kind)

    def _enqueue_credited(self, account: Account, tokens: int, kind: CreditKind, key: str, reason: str) -> None:
        user = self.ledger.require_user(account.email)
        payload = {
            **balance_payload(account),
            "credit_kind": kind.value,
            "tokens": tokens,
            "balance": account.available,
            "reason": reason,
            "ticket": None,
        }
        self.ledger.enqueue_email(
            recipient=account.email, kind=EmailKind.PURCHASE_CREDITED, dedupe_key=key, payload=payload, user_id=user.id
        )

    # --- templated messages (M1) --------------------------------------------------------------

    async def message(
        self,
        email: str,
        template: MessageTemplate,
        *,
        actor: str,
        subject: str = "",
        text: str = "",
        key: str | None = None,
    ) -> bool:
        """Put a `user_message` email in the outbox; True if new (False: that key was already sent)."""
        email = normalize_email(email)
        subject, text = subject.strip(), text.strip()
        if template is MessageTemplate.CUSTOM:
            subject = require_text(subject, "a subject (--subject)", limit=200)
        if template in (MessageTemplate.CUSTOM, MessageTemplate.CONTACT):
            text = require_text(text, "a text (--text)")
        if len(text) > MAX_TEXT:
            raise InvalidInput(f"the text is longer than {MAX_TEXT} characters")
        account = await self.quota.account(email)
        suspended = account.status is UserStatus.SUSPENDED
        if template is MessageTemplate.SUSPENDED and not suspended:
            raise InvalidInput(f"{email} is not suspended; suspend first (users suspend)")
        if template is MessageTemplate.RESUMED and suspended:
            raise InvalidInput(f"{email} is still suspended; resume first (users resume)")
        key = key.strip() if key else f"message:{uuid.uuid4().hex}"
        payload = {
            **balance_payload(account),
            "template": template.value,
            "subject": subject,
            "text": text,
            "status": account.status.value,
            "suspended_until": iso_z(account.suspended_until) if account.suspended_until else None,
            "suspend_reason": account.suspend_reason,
        }
        return await asyncio.to_thread(self._enqueue_message, account, payload, key, actor)

    def _enqueue_message(self, account: Account, payload: dict[str, Any], key: str, actor: str) -> bool:
        user = self.ledger.require_user(account.email)
        created = self.ledger.enqueue_email(
            recipient=account.email, kind=EmailKind.USER_MESSAGE, dedupe_key=key, payload=payload, user_id=user.id
        )
        if created:
            self.ledger.audit(
                actor=actor,
                action=AuditAction.USER_MESSAGE,
                target=account.email,
                after={"template": payload["template"], "subject": payload["subject"], "key": key},
                reason=str(payload["text"]),
            )
        return created

    # --- reading (M2, M4, M6) -----------------------------------------------------------------

    async def accounts(
        self, *, plan: str | None = None, status: UserStatus | None = None, near_limit: float | None = None
    ) -> list[Account]:
        """Every user's account (counters loaded on demand), most used share first."""
        emails = await asyncio.to_thread(self.queries.user_emails, plan=plan)
        gate = asyncio.Semaphore(_ACCOUNT_READS)

        async def read(email: str) -> Account:
            async with gate:
                return await self.quota.account(email)

        accounts = await asyncio.gather(*(read(email) for email in emails))
        out = [
            a
            for a in accounts
            if (status is None or a.status is status) and (near_limit is None or percent_used(a) >= near_limit)
        ]
        out.sort(key=lambda a: (-percent_used(a), a.email))
        return out

    async def overview(self, *, pending_requests: int, alerts: int = 10) -> Overview:
        """Users near or past their limit, recent alerts and the health of both stores."""
        redis_ok = await self.quota.store.ping()
        database_ok = await asyncio.to_thread(self.queries.database_ok)
        accounts = await self.accounts() if redis_ok and database_ok else []
        near = tuple(a for a in accounts if percent_used(a) >= a.warning_percent or a.available <= 0)
        recent = await asyncio.to_thread(self.queries.recent_alerts, alerts) if database_ok else []
        return Overview(
            users=len(accounts),
            suspended=sum(a.status is UserStatus.SUSPENDED for a in accounts),
            near_limit=near,
            exhausted=sum(a.available <= 0 for a in accounts),
            pending_requests=pending_requests,
            recent_alerts=tuple(recent),
            redis_ok=redis_ok,
            database_ok=database_ok,
        )

    async def profile(self, email: str, *, recent: int = 10) -> tuple[Account, list[UsageLine]]:
        """The account with its most recent requests (ledger written up to now first)."""
        email = normalize_email(email)
        account = await self.quota.account(email)
        await self.drain()
        lines = await asyncio.to_thread(self.queries.recent_usage, email, recent)
        return account, lines

    async def statement(self, email: str, period: Period | None = None) -> tuple[Statement, Account]:
        """The ledger of one month, line by line, and the live account it must agree with."""
        email = normalize_email(email)
        period = period or Period.of(self.clock())
        await self.drain()
        account = await self.quota.account(email)
        statement = await asyncio.to_thread(self.queries.statement, email, period)
        return statement, account

    async def usage(self, email: str, *, by: Granularity, start: datetime, end: datetime) -> list[UsageBucket]:
        email = normalize_email(email)
        await asyncio.to_thread(self.ledger.require_user, email)
        await self.drain()
        return await asyncio.to_thread(self.queries.usage_buckets, email, by=by, start=start, end=end)

    async def audit_log(
        self,
        *,
        email: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditView]:
        target = normalize_email(email) if email else None
        return await asyncio.to_thread(
            self.queries.audit, target=target, actor=actor, action=action, since=since, limit=limit
        )

    async def drain(self) -> None:
        """Write the settled entries still waiting in Redis, so reads of the ledger are complete."""
        if self.flusher is not None:
            await self.flusher.drain()


_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str, *, now: datetime, relative_sign: int = 1) -> datetime:
    """An instant typed by an admin: ISO date or date-time (UTC unless it carries an offset), or a
    duration such as `24h`, `7d`, `2w` counted from `now` (forward for `--until`, back for `--since`)."""
    raw = text.strip()
    match = _RELATIVE.match(raw.lower())
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return now + relative_sign * timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"not a date/time: {text!r} (use e.g. 2026-11-20T18:00:00Z, 2026-11-20, 24h or 7d)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

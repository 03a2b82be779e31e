"""Manual purchase requests (SPEC P2, P3): request → review → credit, exactly once.

Approval is a conditional transition (pending → approved) in SQL, then the core's idempotent credit
with the key `purchase-request:<id>`. A second approval, a concurrent one, or a retry after a crash
between the two steps therefore credits once, and a rejection cannot slip in after a credit. Emails
go to the outbox keyed by the same string, so each is enqueued once however often a step repeats.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from solaris_tokens.admin import (
    AuditAction,
    EmailKind,
    balance_payload,
    format_brl,
    normalize_email,
    require_text,
)
from solaris_tokens.domain import CreditKind, CreditOutcome
from solaris_tokens.errors import InvalidInput, SolarisError
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import AuditEntry, User
from solaris_tokens.ledger.purchase_models import PurchaseRequest, PurchaseStatus, Urgency
from solaris_tokens.ledger.repository import json_text
from solaris_tokens.policy import require_tokens
from solaris_tokens.quota import Account, QuotaService

__all__ = [
    "Approval",
    "PurchaseConflict",
    "PurchaseService",
    "PurchaseStatus",
    "PurchaseView",
    "Quantity",
    "Rejection",
    "UnknownPurchase",
    "Urgency",
    "credit_key",
    "estimate_price_cents",
    "parse_tokens",
    "parse_urgency",
]


class UnknownPurchase(SolarisError, LookupError):
    """No purchase request with that number exists."""


class PurchaseConflict(SolarisError):
    """The request was already resolved the other way (approve a rejected one, or the reverse)."""


class Quantity(StrEnum):
    """The form's quantity choices (SPEC P2); anything else is custom."""

    K100 = "100k"
    K500 = "500k"
    M1 = "1M"
    M2 = "2M"
    CUSTOM = "custom"

    @classmethod
    def of(cls, tokens: int) -> Quantity:
        return _PRESETS.get(tokens, cls.CUSTOM)


_PRESETS = {100_000: Quantity.K100, 500_000: Quantity.K500, 1_000_000: Quantity.M1, 2_000_000: Quantity.M2}
_GROUPED = re.compile(r"^\d{1,3}(?:[._,]\d{3})+$")
_SCALED = re.compile(r"^(\d+(?:[.,]\d+)?)\s*([kKmM]?)$")
_UNACCENTED = {"media": Urgency.MEDIA, "critica": Urgency.CRITICA}


def parse_tokens(text: str) -> int:
    """A token quantity as people type it: 500k, 1M, 1,5M, 500.000, 500_000 or 750000."""
    raw = text.strip().replace(" ", "")
    if _GROUPED.match(raw):
        return int(re.sub(r"[._,]", "", raw))
    match = _SCALED.match(raw)
    if not match:
        raise InvalidInput(f"not a token quantity: {text!r} (try 100k, 500k, 1M, 2M or a whole number)")
    number, suffix = match.groups()
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[suffix.lower()]
    try:
        value = Decimal(number.replace(",", ".")) * scale
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise InvalidInput(f"not a token quantity: {text!r}") from exc
    if value != value.to_integral_value():
        raise InvalidInput(f"{text!r} is not a whole number of tokens")
    return int(value)


def parse_urgency(text: str) -> Urgency:
    """baixa / média / alta / crítica, with or without the accents."""
    word = text.strip().lower()
    try:
        return _UNACCENTED.get(word) or Urgency(word)
    except ValueError as exc:
        raise InvalidInput(f"urgency must be one of: {', '.join(u.value for u in Urgency)}") from exc


def estimate_price_cents(tokens: int, cents_per_1000: int) -> int:
    """Integer centavos, rounded half up: 500.000 tokens at 5 centavos per 1.000 = 2.500 (R$ 25,00)."""
    return (tokens * cents_per_1000 + 500) // 1000


def credit_key(request_id: int) -> str:
    return f"purchase-request:{request_id}"


@dataclass(frozen=True, slots=True)
class PurchaseView:
    """A purchase request with its user's email and name, as admins and emails see it."""

    id: int
    user_id: int
    email: str
    name: str
    tokens: int
    justification: str
    urgency: Urgency
    price_cents: int
    status: PurchaseStatus
    requested_by: str
    reviewer: str
    note: str
    created_at: datetime
    reviewed_at: datetime | None

    @property
    def ticket(self) -> str:
        return f"#{self.id}"

    @property
    def quantity(self) -> Quantity:
        return Quantity.of(self.tokens)

    @property
    def key(self) -> str:
        """The credit's idempotency key and the outbox dedupe key of this request's emails."""
        return credit_key(self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ticket": self.ticket,
            "email": self.email,
            "name": self.name,
            "tokens": self.tokens,
            "quantity": self.quantity.value,
            "justification": self.justification,
            "urgency": self.urgency.value,
            "price_cents": self.price_cents,
            "price": format_brl(self.price_cents),
            "status": self.status.value,
            "requested_by": self.requested_by,
            "reviewer": self.reviewer,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "reviewed_at": self.reviewed_at.isoformat() if self.reviewed_at else None,
        }

    def email_payload(self) -> dict[str, Any]:
        """Template variables shared by every email about this request."""
        return {
            "ticket": self.id,
            "email": self.email,
            "name": self.name,
            "tokens": self.tokens,
            "quantity": self.quantity.value,
            "price_cents": self.price_cents,
            "urgency": self.urgency.value,
            "urgency_label": self.urgency.label,
            "justification": self.justification,
        }


@dataclass(frozen=True, slots=True)
class Approval:
    request: PurchaseView
    newly_approved: bool  # False: it had been approved before; nothing was credited twice
    credit: CreditOutcome
    account: Account

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.as_dict(),
            "newly_approved": self.newly_approved,
            "credit": self.credit.value,
            "account": self.account.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    request: PurchaseView
    newly_rejected: bool

    def as_dict(self) -> dict[str, Any]:
        return {"request": self.request.as_dict(), "newly_rejected": self.newly_rejected}


class PurchaseService:
    def __init__(self, quota: QuotaService) -> None:
        self.quota = quota
        self.ledger = quota.ledger
        self.settings = quota.settings
        self.clock = quota.clock

    # --- P2: the request ------------------------------------------------------------------------

    async def create(
        self, email: str, tokens: int, justification: str, urgency: Urgency | str, *, actor: str
    ) -> PurchaseView:
        """Record a request (ticket #N), confirm it to the user and notify every admin."""
        email = normalize_email(email)
        tokens = require_tokens(tokens, "tokens", cap=self.settings.max_credit_tokens, allow_zero=False)
        justification = require_text(justification, "a justification")
        urgency = urgency if isinstance(urgency, Urgency) else parse_urgency(urgency)
        account = await self.quota.account(email)  # unknown users are refused before anything is written
        view = await asyncio.to_thread(self._insert, email, tokens, justification, urgency, actor)
        await asyncio.to_thread(self._notify_created, view, account)
        return view

    def _insert(self, email: str, tokens: int, justification: str, urgency: Urgency, actor: str) -> PurchaseView:
        now = self.clock()
        with self.ledger.session() as s:
            user = s.exec(select(User).where(User.email == email)).one()
            row = PurchaseRequest(
                user_id=user.id or 0,
                tokens=tokens,
                justification=justification,
                urgency=urgency.value,
                price_cents=estimate_price_cents(tokens, self.settings.price_cents_per_1000_tokens),
                status=PurchaseStatus.PENDING.value,
                requested_by=actor,
                created_at=now,
            )
            s.add(row)
            s.flush()
            s.add(
                AuditEntry(
                    at=now,
                    actor=actor,
                    action=AuditAction.PURCHASE_REQUESTED.value,
                    target=email,
                    after=json_text(
                        {"request": row.id, "tokens": tokens, "price_cents": row.price_cents, "urgency": urgency.value}
                    ),
                    reason=justification,
                )
            )
            s.commit()
            return _view(row, user)

    def _notify_created(self, view: PurchaseView, account: Account) -> None:
        base = view.email_payload()
        self.ledger.enqueue_email(
            recipient=view.email,
            kind=EmailKind.PURCHASE_RECEIVED,
            dedupe_key=view.key,
            payload=base,
            user_id=view.user_id,
        )
        notice = {
            **base,
            **{f"user_{k}": v for k, v in balance_payload(account).items() if k not in ("email", "name")},
            "price": format_brl(view.price_cents),
            "requested_by": view.requested_by,
            "created_at": view.created_at.isoformat(),
            "approve_command": f"solaris-tokens requests approve {view.id}",
            "reject_command": f'solaris-tokens requests reject {view.id} --reason "..."',
        }
        for admin in self.settings.admin_emails:
            self.ledger.enqueue_email(
                recipient=admin, kind=EmailKind.PURCHASE_ADMIN_NOTICE, dedupe_key=view.key, payload=notice
            )

    # --- P3: the review -------------------------------------------------------------------------

    async def approve(self, request_id: int, *, actor: str, note: str = "") -> Approval:
        """Approve and credit the tokens (once, however many times or concurrently this runs)."""
        note = note.strip()
        won, view = await asyncio.to_thread(self._resolve, request_id, PurchaseStatus.APPROVED, actor, note)
        if view.status is not PurchaseStatus.APPROVED:
            raise PurchaseConflict(f"purchase request {view.ticket} was already {view.status} by {view.reviewer}")
        reason = f"purchase request {view.ticket}" + (f": {view.note}" if view.note else "")
        credit = await self.quota.credit(
            view.email, view.tokens, CreditKind.PURCHASE, key=view.key, actor=view.reviewer, reason=reason
        )
        account = await self.quota.account(view.email)
        await asyncio.to_thread(self._notify_credited, view, account)
        return Approval(view, won, credit.outcome, account)

    def _notify_credited(self, view: PurchaseView, account: Account) -> None:
        payload = {
            **view.email_payload(),
            **balance_payload(account),
            "credit_kind": CreditKind.PURCHASE.value,
            "balance": account.available,
            "reason": "",
            "note": view.note,
        }
        self.ledger.enqueue_email(
            recipient=view.email,
            kind=EmailKind.PURCHASE_CREDITED,
            dedupe_key=view.key,
            payload=payload,
            user_id=view.user_id,
        )

    async def reject(self, request_id: int, *, actor: str, reason: str) -> Rejection:
        """Reject with a reason the user receives by email; nothing is credited."""
        reason = require_text(reason, "a reason")
        won, view = await asyncio.to_thread(self._resolve, request_id, PurchaseStatus.REJECTED, actor, reason)
        if view.status is not PurchaseStatus.REJECTED:
            raise PurchaseConflict(f"purchase request {view.ticket} was already {view.status} by {view.reviewer}")
        payload = {**view.email_payload(), "reason": view.note}
        await asyncio.to_thread(
            self.ledger.enqueue_email,
            recipient=view.email,
            kind=EmailKind.PURCHASE_REJECTED,
            dedupe_key=view.key,
            payload=payload,
            user_id=view.user_id,
        )
        return Rejection(view, won)

    def _resolve(self, request_id: int, status: PurchaseStatus, actor: str, note: str) -> tuple[bool, PurchaseView]:
        """pending → `status` if still pending (one winner under concurrency); the row as it is after."""
        now = self.clock()
        action = AuditAction.PURCHASE_APPROVED if status is PurchaseStatus.APPROVED else AuditAction.PURCHASE_REJECTED
        with self.ledger.session() as s:
            won = (
                s.execute(
                    update(PurchaseRequest)
                    .where(
                        col(PurchaseRequest.id) == request_id,
                        col(PurchaseRequest.status) == PurchaseStatus.PENDING.value,
                    )
                    .values(status=status.value, reviewer=actor, note=note, reviewed_at=now)
                    .returning(col(PurchaseRequest.id))
                ).first()
                is not None
            )
            row = s.exec(
                select(PurchaseRequest, User)
                .join(User, col(User.id) == PurchaseRequest.user_id)
                .where(PurchaseRequest.id == request_id)
                .execution_options(populate_existing=True)
            ).first()
            if row is None:
                raise UnknownPurchase(f"no purchase request #{request_id}")
            view = _view(*row)
            if won:
                s.add(
                    AuditEntry(
                        at=now,
                        actor=actor,
                        action=action.value,
                        target=view.email,
                        before=json_text({"request": request_id, "status": PurchaseStatus.PENDING.value}),
                        after=json_text({"request": request_id, "status": status.value, "tokens": view.tokens}),
                        reason=note,
                    )
                )
            s.commit()
        return won, view

    # --- reading (M3) -----------------------------------------------------------------------------

    async def get(self, request_id: int) -> PurchaseView:
        return await asyncio.to_thread(self._get, request_id)

    def _get(self, request_id: int) -> PurchaseView:
        with self.ledger.session() as s:
            row = s.exec(
                select(PurchaseRequest, User)
                .join(User, col(User.id) == PurchaseRequest.user_id)
                .where(PurchaseRequest.id == request_id)
            ).first()
        if row is None:
            raise UnknownPurchase(f"no purchase request #{request_id}")
        return _view(*row)

    async def list_requests(
        self, *, status: PurchaseStatus | None = None, email: str | None = None, limit: int = 100
    ) -> list[PurchaseView]:
        """Newest first; pending requests most urgent first, then oldest first (the review queue)."""
        return await asyncio.to_thread(self._list, status, normalize_email(email) if email else None, limit)

    def _list(self, status: PurchaseStatus | None, email: str | None, limit: int) -> list[PurchaseView]:
        stmt = select(PurchaseRequest, User).join(User, col(User.id) == PurchaseRequest.user_id)
        if status is not None:
            stmt = stmt.where(PurchaseRequest.status == status.value)
        if email:
            stmt = stmt.where(User.email == email)
        stmt = stmt.order_by(col(PurchaseRequest.created_at).desc(), col(PurchaseRequest.id).desc()).limit(limit)
        with self.ledger.session() as s:
            views = [_view(*row) for row in s.exec(stmt).all()]
        if status is PurchaseStatus.PENDING:
            views.sort(key=lambda v: (-v.urgency.rank, v.created_at, v.id))
        return views

    async def count(self, status: PurchaseStatus) -> int:
        return await asyncio.to_thread(self._count, status)

    def _count(self, status: PurchaseStatus) -> int:
        with self.ledger.session() as s:
            return int(
                s.exec(select(func.count(col(PurchaseRequest.id))).where(PurchaseRequest.status == status.value)).one()
            )

    async def credited(self, request_id: int) -> bool:
        """Whether the ledger holds this request's credit entry (after the flusher wrote it)."""
        return await asyncio.to_thread(self.ledger.has_credit, credit_key(request_id))


def _view(row: PurchaseRequest, user: User) -> PurchaseView:
    return PurchaseView(
        id=row.id or 0,
        user_id=user.id or 0,
        email=user.email,
        name=user.name,
        tokens=row.tokens,
        justification=row.justification,
        urgency=Urgency(row.urgency),
        price_cents=row.price_cents,
        status=PurchaseStatus(row.status),
        requested_by=row.requested_by,
        reviewer=row.reviewer,
        note=row.note,
        created_at=as_utc(row.created_at) or row.created_at,
        reviewed_at=as_utc(row.reviewed_at),
    )

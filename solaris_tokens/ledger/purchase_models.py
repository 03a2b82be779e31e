"""Purchase requests (SPEC P2, P3): the table, and the vocabulary its constraints enforce.

A request is created pending and resolved once (approved or rejected); the database refuses any
later change and any deletion (triggers in migration 0003), so the review trail cannot be rewritten.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text
from sqlmodel import Field, SQLModel

from solaris_tokens.clock import utc_now


class PurchaseStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class Urgency(StrEnum):
    """The form's urgency choices, stored as the pt-BR words of the spec."""

    BAIXA = "baixa"
    MEDIA = "média"
    ALTA = "alta"
    CRITICA = "crítica"

    @property
    def label(self) -> str:
        return self.value.capitalize()

    @property
    def rank(self) -> int:
        """Higher is more urgent: the order in which pending requests are listed."""
        return list(Urgency).index(self)


def _sql_in(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


STATUS_CHECK = f"status IN ({_sql_in([s.value for s in PurchaseStatus])})"
URGENCY_CHECK = f"urgency IN ({_sql_in([u.value for u in Urgency])})"
REVIEW_CHECK = "(status = 'pending' AND reviewed_at IS NULL) OR (status <> 'pending' AND reviewed_at IS NOT NULL)"
REASON_CHECK = "status <> 'rejected' OR length(note) > 0"


class PurchaseRequest(SQLModel, table=True):
    """One request for additional tokens; its id is the ticket number (#N) the user sees."""

    __tablename__ = "purchase_requests"
    __table_args__ = (
        CheckConstraint("tokens > 0", name="ck_purchase_tokens_positive"),
        CheckConstraint("price_cents >= 0", name="ck_purchase_price_nonneg"),
        CheckConstraint(STATUS_CHECK, name="ck_purchase_status"),
        CheckConstraint(URGENCY_CHECK, name="ck_purchase_urgency"),
        CheckConstraint(REVIEW_CHECK, name="ck_purchase_reviewed"),
        CheckConstraint(REASON_CHECK, name="ck_purchase_reject_reason"),
        Index("ix_purchase_status_created", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    tokens: int = Field(sa_type=BigInteger)
    justification: str = Field(sa_type=Text)
    urgency: str = Field(max_length=20)
    price_cents: int = Field(sa_type=BigInteger)
    status: str = Field(default=PurchaseStatus.PENDING.value, max_length=20)
    requested_by: str = Field(max_length=200)
    reviewer: str = Field(default="", max_length=200)
    note: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=utc_now, sa_type=DateTime(timezone=True), nullable=False)
    reviewed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

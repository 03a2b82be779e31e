"""SQLModel tables. Token amounts are BIGINT; invariants are CHECK/UNIQUE constraints in the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from solaris_tokens.clock import utc_now


def _ts(*, nullable: bool = False, index: bool = False) -> datetime:
    return Field(default_factory=utc_now, sa_type=DateTime(timezone=True), nullable=nullable, index=index)  # type: ignore[no-any-return]


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("monthly_limit IS NULL OR monthly_limit >= 0", name="ck_users_limit_nonneg"),
        CheckConstraint("status IN ('active', 'suspended')", name="ck_users_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True, index=True)
    name: str = Field(max_length=200)
    plan: str = Field(default="basic", max_length=40)
    monthly_limit: int | None = Field(default=None, sa_type=BigInteger)
    warning_percent: int | None = None
    urgent_percent: int | None = None
    status: str = Field(default="active", max_length=20)
    suspended_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    suspend_reason: str = Field(default="", max_length=500)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class UsageEntry(SQLModel, table=True):
    """One settled request; the reservation id (ours, never the client's) makes it unique."""

    __tablename__ = "usage_entries"
    __table_args__ = (
        CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND monthly_tokens >= 0 AND additional_tokens >= 0",
            name="ck_usage_nonneg",
        ),
        CheckConstraint(
            "monthly_tokens + additional_tokens = prompt_tokens + completion_tokens", name="ck_usage_split"
        ),
        Index("ix_usage_user_period", "user_id", "period"),
    )

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id")
    call_id: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)
    prompt_tokens: int = Field(sa_type=BigInteger)
    completion_tokens: int = Field(sa_type=BigInteger)
    monthly_tokens: int = Field(sa_type=BigInteger)
    additional_tokens: int = Field(sa_type=BigInteger)
    period: str = Field(max_length=7)
    outcome: str = Field(default="settled", max_length=20)
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    settled_at: datetime = _ts(index=True)
    latency_ms: int | None = None


class CreditEntry(SQLModel, table=True):
    """Additional tokens given to a user; the idempotency key makes each credit happen once."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_credit_positive"),
        CheckConstraint("kind IN ('purchase', 'bonus', 'compensation', 'adjustment')", name="ck_credit_kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    kind: str = Field(max_length=20)
    amount: int = Field(sa_type=BigInteger)
    idempotency_key: str = Field(max_length=200, unique=True)
    actor: str = Field(default="system", max_length=200)
    reason: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()


class AuditEntry(SQLModel, table=True):
    """Append-only record of who did what, with before/after values as JSON text."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=80, index=True)
    target: str = Field(default="", max_length=254, index=True)
    before: str = Field(default="", sa_type=Text)
    after: str = Field(default="", sa_type=Text)
    reason: str = Field(default="", sa_type=Text)


class OutboxMessage(SQLModel, table=True):
    """An email to send. Unique per (recipient, kind, dedupe key): a repeated event cannot send twice."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("recipient", "kind", "dedupe_key", name="uq_outbox_once"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="ck_outbox_status"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(default=None, foreign_key="users.id")
    recipient: str = Field(max_length=254)
    kind: str = Field(max_length=40)
    dedupe_key: str = Field(max_length=200)
    payload: str = Field(default="{}", sa_type=Text)
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    last_error: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Rejection(SQLModel, table=True):
    """A request refused because the counter store was down (F8), kept for compensation (X4)."""

    __tablename__ = "rejections"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, index=True)
    reason: str = Field(max_length=40)
    model: str = Field(default="", max_length=200)
    estimate: int = Field(default=0, sa_type=BigInteger)
    at: datetime = _ts(index=True)

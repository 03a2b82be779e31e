"""Tables of the monthly renewal (SPEC R1): one summary row per user and ended period."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from solaris_tokens.clock import utc_now


class PeriodSummary(SQLModel, table=True):
    """A user's month as the ledger closed it; unique per (user, period), so a renewal happens once.

    `used` is the monthly allowance consumed (what the renewal email calls "tokens utilizados"),
    `additional_used` the additional tokens consumed in the month, `additional_end` the additional
    balance at the boundary (kept into the new month). Append-only, like the rest of the ledger.
    """

    __tablename__ = "period_summaries"
    __table_args__ = (
        UniqueConstraint("user_id", "period", name="uq_period_summary_once"),
        CheckConstraint(
            "monthly_limit >= 0 AND used >= 0 AND additional_used >= 0 AND requests >= 0",
            name="ck_period_summary_nonneg",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id")
    period: str = Field(max_length=7, index=True)
    plan: str = Field(max_length=40)
    monthly_limit: int = Field(sa_type=BigInteger)
    used: int = Field(sa_type=BigInteger)
    additional_used: int = Field(sa_type=BigInteger)
    requests: int = Field(sa_type=BigInteger)
    efficiency_percent: int
    additional_end: int = Field(sa_type=BigInteger)
    renewed_at: datetime = Field(default_factory=utc_now, sa_type=DateTime(timezone=True), nullable=False)

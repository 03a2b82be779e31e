"""Exhaustion estimate for the 80% email (SPEC A1): "os tokens podem esgotar em aproximadamente N dias".

The pace is the user's own recent consumption: tokens settled over the last `window` (7 days by
default), or over the user's whole history when it is younger than that (month-to-date for a user
who started this month). An estimate is only given when it means something; otherwise `None`, and
the email leaves the sentence out instead of inventing a figure:

- no usage history, or less than a day of it (a single burst says nothing about a pace);
- no tokens in the window (the user stopped: nothing will run out at this pace);
- nothing left to exhaust;
- exhaustion would come after the monthly renewal (the allowance renews first).

Arithmetic is exact (integers and fractions), so a steady pace gives the expected whole number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import UsageEntry
from solaris_tokens.policy import Period

DAY = timedelta(days=1)
MIN_HISTORY = DAY


@dataclass(frozen=True, slots=True)
class Pace:
    """Tokens consumed over a span of time ending now."""

    tokens: int
    span: timedelta

    @property
    def per_day(self) -> Fraction:
        return Fraction(self.tokens) * Fraction(86_400) / Fraction(int(self.span.total_seconds()))


def days_until_exhausted(remaining: int, pace: Pace, *, now: datetime, reset: datetime) -> int | None:
    """Whole days (rounded half up, at least 1) until `remaining` tokens are gone at `pace`."""
    if remaining <= 0 or pace.tokens <= 0 or pace.span < MIN_HISTORY:
        return None
    days = Fraction(remaining) / pace.per_day
    if days * 86_400 >= Fraction(int((reset - now).total_seconds())):
        return None
    whole = int(days + Fraction(1, 2))
    return max(whole, 1)


def recent_pace(engine: Engine, user_id: int, *, now: datetime, window: timedelta = 7 * DAY) -> Pace | None:
    """The user's pace over the window ending at `now`, or over their history when it is shorter."""
    with Session(engine) as s:
        first = s.exec(
            select(func.min(UsageEntry.settled_at)).where(
                UsageEntry.user_id == user_id, col(UsageEntry.settled_at) <= now
            )
        ).one()
        first_at = as_utc(first)
        if first_at is None:
            return None
        start = max(now - window, first_at)
        if now - start < MIN_HISTORY:
            return None
        # Half-open (start, now]: an entry's time is when its tokens were finished, so the tokens of
        # an entry exactly at `start` were consumed before the span began.
        total = s.exec(
            select(func.coalesce(func.sum(UsageEntry.prompt_tokens + UsageEntry.completion_tokens), 0)).where(
                UsageEntry.user_id == user_id,
                col(UsageEntry.settled_at) > start,
                col(UsageEntry.settled_at) <= now,
            )
        ).one()
    return Pace(int(total), now - start)


def exhaustion_days(
    engine: Engine,
    user_id: int,
    *,
    remaining: int,
    now: datetime,
    window: timedelta = 7 * DAY,
    reset: datetime | None = None,
) -> int | None:
    """Days until the monthly allowance runs out at the user's recent pace; None when not meaningful.

    `reset` is the renewal that ends the allowance in question (default: the end of `now`'s period).
    """
    reset = reset or Period.of(now).end
    if remaining <= 0 or now >= reset:
        return None
    pace = recent_pace(engine, user_id, now=now, window=window)
    if pace is None:
        return None
    return days_until_exhausted(remaining, pace, now=now, reset=reset)

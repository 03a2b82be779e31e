"""The monthly renewal (SPEC R1, R2): close the month that ended, for every active user.

The counters turn over by themselves at 00:00 UTC (one Redis hash per user and period), so this
job resets nothing. It makes the turn accountable: for each active user, a period summary
computed from the ledger, a `renewal` audit event and the renewal email, written together in one
transaction per batch of users and each at most once per user and period (unique summary per
user + period; the email's outbox row is unique per recipient + kind + new period). Running it
twice, late or concurrently therefore adds nothing to what the first run wrote.

Exactness at the turn: a request settles into the period of the instant it settles, and every
balance change reaches SQL through the ledger streams. The job starts `renewal_grace_seconds`
after the boundary (a settle that read the clock just before midnight has reached Redis by then),
then drains the streams and waits until no entry from before the boundary is left in them (one
may be held by another flusher mid-write), so the summary counts every row of the month once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from redis import exceptions as redis_errors
from sqlalchemy import ColumnElement, and_, case, func, insert, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from solaris_tokens.clock import iso_z, to_ms
from solaris_tokens.domain import UserStatus
from solaris_tokens.errors import LedgerUnavailable, SolarisError, StoreUnavailable
from solaris_tokens.ledger.models import AuditEntry, CreditEntry, OutboxMessage, UsageEntry, User
from solaris_tokens.ledger.renewal_models import PeriodSummary
from solaris_tokens.ledger.repository import SYSTEM_ACTOR, _insert, json_text
from solaris_tokens.policy import Period
from solaris_tokens.runtime import Runtime

log = logging.getLogger("solaris_tokens.renewal")

RENEWAL_ACTION = "renewal"  # audit_log.action of a user's renewal
RENEWAL_EMAIL = "renewal"  # outbox kind: templates notify/templates/renewal.*

Progress = Callable[[int, int], None]
"""Called after each batch with (users done, users to do)."""

_FLUSH_POLL_SECONDS = 0.5
_FLUSH_WAIT_SECONDS = 120.0  # past this, entries of the month still unflushed fail the run (retried later)
_STREAM_PAGE = 1000
_pause = asyncio.sleep  # tests replace it to act while the job waits


class RenewalNotDue(SolarisError):
    """Too early: the period has not ended, or ended less than the grace period ago."""

    def __init__(self, period: Period, due_at: datetime) -> None:
        super().__init__(f"the renewal of {period} can run from {iso_z(due_at)}")
        self.period = period
        self.due_at = due_at


@dataclass(frozen=True, slots=True)
class RenewalResult:
    period: str  # the month that ended
    users: int  # active users of the period
    renewed: int  # summaries (each with its audit event and email) this run wrote
    emails: int  # renewal emails this run put in the outbox

    @property
    def already_renewed(self) -> int:
        """Users an earlier or concurrent run had already renewed."""
        return self.users - self.renewed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"already_renewed": self.already_renewed}


def efficiency_percent(used: int, limit: int) -> int:
    """Share of the monthly allowance used, in whole percent rounded half up (850.000 of 1.000.000 → 85)."""
    if limit <= 0:
        return 0
    return (used * 100 + limit // 2) // limit


def period_to_renew(now: datetime, month: str | None = None) -> Period:
    """The month given (YYYY-MM), or else the last one that ended before `now`."""
    return Period.parse(month) if month else Period.of(now).previous


def _active_at(now: datetime) -> ColumnElement[bool]:
    """Active, or suspended with a suspension that is over (as the counters see it)."""
    return or_(
        col(User.status) == UserStatus.ACTIVE.value,
        and_(col(User.suspended_until).is_not(None), col(User.suspended_until) <= now),
    )


async def flush_through(runtime: Runtime, period: Period) -> None:
    """Write every ledger entry stamped before the period's end to SQL, even ones another flusher holds."""
    boundary_ms = to_ms(period.end)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _FLUSH_WAIT_SECONDS
    while True:
        await runtime.flusher.drain()
        left = await _unflushed_before(runtime, boundary_ms)
        if not left:
            return
        if loop.time() >= deadline:
            raise LedgerUnavailable(f"{left} ledger entries from before {iso_z(period.end)} are still unwritten")
        await _pause(_FLUSH_POLL_SECONDS)


async def _unflushed_before(runtime: Runtime, boundary_ms: int) -> int:
    """How many entries stamped before the boundary are still in the ledger streams."""
    store = runtime.store
    left = 0
    try:
        for stream in store.keys.streams():
            start = "-"
            while True:
                page = list(await store.client.xrange(stream, start, "+", count=_STREAM_PAGE) or [])
                for _entry_id, fields in page:
                    left += int((fields or {}).get("at", 0)) < boundary_ms
                if len(page) < _STREAM_PAGE:
                    break
                start = f"({page[-1][0]!s}"
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis unreachable: {exc}") from exc
    return left


def _not_renewed(period: Period) -> ColumnElement[bool]:
    """No summary yet: lets a re-run skip users quickly (the unique constraint is what guarantees once)."""
    return ~(
        sa_select(col(PeriodSummary.id))
        .where(col(PeriodSummary.user_id) == col(User.id), col(PeriodSummary.period) == period.name)
        .exists()
    )


class RenewalJob:
    def __init__(self, runtime: Runtime, *, batch_size: int | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.ledger = runtime.ledger
        self.engine = runtime.engine
        self.clock = runtime.ledger.clock
        self.batch_size = batch_size or runtime.settings.renewal_batch_size

    async def run(self, period: Period, progress: Progress | None = None) -> RenewalResult:
        """Renew every active user for `period` (the month that ended); safe to repeat."""
        now = self.clock()
        due = period.end + timedelta(seconds=self.settings.renewal_grace_seconds)
        if now < due:
            raise RenewalNotDue(period, due)
        await flush_through(self.runtime, period)
        users, to_do = await asyncio.to_thread(self._count_users, period, now)
        if progress:
            progress(0, to_do)
        done = renewed = emails = 0
        last_id = 0
        while True:
            batch = await asyncio.to_thread(self._renew_batch, period, now, last_id)
            if batch is None:
                break
            last_id, seen, new, mailed = batch
            done, renewed, emails = done + seen, renewed + new, emails + mailed
            if progress:
                progress(done, max(to_do, done))
        result = RenewalResult(period.name, max(users, done), renewed, emails)
        log.info("renewal %s: %s", period, result.as_dict())
        return result

    # --- SQL ------------------------------------------------------------------------------------

    def _count_users(self, period: Period, now: datetime) -> tuple[int, int]:
        """(active users of the period, those of them not renewed yet)."""
        with Session(self.engine) as s:
            users, to_do = s.exec(
                select(func.count(col(User.id)), func.sum(case((_not_renewed(period), 1), else_=0))).where(
                    col(User.created_at) < period.end, _active_at(now)
                )
            ).one()
        return int(users), int(to_do or 0)

    def _renew_batch(self, period: Period, now: datetime, after_id: int) -> tuple[int, int, int, int] | None:
        """Renew the next batch of users by id; returns (last id, users, summaries written, emails)."""
        with Session(self.engine) as s:
            users = s.exec(
                select(User)
                .where(
                    col(User.id) > after_id, col(User.created_at) < period.end, _active_at(now), _not_renewed(period)
                )
                .order_by(col(User.id))
                .limit(self.batch_size)
            ).all()
            if not users:
                return None
            ids = [int(u.id or 0) for u in users]
            in_batch = col(UsageEntry.user_id).between(ids[0], ids[-1])
            this_month = col(UsageEntry.period) == period.name
            usage = {
                int(uid): (int(used), int(extra), int(requests), int(spent))
                for uid, used, extra, requests, spent in s.execute(
                    sa_select(
                        col(UsageEntry.user_id),
                        func.sum(case((this_month, col(UsageEntry.monthly_tokens)), else_=0)),
                        func.sum(case((this_month, col(UsageEntry.additional_tokens)), else_=0)),
                        func.sum(case((this_month, 1), else_=0)),
                        func.sum(col(UsageEntry.additional_tokens)),
                    )
                    .where(in_batch, col(UsageEntry.period) <= period.name)
                    .group_by(col(UsageEntry.user_id))
                ).all()
            }
            credited = {
                int(uid): int(total)
                for uid, total in s.exec(
                    select(CreditEntry.user_id, func.sum(CreditEntry.amount))
                    .where(
                        col(CreditEntry.user_id).between(ids[0], ids[-1]),
                        col(CreditEntry.created_at) < period.end,
                    )
                    .group_by(col(CreditEntry.user_id))
                ).all()
            }
            summaries: list[dict[str, Any]] = []
            by_id: dict[int, User] = {}
            for user in users:
                uid = int(user.id or 0)
                by_id[uid] = user
                used, extra, requests, spent = usage.get(uid, (0, 0, 0, 0))
                limit = self.ledger.effective(user).limit
                summaries.append(
                    {
                        "user_id": uid,
                        "period": period.name,
                        "plan": user.plan,
                        "monthly_limit": limit,
                        "used": used,
                        "additional_used": extra,
                        "requests": requests,
                        "efficiency_percent": efficiency_percent(used, limit),
                        "additional_end": credited.get(uid, 0) - spent,
                        "renewed_at": now,
                    }
                )
            conn = s.connection()
            written = conn.execute(
                _insert(self.engine, PeriodSummary)
                .on_conflict_do_nothing(index_elements=["user_id", "period"])
                .returning(PeriodSummary.user_id),
                summaries,
            ).all()
            new_ids = {int(row[0]) for row in written}
            fresh = [row for row in summaries if row["user_id"] in new_ids]
            mailed = 0
            if fresh:
                conn.execute(insert(AuditEntry), [self._audit_row(by_id[r["user_id"]], r, period, now) for r in fresh])
                mailed = len(
                    conn.execute(
                        _insert(self.engine, OutboxMessage)
                        .on_conflict_do_nothing(index_elements=["recipient", "kind", "dedupe_key"])
                        .returning(OutboxMessage.id),
                        [self._email_row(by_id[r["user_id"]], r, period, now) for r in fresh],
                    ).all()
                )
            s.commit()
        return ids[-1], len(users), len(fresh), mailed

    @staticmethod
    def _audit_row(user: User, summary: dict[str, Any], period: Period, now: datetime) -> dict[str, Any]:
        return {
            "at": now,
            "actor": SYSTEM_ACTOR,
            "action": RENEWAL_ACTION,
            "target": user.email,
            "before": json_text(
                {
                    "period": period.name,
                    "used": summary["used"],
                    "limit": summary["monthly_limit"],
                    "requests": summary["requests"],
                }
            ),
            "after": json_text(
                {
                    "period": period.next.name,
                    "used": 0,
                    "limit": summary["monthly_limit"],
                    "additional": summary["additional_end"],
                }
            ),
            "reason": "monthly renewal",
        }

    @staticmethod
    def _email_row(user: User, summary: dict[str, Any], period: Period, now: datetime) -> dict[str, Any]:
        """One outbox row (the same contract as Ledger.enqueue_email, written in the batch's transaction)."""
        limit, additional = summary["monthly_limit"], summary["additional_end"]
        payload = {
            "period_ended": period.name,
            "period": period.next.name,
            "used": summary["used"],
            "limit": limit,
            "efficiency_percent": summary["efficiency_percent"],
            "requests": summary["requests"],
            "allowance": limit,
            "additional": additional,
            "total_available": limit + additional,
        }
        return {
            "user_id": summary["user_id"],
            "recipient": user.email,
            "kind": RENEWAL_EMAIL,
            "dedupe_key": period.next.name,
            "payload": json_text(payload),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": "",
            "created_at": now,
        }


async def renew(runtime: Runtime, month: str | None = None, progress: Progress | None = None) -> RenewalResult:
    """Renew the given month (default: the last one that ended); what the CLI and the Celery task call."""
    period = period_to_renew(runtime.ledger.clock(), month)
    return await RenewalJob(runtime).run(period, progress)

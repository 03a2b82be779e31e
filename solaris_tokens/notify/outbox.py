"""The outbox table as a work queue: claim due rows, then record what became of each.

A row is claimed by moving it `pending → sending` in one conditional UPDATE; only the worker whose
UPDATE changed the row sends it, so concurrent workers never send the same row. A claim increments
`attempts` (a fencing token: a later `mark_*` only applies while the row still carries the
attempt number this worker claimed) and sets `next_attempt_at` to the end of a lease: a row left
in `sending` past its lease (worker killed mid-send) is due again and is claimed by the next run.

PostgreSQL claims a whole batch in one statement with `FOR UPDATE SKIP LOCKED`; other databases
(SQLite) claim row by row with the same conditional UPDATE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, select, update

from solaris_tokens.clock import Clock, utc_now
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import OutboxMessage

ERROR_MAX_CHARS = 2000


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker until the lease in next_attempt_at ends
    SENT = "sent"
    FAILED = "failed"  # gave up: permanent refusal or too many attempts; last_error says why


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One claimed row; `attempts` counts this attempt."""

    id: int
    user_id: int | None
    recipient: str
    kind: str
    dedupe_key: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


_T = OutboxMessage.__table__  # type: ignore[attr-defined]
_COLUMNS = (
    _T.c.id,
    _T.c.user_id,
    _T.c.recipient,
    _T.c.kind,
    _T.c.dedupe_key,
    _T.c.payload,
    _T.c.attempts,
    _T.c.created_at,
)


def _due(now: datetime) -> ColumnElement[bool]:
    """Pending rows whose time has come, and claims whose lease ran out (their worker was lost)."""
    statuses = [OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]
    return and_(_T.c.status.in_(statuses), _T.c.next_attempt_at <= now)


def _item(row: Any) -> OutboxItem:
    payload = json.loads(row.payload or "{}")
    return OutboxItem(
        id=int(row.id),
        user_id=row.user_id,
        recipient=row.recipient,
        kind=row.kind,
        dedupe_key=row.dedupe_key,
        payload=payload if isinstance(payload, dict) else {"value": payload},
        attempts=int(row.attempts),
        created_at=as_utc(row.created_at) or utc_now(),
    )


class Outbox:
    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def claim(self, limit: int, *, lease: timedelta) -> list[OutboxItem]:
        """Take up to `limit` due rows for this worker alone."""
        now = self.clock()
        taken = {
            "status": OutboxStatus.SENDING.value,
            "attempts": _T.c.attempts + 1,
            "next_attempt_at": now + lease,
        }
        oldest_first = (_T.c.next_attempt_at, _T.c.id)
        if self.engine.dialect.name == "postgresql":
            due = select(_T.c.id).where(_due(now)).order_by(*oldest_first).limit(limit)
            batch = (
                update(_T).where(_T.c.id.in_(due.with_for_update(skip_locked=True))).values(taken).returning(*_COLUMNS)
            )
            with self.engine.begin() as conn:
                rows = conn.execute(batch).all()
            return sorted((_item(r) for r in rows), key=lambda i: i.id)
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(_T.c.id, _T.c.attempts).where(_due(now)).order_by(*oldest_first).limit(limit)
            ).all()
        claimed: list[OutboxItem] = []
        for row_id, attempts in candidates:
            # The same row may have been claimed since it was read: the UPDATE re-checks everything.
            one = update(_T).where(_T.c.id == row_id, _T.c.attempts == attempts, _due(now)).values(taken)
            with self.engine.begin() as conn:
                if conn.execute(one).rowcount == 1:
                    claimed.append(_item(conn.execute(select(*_COLUMNS).where(_T.c.id == row_id)).one()))
        return claimed

    def _finish(self, item: OutboxItem, **values: Any) -> bool:
        """Apply a final state only while this worker still holds the claim (same attempt number)."""
        stmt = (
            update(_T)
            .where(_T.c.id == item.id, _T.c.status == OutboxStatus.SENDING.value, _T.c.attempts == item.attempts)
            .values(**values)
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def mark_sent(self, item: OutboxItem) -> bool:
        return self._finish(item, status=OutboxStatus.SENT.value, sent_at=self.clock(), last_error="")

    def mark_retry(self, item: OutboxItem, error: str, *, at: datetime) -> bool:
        return self._finish(
            item, status=OutboxStatus.PENDING.value, next_attempt_at=at, last_error=error[:ERROR_MAX_CHARS]
        )

    def mark_failed(self, item: OutboxItem, error: str) -> bool:
        return self._finish(item, status=OutboxStatus.FAILED.value, last_error=error[:ERROR_MAX_CHARS])

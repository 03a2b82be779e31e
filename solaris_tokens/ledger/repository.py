"""Reads and writes of the ledger. Synchronous (SQLAlchemy sessions); async callers use threads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from solaris_tokens.clock import Clock, from_ms, to_ms, utc_now
from solaris_tokens.counters.base import LedgerEvent, ProfileState
from solaris_tokens.domain import AlertKind, LedgerEventType, UserStatus
from solaris_tokens.errors import LedgerUnavailable, UnknownUser
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.models import (
    AuditEntry,
    CreditEntry,
    OutboxMessage,
    Rejection,
    UsageEntry,
    User,
)
from solaris_tokens.plans import Plan
from solaris_tokens.policy import Period, name_from_email
from solaris_tokens.settings import Settings

SYSTEM_ACTOR = "system"
_SETTLED_IDS_RESTORED = 10_000  # most recent settled reservation ids put back into Redis on a rebuild


@dataclass(frozen=True, slots=True)
class EffectiveUser:
    """A user row with the plan's defaults filled in where the user has no override."""

    user: User
    plan: Plan

    @property
    def limit(self) -> int:
        return self.user.monthly_limit if self.user.monthly_limit is not None else self.plan.monthly_limit

    @property
    def warning_percent(self) -> int:
        return self.user.warning_percent or self.plan.warning_percent

    @property
    def urgent_percent(self) -> int:
        return self.user.urgent_percent or self.plan.urgent_percent

    @property
    def suspended_until(self) -> datetime | None:
        return as_utc(self.user.suspended_until)

    def profile_fields(self) -> dict[str, str | int]:
        until = self.suspended_until
        return {
            "limit": self.limit,
            "status": self.user.status,
            "suspended_until": int(until.timestamp() * 1000) if until else 0,
            "suspend_reason": self.user.suspend_reason,
            "plan": self.plan.name,
            "warning": self.warning_percent,
            "urgent": self.urgent_percent,
        }


def _insert(engine: Engine, model: Any) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING on both supported dialects."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


_USAGE_COLUMNS = (
    "reservation_id",
    "user_id",
    "call_id",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "monthly_tokens",
    "additional_tokens",
    "period",
    "outcome",
    "started_at",
    "settled_at",
    "latency_ms",
)
_USAGE_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS solaris_usage_stage (
    reservation_id text, user_id integer, call_id text, model text, prompt_tokens bigint,
    completion_tokens bigint, monthly_tokens bigint, additional_tokens bigint, period text,
    outcome text, started_at timestamptz, settled_at timestamptz, latency_ms integer
) ON COMMIT DELETE ROWS
"""


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class Ledger:
    def __init__(self, engine: Engine, settings: Settings, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def effective(self, user: User) -> EffectiveUser:
        return EffectiveUser(user, self.settings.plan(user.plan))

    # --- users --------------------------------------------------------------------------------

    def get_user(self, email: str) -> User | None:
        with self.session() as s:
            return s.exec(select(User).where(User.email == email)).first()

    def require_user(self, email: str) -> User:
        user = self.get_user(email)
        if user is None:
            raise UnknownUser(f"no user with email {email}")
        return user

    def ensure_user(self, email: str) -> tuple[User, bool]:
        """Get or create (SPEC F2): concurrent first requests create exactly one row and one audit entry."""
        now = self.clock()
        plan = self.settings.plan(None)
        with self.session() as s:
            stmt = (
                _insert(self.engine, User)
                .values(
                    email=email,
                    name=name_from_email(email)[:200],
                    plan=plan.name,
                    status=UserStatus.ACTIVE.value,
                    suspend_reason="",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["email"])
                .returning(User.id)
            )
            created = s.execute(stmt).first() is not None
            if created:
                s.add(
                    AuditEntry(
                        at=now,
                        actor=SYSTEM_ACTOR,
                        action="user.created",
                        target=email,
                        after=json_text({"plan": plan.name, "monthly_limit": plan.monthly_limit}),
                    )
                )
            s.commit()
            user = s.exec(select(User).where(User.email == email)).one()
        return user, created

    def update_user(self, email: str, changes: dict[str, Any], *, actor: str, action: str, reason: str = "") -> User:
        """Change user columns and write the audit entry (before/after) in the same transaction."""
        with self.session() as s:
            user = s.exec(select(User).where(User.email == email).with_for_update()).first()
            if user is None:
                raise UnknownUser(f"no user with email {email}")
            before = {k: getattr(user, k) for k in changes}
            for key, value in changes.items():
                setattr(user, key, value)
            user.updated_at = self.clock()
            s.add(user)
            s.add(
                AuditEntry(
                    at=self.clock(),
                    actor=actor,
                    action=action,
                    target=email,
                    before=json_text(before),
                    after=json_text(changes),
                    reason=reason,
                )
            )
            s.commit()
            s.refresh(user)
            return user

    def audit(
        self, *, actor: str, action: str, target: str, before: Any = "", after: Any = "", reason: str = ""
    ) -> None:
        with self.session() as s:
            s.add(
                AuditEntry(
                    at=self.clock(),
                    actor=actor,
                    action=action,
                    target=target,
                    before=before if isinstance(before, str) else json_text(before),
                    after=after if isinstance(after, str) else json_text(after),
                    reason=reason,
                )
            )
            s.commit()

    # --- rebuilding counters (X3) -------------------------------------------------------------

    def profile_state(self, user: User, period: Period, pending: Sequence[LedgerEvent] = ()) -> ProfileState:
        """What Redis must hold for this user: the ledger plus stream entries not written yet."""
        eff = self.effective(user)
        with self.session() as s:
            used, requests = s.exec(
                select(func.coalesce(func.sum(UsageEntry.monthly_tokens), 0), func.count(col(UsageEntry.id))).where(
                    UsageEntry.user_id == user.id, UsageEntry.period == period.name
                )
            ).one()
            spent_additional = s.exec(
                select(func.coalesce(func.sum(UsageEntry.additional_tokens), 0)).where(UsageEntry.user_id == user.id)
            ).one()
            credit_rows = s.exec(
                select(CreditEntry.idempotency_key, CreditEntry.amount).where(CreditEntry.user_id == user.id)
            ).all()
            fired = set(
                s.exec(
                    select(OutboxMessage.kind).where(
                        OutboxMessage.user_id == user.id,
                        OutboxMessage.dedupe_key == period.name,
                        col(OutboxMessage.kind).in_([a.value for a in AlertKind]),
                    )
                ).all()
            )
            since = self.clock() - timedelta(seconds=self.settings.settled_id_retention_seconds)
            recent = s.exec(
                select(UsageEntry.reservation_id, UsageEntry.settled_at)
                .where(UsageEntry.user_id == user.id, col(UsageEntry.settled_at) >= since)
                .order_by(col(UsageEntry.settled_at).desc())
                .limit(_SETTLED_IDS_RESTORED)
            ).all()
            pending_rids = [e.fields["rid"] for e in pending if e.fields.get("type") == LedgerEventType.USAGE]
            known_rids = (
                set(
                    s.exec(
                        select(UsageEntry.reservation_id).where(col(UsageEntry.reservation_id).in_(pending_rids))
                    ).all()
                )
                if pending_rids
                else set()
            )
        used, requests = int(used), int(requests)
        credited = sum(int(amount) for _, amount in credit_rows)
        keys = {key for key, _ in credit_rows}
        spent = int(spent_additional)
        for event in pending:
            f = event.fields
            kind = f.get("type")
            if kind == LedgerEventType.USAGE and f["rid"] not in known_rids:
                known_rids.add(f["rid"])
                spent += int(f["additional"])
                if f["period"] == period.name:
                    used += int(f["monthly"])
                    requests += 1
            elif kind == LedgerEventType.CREDIT and f["key"] not in keys:
                keys.add(f["key"])
                credited += int(f["tokens"])
            elif kind == LedgerEventType.ALERT and f.get("period") == period.name:
                fired.add(f["kind"])
        settled = [(rid, to_ms(as_utc(at) or self.clock())) for rid, at in recent]
        settled += [
            (e.fields["rid"], int(e.fields["at"])) for e in pending if e.fields.get("type") == LedgerEventType.USAGE
        ]
        fields = eff.profile_fields()
        return ProfileState(
            limit=eff.limit,
            additional=credited - spent,
            status=str(fields["status"]),
            suspended_until_ms=int(fields["suspended_until"]),
            suspend_reason=user.suspend_reason,
            plan=eff.plan.name,
            warning_percent=eff.warning_percent,
            urgent_percent=eff.urgent_percent,
            period_used=used,
            period_requests=requests,
            alerts_fired=tuple(AlertKind(k) for k in sorted(fired)),
            credit_keys=tuple(sorted(keys)),
            settled_ids=tuple(settled),
        )

    def all_emails(self, batch: int = 1000) -> Iterable[str]:
        last = 0
        while True:
            with self.session() as s:
                rows = s.exec(
                    select(User.id, User.email).where(col(User.id) > last).order_by(col(User.id)).limit(batch)
                ).all()
            if not rows:
                return
            for user_id, email in rows:
                yield email
                last = user_id or last

    # --- writing stream entries ---------------------------------------------------------------

    def write_events(self, events: Sequence[LedgerEvent]) -> list[LedgerEvent]:
        """Insert the rows for a batch of stream entries in one transaction; existing rows are skipped.

        Returns the usage entries refused because their reservation id was already in the ledger:
        Redis counted them (its duplicate guard had forgotten the id), so the caller must undo them.
        """
        if not events:
            return []
        try:
            return self._write_events(events)
        except (OperationalError, SAInterfaceError) as exc:
            raise LedgerUnavailable(str(exc)) from exc

    def _write_events(self, events: Sequence[LedgerEvent]) -> list[LedgerEvent]:
        emails = {e.fields["email"] for e in events if "email" in e.fields}
        ids = self._user_ids(emails)
        usage: list[dict[str, Any]] = []
        credits: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        usage_events: list[LedgerEvent] = []
        for event in events:
            f = event.fields
            user_id = ids[f["email"]]
            at = from_ms(int(f["at"]))
            kind = f.get("type")
            if kind == LedgerEventType.USAGE:
                usage_events.append(event)
                payload = json.loads(f.get("payload") or "{}")
                started = payload.get("started_ms")
                usage.append(
                    {
                        "reservation_id": f["rid"],
                        "user_id": user_id,
                        "call_id": str(payload.get("call_id") or "")[:200],
                        "model": str(payload.get("model") or "")[:200],
                        "prompt_tokens": int(f["prompt"]),
                        "completion_tokens": int(f["completion"]),
                        "monthly_tokens": int(f["monthly"]),
                        "additional_tokens": int(f["additional"]),
                        "period": f["period"],
                        "outcome": f.get("outcome", "settled"),
                        "started_at": from_ms(int(started)) if started else None,
                        "settled_at": at,
                        "latency_ms": payload.get("latency_ms"),
                    }
                )
            elif kind == LedgerEventType.CREDIT:
                credits.append(
                    {
                        "user_id": user_id,
                        "kind": f["kind"],
                        "amount": int(f["tokens"]),
                        "idempotency_key": f["key"],
                        "actor": f.get("actor", SYSTEM_ACTOR),
                        "reason": f.get("reason", ""),
                        "created_at": at,
                    }
                )
            elif kind == LedgerEventType.EXPIRED:
                audits.append(
                    {
                        "at": at,
                        "actor": SYSTEM_ACTOR,
                        "action": "reservation.expired",
                        "target": f["email"],
                        "before": json_text({"reservation_id": f["rid"], "tokens": int(f["tokens"])}),
                        "after": "",
                        "reason": "not settled within the reservation TTL",
                    }
                )
            elif kind == LedgerEventType.ALERT:
                details = {k: f[k] for k in ("period", "percent", "used", "limit", "additional") if k in f}
                outbox.append(
                    {
                        "user_id": user_id,
                        "recipient": f["email"],
                        "kind": f["kind"],
                        "dedupe_key": f["period"],
                        "payload": json_text({k: int(v) if v.isdigit() else v for k, v in details.items()}),
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": at,
                        "last_error": "",
                        "created_at": at,
                    }
                )
        duplicates: list[LedgerEvent] = []
        with self.session() as s:
            inserted = self._insert_usage(s, usage) if usage else set()
            for event in usage_events:
                rid = event.fields["rid"]
                if rid in inserted:
                    inserted.discard(rid)  # the first entry of a rid in the batch is the original
                    continue
                duplicates.append(event)
                audits.append(
                    {
                        "at": self.clock(),
                        "actor": SYSTEM_ACTOR,
                        "action": "usage.duplicate_reverted",
                        "target": event.fields["email"],
                        "before": json_text({"reservation_id": rid, "entry": event.entry_id}),
                        "after": "",
                        "reason": "a usage entry for this reservation id is already in the ledger",
                    }
                )
            if credits:
                s.execute(
                    _insert(self.engine, CreditEntry).on_conflict_do_nothing(index_elements=["idempotency_key"]),
                    credits,
                )
            if audits:
                s.execute(insert(AuditEntry), audits)
            if outbox:
                s.execute(
                    _insert(self.engine, OutboxMessage).on_conflict_do_nothing(
                        index_elements=["recipient", "kind", "dedupe_key"]
                    ),
                    outbox,
                )
            s.commit()
        return duplicates

    def _insert_usage(self, s: Session, rows: list[dict[str, Any]]) -> set[str]:
        """Insert usage rows, skipping reservation ids already present; returns the ids inserted.

        On PostgreSQL the batch is COPied into a session-local staging table and moved with one
        INSERT … SELECT … ON CONFLICT DO NOTHING: an order of magnitude faster than bound INSERTs.
        """
        if self.engine.dialect.name != "postgresql":
            return set(
                s.execute(
                    _insert(self.engine, UsageEntry)
                    .on_conflict_do_nothing(index_elements=["reservation_id"])
                    .returning(UsageEntry.reservation_id),
                    rows,
                ).scalars()
            )
        raw = s.connection().connection.driver_connection
        assert raw is not None
        columns = ", ".join(_USAGE_COLUMNS)
        with raw.cursor() as cur:
            cur.execute(_USAGE_STAGE_DDL)
            with cur.copy(f"COPY solaris_usage_stage ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in _USAGE_COLUMNS])
            cur.execute(
                f"INSERT INTO usage_entries ({columns}) SELECT {columns} FROM solaris_usage_stage "
                "ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id"
            )
            return {r[0] for r in cur.fetchall()}

    def _user_ids(self, emails: set[str]) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(select(User.email, User.id).where(col(User.email).in_(emails))).all()
        ids = {email: int(uid or 0) for email, uid in rows}
        for email in emails - ids.keys():
            user, _ = self.ensure_user(email)  # a profile always has a row; this only heals a wiped table
            ids[email] = int(user.id or 0)
        return ids

    def has_usage(self, reservation_id: str) -> bool:
        with self.session() as s:
            return s.exec(select(UsageEntry.id).where(UsageEntry.reservation_id == reservation_id)).first() is not None

    def has_credit(self, key: str) -> bool:
        with self.session() as s:
            return s.exec(select(CreditEntry.id).where(CreditEntry.idempotency_key == key)).first() is not None

    # --- emails -------------------------------------------------------------------------------

    def enqueue_email(
        self,
        *,
        recipient: str,
        kind: str,
        dedupe_key: str,
        payload: dict[str, Any],
        user_id: int | None = None,
    ) -> bool:
        """Put an email in the outbox once per (recipient, kind, dedupe key); True if it is new."""
        now = self.clock()
        with self.session() as s:
            stmt = (
                _insert(self.engine, OutboxMessage)
                .values(
                    user_id=user_id,
                    recipient=recipient,
                    kind=kind,
                    dedupe_key=dedupe_key,
                    payload=json_text(payload),
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["recipient", "kind", "dedupe_key"])
                .returning(OutboxMessage.id)
            )
            created = s.execute(stmt).first() is not None
            s.commit()
        return created

    # --- failures -----------------------------------------------------------------------------

    def record_rejection(
        self, email: str, reason: str, model: str = "", estimate: int = 0, at: datetime | None = None
    ) -> None:
        """`at`: when the request was refused (the proxy may write it later, once the database is back)."""
        with self.session() as s:
            s.add(Rejection(email=email, reason=reason, model=model[:200], estimate=estimate, at=at or self.clock()))
            s.commit()

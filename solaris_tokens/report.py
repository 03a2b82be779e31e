"""The admins' monthly report (SPEC R3), computed from the ledger.

Per user, per plan and per model: tokens and requests; the users who reached their warning,
urgent and blocked thresholds (the alert rows of the period in the outbox); purchases and other
credits; the top consumers; users whose month-over-month change is anomalous; and a projection
for the new month from the recent pace. One dataclass, rendered as JSON, CSV (one row per user)
and text, and emailed to the admins with the CSV attached. Read-only, so safe to run any time;
the email goes out once per admin and period.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from solaris_tokens.clock import iso_z
from solaris_tokens.domain import AlertKind, CreditKind
from solaris_tokens.errors import InvalidInput
from solaris_tokens.ledger.models import CreditEntry, OutboxMessage, UsageEntry, User
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.policy import Period
from solaris_tokens.renewal import efficiency_percent, flush_through, period_to_renew
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings

REPORT_EMAIL = "admin_monthly_report"  # outbox kind: templates notify/templates/admin_monthly_report.*
EMAIL_LIST_LIMIT = 20  # rows of each list the email body shows; the CSV has every user

_ALERT_ORDER = (AlertKind.WARNING, AlertKind.URGENT, AlertKind.BLOCKED)
_ID_CHUNK = 1000
_NONE = (0, 0, 0, 0)


class Anomaly(StrEnum):
    """A month-over-month change of at least `report_anomaly_factor` times, either way."""

    SPIKE = "spike"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class UserLine:
    email: str
    name: str
    plan: str
    limit: int
    tokens: int  # prompt + completion of every request settled in the period
    monthly_tokens: int
    additional_tokens: int
    requests: int
    percent_of_limit: int  # monthly tokens / limit
    highest_alert: str  # '' or the last AlertKind reached in the period
    purchased: int  # tokens bought in the period
    credited: int  # tokens credited in the period, purchases included
    previous_tokens: int
    change_percent: int | None  # None when the previous month had no usage
    anomaly: str  # '' or an Anomaly
    projected_tokens: int  # the new month at the recent pace


@dataclass(frozen=True, slots=True)
class GroupLine:
    """Usage of one plan or one model."""

    name: str
    users: int
    tokens: int
    requests: int


@dataclass(frozen=True, slots=True)
class CreditLine:
    kind: str
    credits: int
    tokens: int
    users: int


@dataclass(frozen=True, slots=True)
class Totals:
    users: int  # users with at least one request
    tokens: int
    monthly_tokens: int
    additional_tokens: int
    requests: int


@dataclass(frozen=True, slots=True)
class Projection:
    """The new month if every user keeps the pace of the period's last `pace_days` days."""

    period: str
    pace_days: int
    window_start: datetime
    window_end: datetime
    tokens: int
    requests: int
    users_over_limit: int  # users whose projection exceeds their monthly allowance


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    period: str
    previous_period: str
    generated_at: datetime
    totals: Totals
    previous_totals: Totals
    users: tuple[UserLine, ...]  # every user with usage, credits or alerts in the period or usage in the previous
    plans: tuple[GroupLine, ...]
    models: tuple[GroupLine, ...]
    alerts: dict[str, tuple[str, ...]]  # AlertKind → emails of the users who reached it
    credits: tuple[CreditLine, ...]
    top_consumers: tuple[UserLine, ...]
    projection: Projection
    anomalies: tuple[UserLine, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "anomalies", tuple(u for u in self.users if u.anomaly))

    @property
    def change_percent(self) -> int | None:
        return change_percent(self.totals.tokens, self.previous_totals.tokens)

    # --- renderings -----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "previous_period": self.previous_period,
            "generated_at": iso_z(self.generated_at),
            "totals": asdict(self.totals),
            "previous_totals": asdict(self.previous_totals),
            "change_percent": self.change_percent,
            "alerts": {kind: list(emails) for kind, emails in self.alerts.items()},
            "credits": [asdict(c) for c in self.credits],
            "plans": [asdict(p) for p in self.plans],
            "models": [asdict(m) for m in self.models],
            "top_consumers": [_brief(u) for u in self.top_consumers],
            "anomalies": [_brief(u) for u in self.anomalies],
            "projection": asdict(self.projection)
            | {"window_start": iso_z(self.projection.window_start), "window_end": iso_z(self.projection.window_end)},
            "users": [asdict(u) for u in self.users],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2)

    def to_csv(self) -> str:
        """One row per user; the attachment of the admins' email."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        names = [f.name for f in fields(UserLine)]
        writer.writerow(["period", *names])
        for line in self.users:
            writer.writerow([self.period, *("" if v is None else v for v in (getattr(line, n) for n in names))])
        return out.getvalue()

    def to_text(self) -> str:
        t, p = self.totals, self.projection
        change = self.change_percent
        lines = [
            f"Monthly report {self.period} (generated {iso_z(self.generated_at)})",
            "",
            f"tokens     {t.tokens:>15,}  (monthly {t.monthly_tokens:,}; additional {t.additional_tokens:,})",
            f"requests   {t.requests:>15,}",
            f"users      {t.users:>15,}",
            f"vs {self.previous_period}  {'n/a' if change is None else f'{change:+d}%'}"
            f" ({self.previous_totals.tokens:,} tokens)",
            "",
            "Thresholds reached: "
            + ", ".join(f"{kind} {len(self.alerts.get(kind, ()))}" for kind in (a.value for a in _ALERT_ORDER)),
            "Credits: " + (", ".join(f"{c.kind} {c.credits} ({c.tokens:,} tokens)" for c in self.credits) or "none"),
            "",
            *_table("Top consumers", ["email", "plan", "tokens", "% of limit"], self._top_rows()),
            *_table("Per plan", ["plan", "users", "tokens", "requests"], _group_rows(self.plans)),
            *_table("Per model", ["model", "users", "tokens", "requests"], _group_rows(self.models)),
            *_table("Anomalies (month over month)", ["email", "previous", "tokens", "change"], self._anomaly_rows()),
            f"Projection for {p.period} (pace of the last {p.pace_days} days): {p.tokens:,} tokens, "
            f"{p.requests:,} requests, {p.users_over_limit} users over their allowance",
        ]
        return "\n".join(lines) + "\n"

    def _top_rows(self) -> list[list[str]]:
        return [[u.email, u.plan, f"{u.tokens:,}", f"{u.percent_of_limit}%"] for u in self.top_consumers]

    def _anomaly_rows(self) -> list[list[str]]:
        return [
            [u.email, f"{u.previous_tokens:,}", f"{u.tokens:,}", _signed(u.change_percent) or u.anomaly]
            for u in self.anomalies
        ]

    def email_payload(self) -> dict[str, Any]:
        """Template variables of `admin_monthly_report.*`, with the CSV as an attachment."""
        data = self.as_dict()
        del data["users"]
        data["top_consumers"] = data["top_consumers"][:EMAIL_LIST_LIMIT]
        data["anomalies"] = data["anomalies"][:EMAIL_LIST_LIMIT]
        data["anomalies_total"] = len(self.anomalies)
        data["alert_counts"] = {kind.value: len(self.alerts.get(kind.value, ())) for kind in _ALERT_ORDER}
        data["attachments"] = [
            {"filename": f"solaris-relatorio-{self.period}.csv", "content_type": "text/csv", "content": self.to_csv()}
        ]
        return data


def change_percent(current: int, previous: int) -> int | None:
    """Whole-percent change, truncated toward zero; None without a previous figure."""
    if previous <= 0:
        return None
    delta = (abs(current - previous) * 100) // previous
    return delta if current >= previous else -delta


def anomaly(current: int, previous: int, *, factor: int, min_tokens: int) -> Anomaly | None:
    """A spike (× factor or more, or a first month of at least `min_tokens`) or a drop (÷ factor or more)."""
    if max(current, previous) < min_tokens:
        return None
    if previous == 0 or current >= previous * factor:
        return Anomaly.SPIKE
    if current * factor <= previous:
        return Anomaly.DROP
    return None


def _brief(u: UserLine) -> dict[str, Any]:
    return {
        "email": u.email,
        "name": u.name,
        "plan": u.plan,
        "tokens": u.tokens,
        "requests": u.requests,
        "limit": u.limit,
        "percent_of_limit": u.percent_of_limit,
        "previous_tokens": u.previous_tokens,
        "change_percent": u.change_percent,
        "anomaly": u.anomaly,
    }


def _signed(value: int | None) -> str:
    return "" if value is None else f"{value:+d}%"


def _group_rows(groups: Sequence[GroupLine]) -> list[list[str]]:
    return [[g.name or "(unknown)", f"{g.users:,}", f"{g.tokens:,}", f"{g.requests:,}"] for g in groups]


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none", ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [f"{title}:", fmt.format(*header), *(fmt.format(*r) for r in rows), ""]


# --- building -----------------------------------------------------------------------------------


class ReportBuilder:
    """Reads the ledger for one period; every figure is an integer sum of ledger rows."""

    def __init__(self, engine: Engine, ledger: Ledger, settings: Settings) -> None:
        self.engine = engine
        self.ledger = ledger
        self.settings = settings

    def build(self, period: Period, now: datetime) -> MonthlyReport:
        if period.start > now:
            raise InvalidInput(f"{period} has not started yet")
        previous = period.previous
        window_end = min(period.end, now)
        window_start = max(period.start, window_end - timedelta(days=self.settings.report_pace_days))
        with Session(self.engine) as s:
            usage, before = self._usage(s, period), self._usage(s, previous)
            pace = self._pace(s, period, window_start, window_end)
            models = self._models(s, period)
            alerts = self._alerts(s, period)
            credit_rows = self._credits(s, period)
        ids = set(usage) | set(before) | set(alerts) | {uid for uid, *_ in credit_rows}
        window = int((window_end - window_start).total_seconds())
        ahead = int((period.next.end - period.next.start).total_seconds())

        def project(value: int) -> int:
            return value * ahead // window if window > 0 else 0

        purchased: dict[int, int] = defaultdict(int)
        credited: dict[int, int] = defaultdict(int)
        by_kind: dict[str, list[int]] = {}
        for uid, kind, count, tokens in credit_rows:
            credited[uid] += tokens
            if kind == CreditKind.PURCHASE:
                purchased[uid] += tokens
            agg = by_kind.setdefault(kind, [0, 0, 0])
            agg[0], agg[1], agg[2] = agg[0] + count, agg[1] + tokens, agg[2] + 1

        lines: list[UserLine] = []
        reached: dict[str, list[str]] = {kind.value: [] for kind in _ALERT_ORDER}
        for user in self._users(ids):
            uid = int(user.id or 0)
            tokens, monthly, additional, requests = usage.get(uid, _NONE)
            prev_tokens = before.get(uid, _NONE)[0]
            limit = self.ledger.effective(user).limit
            fired = alerts.get(uid, set())
            for kind in fired:
                reached[kind].append(user.email)
            found = anomaly(
                tokens,
                prev_tokens,
                factor=self.settings.report_anomaly_factor,
                min_tokens=self.settings.report_anomaly_min_tokens,
            )
            lines.append(
                UserLine(
                    email=user.email,
                    name=user.name,
                    plan=user.plan,
                    limit=limit,
                    tokens=tokens,
                    monthly_tokens=monthly,
                    additional_tokens=additional,
                    requests=requests,
                    percent_of_limit=efficiency_percent(monthly, limit),
                    highest_alert=next((k.value for k in reversed(_ALERT_ORDER) if k.value in fired), ""),
                    purchased=purchased.get(uid, 0),
                    credited=credited.get(uid, 0),
                    previous_tokens=prev_tokens,
                    change_percent=change_percent(tokens, prev_tokens),
                    anomaly=found.value if found else "",
                    projected_tokens=project(pace.get(uid, (0, 0))[0]),
                )
            )
        lines.sort(key=lambda u: (-u.tokens, u.email))
        return MonthlyReport(
            period=period.name,
            previous_period=previous.name,
            generated_at=now,
            totals=_totals(usage.values()),
            previous_totals=_totals(before.values()),
            users=tuple(lines),
            plans=_by_plan(lines),
            models=models,
            alerts={kind: tuple(sorted(emails)) for kind, emails in reached.items()},
            credits=tuple(CreditLine(kind, c, t, n) for kind, (c, t, n) in sorted(by_kind.items())),
            top_consumers=tuple(u for u in lines[: self.settings.report_top_consumers] if u.tokens > 0),
            projection=Projection(
                period=period.next.name,
                pace_days=self.settings.report_pace_days,
                window_start=window_start,
                window_end=window_end,
                tokens=project(sum(t for t, _ in pace.values())),
                requests=project(sum(r for _, r in pace.values())),
                users_over_limit=sum(1 for u in lines if u.projected_tokens > u.limit),
            ),
        )

    # --- queries (grouped in SQL, so memory grows with users that used tokens, not with requests)

    def _usage(self, s: Session, period: Period) -> dict[int, tuple[int, int, int, int]]:
        """user id → (tokens, monthly tokens, additional tokens, requests) of the period."""
        rows = s.execute(
            sa_select(
                col(UsageEntry.user_id),
                func.sum(col(UsageEntry.prompt_tokens) + col(UsageEntry.completion_tokens)),
                func.sum(col(UsageEntry.monthly_tokens)),
                func.sum(col(UsageEntry.additional_tokens)),
                func.count(col(UsageEntry.id)),
            )
            .where(col(UsageEntry.period) == period.name)
            .group_by(col(UsageEntry.user_id))
        ).all()
        return {int(uid): (int(t), int(m), int(a), int(r)) for uid, t, m, a, r in rows}

    def _pace(self, s: Session, period: Period, start: datetime, end: datetime) -> dict[int, tuple[int, int]]:
        rows = s.execute(
            sa_select(
                col(UsageEntry.user_id),
                func.sum(col(UsageEntry.prompt_tokens) + col(UsageEntry.completion_tokens)),
                func.count(col(UsageEntry.id)),
            )
            .where(
                col(UsageEntry.period) == period.name,
                col(UsageEntry.settled_at) >= start,
                col(UsageEntry.settled_at) < end,
            )
            .group_by(col(UsageEntry.user_id))
        ).all()
        return {int(uid): (int(tokens), int(requests)) for uid, tokens, requests in rows}

    def _models(self, s: Session, period: Period) -> tuple[GroupLine, ...]:
        rows = s.execute(
            sa_select(
                col(UsageEntry.model),
                func.count(func.distinct(col(UsageEntry.user_id))),
                func.sum(col(UsageEntry.prompt_tokens) + col(UsageEntry.completion_tokens)),
                func.count(col(UsageEntry.id)),
            )
            .where(col(UsageEntry.period) == period.name)
            .group_by(col(UsageEntry.model))
        ).all()
        lines = [GroupLine(str(m), int(u), int(t), int(r)) for m, u, t, r in rows]
        return tuple(sorted(lines, key=lambda g: (-g.tokens, g.name)))

    def _alerts(self, s: Session, period: Period) -> dict[int, set[str]]:
        rows = s.exec(
            select(OutboxMessage.user_id, OutboxMessage.kind).where(
                OutboxMessage.dedupe_key == period.name,
                col(OutboxMessage.kind).in_([k.value for k in _ALERT_ORDER]),
                col(OutboxMessage.user_id).is_not(None),
            )
        ).all()
        out: dict[int, set[str]] = defaultdict(set)
        for uid, kind in rows:
            out[int(uid or 0)].add(kind)
        return out

    def _credits(self, s: Session, period: Period) -> list[tuple[int, str, int, int]]:
        """(user id, kind, credits, tokens) of the credits made in the period."""
        rows = s.execute(
            sa_select(
                col(CreditEntry.user_id),
                col(CreditEntry.kind),
                func.count(col(CreditEntry.id)),
                func.sum(col(CreditEntry.amount)),
            )
            .where(col(CreditEntry.created_at) >= period.start, col(CreditEntry.created_at) < period.end)
            .group_by(col(CreditEntry.user_id), col(CreditEntry.kind))
        ).all()
        return [(int(uid), str(kind), int(n), int(tokens)) for uid, kind, n, tokens in rows]

    def _users(self, ids: Iterable[int]) -> Iterator[User]:
        """The users, a chunk at a time, so only one chunk of rows is held (the lines are kept)."""
        wanted = sorted(ids)
        for i in range(0, len(wanted), _ID_CHUNK):
            with Session(self.engine) as s:
                yield from s.exec(select(User).where(col(User.id).in_(wanted[i : i + _ID_CHUNK]))).all()


def _totals(rows: Iterable[tuple[int, int, int, int]]) -> Totals:
    users = tokens = monthly = additional = requests = 0
    for t, m, a, r in rows:
        users, tokens, monthly, additional, requests = users + 1, tokens + t, monthly + m, additional + a, requests + r
    return Totals(users, tokens, monthly, additional, requests)


def _by_plan(lines: Sequence[UserLine]) -> tuple[GroupLine, ...]:
    agg: dict[str, list[int]] = {}
    for u in lines:
        if u.requests:
            g = agg.setdefault(u.plan, [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + u.tokens, g[2] + u.requests
    groups = [GroupLine(plan, users, tokens, requests) for plan, (users, tokens, requests) in agg.items()]
    return tuple(sorted(groups, key=lambda g: (-g.tokens, g.name)))


# --- entry points (CLI and Celery) ----------------------------------------------------------------


async def monthly_report(runtime: Runtime, month: str | None = None) -> MonthlyReport:
    """The report of `month` (default: the last month that ended), after flushing the ledger."""
    now = runtime.ledger.clock()
    period = period_to_renew(now, month)
    if period.end <= now:
        await flush_through(runtime, period)
    else:
        await runtime.flusher.drain()
    builder = ReportBuilder(runtime.engine, runtime.ledger, runtime.settings)
    return await asyncio.to_thread(builder.build, period, now)


async def send_monthly_report(runtime: Runtime, month: str | None = None) -> tuple[MonthlyReport, int]:
    """Build the report and put one email per admin in the outbox (once per admin and period)."""
    report = await monthly_report(runtime, month)
    payload = report.email_payload()
    sent = 0
    for admin in runtime.settings.admin_emails:
        sent += await asyncio.to_thread(
            runtime.ledger.enqueue_email, recipient=admin, kind=REPORT_EMAIL, dedupe_key=report.period, payload=payload
        )
    return report, sent

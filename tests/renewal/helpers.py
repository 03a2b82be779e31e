"""Helpers for the renewal and report tests: spend and credit tokens at a chosen instant."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlmodel import Session, col, func, select

from solaris_tokens.domain import CallDetails, CreditKind, Settlement, Usage
from solaris_tokens.ledger.models import OutboxMessage, UsageEntry
from solaris_tokens.ledger.renewal_models import PeriodSummary
from solaris_tokens.notify import formatting
from solaris_tokens.runtime import Runtime
from tests.support import FakeClock

TEMPLATES = Path(__file__).resolve().parents[2] / "solaris_tokens" / "notify" / "templates"


async def spend(
    runtime: Runtime, clock: FakeClock, email: str, tokens: int, *, at: datetime | None = None, model: str = "gpt-4o"
) -> Settlement:
    """One admitted request that really used `tokens` (prompt + completion), settled at `at`."""
    if at is not None:
        clock.set(at)
    decision = await runtime.quota.authorize(email, 1)
    assert decision.admitted, decision
    prompt = tokens // 3
    return await runtime.quota.settle(
        email,
        decision.reservation_id,
        Usage(prompt, tokens - prompt, CallDetails(model=model, call_id=uuid.uuid4().hex)),
    )


async def credit(
    runtime: Runtime, clock: FakeClock, email: str, tokens: int, kind: CreditKind, *, at: datetime | None = None
) -> None:
    if at is not None:
        clock.set(at)
    await runtime.quota.ensure_loaded(email)
    await runtime.quota.credit(email, tokens, kind, key=uuid.uuid4().hex, actor="admin@x.com", reason="test")


def summaries(runtime: Runtime, period: str) -> dict[int, PeriodSummary]:
    with Session(runtime.engine) as s:
        rows = s.exec(select(PeriodSummary).where(PeriodSummary.period == period)).all()
    return {r.user_id: r for r in rows}


def outbox(runtime: Runtime, kind: str) -> list[OutboxMessage]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(col(OutboxMessage.id))))


def payload(message: OutboxMessage) -> dict[str, Any]:
    value = json.loads(message.payload)
    assert isinstance(value, dict)
    return value


def ledger_usage(runtime: Runtime, period: str, user_id: int | None = None) -> tuple[int, int, int, int]:
    """(total tokens, monthly tokens, additional tokens, requests) straight from usage_entries."""
    with Session(runtime.engine) as s:
        query = select(
            func.coalesce(func.sum(col(UsageEntry.prompt_tokens) + col(UsageEntry.completion_tokens)), 0),
            func.coalesce(func.sum(UsageEntry.monthly_tokens), 0),
            func.coalesce(func.sum(UsageEntry.additional_tokens), 0),
            func.count(col(UsageEntry.id)),
        ).where(UsageEntry.period == period)
        if user_id is not None:
            query = query.where(UsageEntry.user_id == user_id)
        total, monthly, additional, requests = s.exec(query).one()
    return int(total), int(monthly), int(additional), int(requests)


def render(kind: str, variables: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of an email kind, rendered with plain Jinja2 and the renderer's settings.

    The variables every email gets from the renderer (product, user name, links) are filled in here.
    """
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(tokens=formatting.tokens, percent=formatting.percent, month_br=formatting.month_br)
    values = {
        "product": "IA SOLARIS",
        "user_name": "Maria Silva",
        "statement_url": "http://localhost:4000/api/tokens/statement",
        "support_url": "http://localhost:4000/api/support/contact",
        "buy_url": "http://localhost:4000/api/tokens/purchase",
        **{k: v for k, v in variables.items() if k != "attachments"},
    }
    subject = " ".join(env.get_template(f"{kind}.subject.txt").render(**values).split())
    values["subject"] = subject
    return subject, env.get_template(f"{kind}.txt").render(**values), env.get_template(f"{kind}.html").render(**values)

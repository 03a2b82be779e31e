"""The admins' monthly report (SPEC R3): figures equal the ledger's; JSON, CSV and the email hold them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from solaris_tokens.domain import CreditKind
from solaris_tokens.errors import InvalidInput
from solaris_tokens.report import REPORT_EMAIL, Anomaly, anomaly, change_percent, monthly_report, send_monthly_report
from solaris_tokens.runtime import Runtime
from tests.renewal.helpers import credit, ledger_usage, outbox, payload, render, spend
from tests.support import FakeClock

REPORT_TIME = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


def nov(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def oct_(day: int) -> datetime:
    return datetime(2026, 10, day, 12, tzinfo=UTC)


async def seed_month(runtime: Runtime, clock: FakeClock) -> None:
    """A month with every kind of figure the report shows; the last 7 days hold only carol's 7,000."""
    # alice: limit 1,000 → warning (850), urgent (960), then a blocked request
    await runtime.quota.ensure_loaded("alice@x.com")
    await runtime.quota.set_limit("alice@x.com", 1000, actor="admin")
    await spend(runtime, clock, "alice@x.com", 850, at=nov(2), model="gpt-4o")
    await spend(runtime, clock, "alice@x.com", 110, at=nov(3), model="gpt-4o-mini")
    assert not (await runtime.quota.authorize("alice@x.com", 100)).admitted
    # bob (power plan): purchases and a bonus, some usage
    await runtime.quota.ensure_loaded("bob@x.com")
    await runtime.quota.change_user("bob@x.com", {"plan": "power"}, actor="admin", action="user.plan")
    await credit(runtime, clock, "bob@x.com", 5_000, CreditKind.PURCHASE, at=nov(4))
    await credit(runtime, clock, "bob@x.com", 100, CreditKind.BONUS, at=nov(5))
    await spend(runtime, clock, "bob@x.com", 20_000, at=nov(6), model="claude-sonnet")
    # carol: a credit from October (not this month's), compensation this month, usage in the pace window
    await credit(runtime, clock, "carol@x.com", 300, CreditKind.PURCHASE, at=oct_(20))
    await credit(runtime, clock, "carol@x.com", 250, CreditKind.COMPENSATION, at=nov(7))
    await spend(runtime, clock, "carol@x.com", 3_000, at=nov(25), model="gpt-4o")
    await spend(runtime, clock, "carol@x.com", 4_000, at=nov(30, 23), model="gpt-4o-mini")
    # dave spikes (100,000 → 400,000), erin drops (300,000 → 50,000), frank is too small to matter
    await spend(runtime, clock, "dave@x.com", 100_000, at=oct_(10), model="gpt-4o")
    await spend(runtime, clock, "dave@x.com", 400_000, at=nov(10), model="gpt-4o")
    await spend(runtime, clock, "erin@x.com", 300_000, at=oct_(11), model="gpt-4o")
    await spend(runtime, clock, "erin@x.com", 50_000, at=nov(11), model="gpt-4o")
    await spend(runtime, clock, "frank@x.com", 10, at=oct_(12), model="gpt-4o")
    await spend(runtime, clock, "frank@x.com", 1_000, at=nov(12), model="gpt-4o")
    # December's usage is not November's
    await spend(runtime, clock, "dave@x.com", 77_777, at=datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    clock.set(REPORT_TIME)


async def test_report_totals_equal_the_ledger(runtime: Runtime, clock: FakeClock) -> None:
    await seed_month(runtime, clock)
    report = await monthly_report(runtime)

    tokens, monthly, additional, requests = ledger_usage(runtime, "2026-11")
    t = report.totals
    assert (t.tokens, t.monthly_tokens, t.additional_tokens, t.requests, t.users) == (
        tokens,
        monthly,
        additional,
        requests,
        6,
    )
    assert tokens == 850 + 110 + 20_000 + 3_000 + 4_000 + 400_000 + 50_000 + 1_000
    assert report.previous_totals.tokens == ledger_usage(runtime, "2026-10")[0] == 400_010
    for groups in (report.users, report.plans, report.models):
        assert sum(g.tokens for g in groups) == tokens
        assert sum(g.requests for g in groups) == requests
    assert {p.name: (p.users, p.tokens) for p in report.plans} == {
        "basic": (5, tokens - 20_000),
        "power": (1, 20_000),
    }
    assert {m.name: m.tokens for m in report.models} == {
        "gpt-4o": 850 + 3_000 + 400_000 + 50_000 + 1_000,
        "gpt-4o-mini": 110 + 4_000,
        "claude-sonnet": 20_000,
    }


async def test_report_shows_thresholds_credits_top_consumers_anomalies_and_projection(
    runtime: Runtime, clock: FakeClock
) -> None:
    await seed_month(runtime, clock)
    report = await monthly_report(runtime, "2026-11")

    assert report.alerts == {"warning": ("alice@x.com",), "urgent": ("alice@x.com",), "blocked": ("alice@x.com",)}
    by_email = {u.email: u for u in report.users}
    assert (by_email["alice@x.com"].highest_alert, by_email["alice@x.com"].percent_of_limit) == ("blocked", 96)
    assert {(c.kind, c.credits, c.tokens, c.users) for c in report.credits} == {
        ("purchase", 1, 5_000, 1),
        ("bonus", 1, 100, 1),
        ("compensation", 1, 250, 1),
    }
    assert (by_email["bob@x.com"].purchased, by_email["bob@x.com"].credited) == (5_000, 5_100)
    assert (by_email["carol@x.com"].purchased, by_email["carol@x.com"].credited) == (0, 250)
    assert [u.email for u in report.top_consumers][:3] == ["dave@x.com", "erin@x.com", "bob@x.com"]
    assert [(u.email, u.anomaly, u.change_percent) for u in report.anomalies] == [
        ("dave@x.com", "spike", 300),
        ("erin@x.com", "drop", -83),
    ]
    assert (by_email["frank@x.com"].anomaly, by_email["frank@x.com"].change_percent) == ("", 9900)
    # the last 7 days of November held carol's 7,000 tokens in 2 requests: December has 31 days
    p = report.projection
    assert (p.period, p.pace_days, p.tokens, p.requests) == ("2026-12", 7, 31_000, 8)
    assert by_email["carol@x.com"].projected_tokens == 31_000
    assert p.users_over_limit == 0


async def test_report_renders_as_json_csv_and_text(runtime: Runtime, clock: FakeClock) -> None:
    await seed_month(runtime, clock)
    report = await monthly_report(runtime)

    data = json.loads(report.to_json())
    assert data["totals"]["tokens"] == report.totals.tokens
    assert data["period"] == "2026-11"
    assert len(data["users"]) == len(report.users) == 6
    assert [a["email"] for a in data["anomalies"]] == ["dave@x.com", "erin@x.com"]

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == 6
    assert sum(int(r["tokens"]) for r in rows) == report.totals.tokens
    assert {r["period"] for r in rows} == {"2026-11"}
    assert rows[0]["email"] == "dave@x.com" and rows[0]["anomaly"] == "spike"

    text = report.to_text()
    assert "Monthly report 2026-11" in text
    assert f"{report.totals.tokens:,}" in text
    assert "dave@x.com" in text


async def test_report_is_emailed_once_per_admin_with_the_csv_attached(runtime: Runtime, clock: FakeClock) -> None:
    await seed_month(runtime, clock)
    runtime.settings.admin_emails = ["boss@x.com", "ops@x.com"]

    report, sent = await send_monthly_report(runtime)
    _, again = await send_monthly_report(runtime)

    assert (sent, again) == (2, 0)
    messages = outbox(runtime, REPORT_EMAIL)
    assert sorted((m.recipient, m.dedupe_key) for m in messages) == [
        ("boss@x.com", "2026-11"),
        ("ops@x.com", "2026-11"),
    ]
    values = payload(messages[0])
    [attachment] = values["attachments"]
    assert (attachment["filename"], attachment["content_type"]) == ("solaris-relatorio-2026-11.csv", "text/csv")
    rows = list(csv.DictReader(io.StringIO(attachment["content"])))
    assert sum(int(r["tokens"]) for r in rows) == report.totals.tokens

    subject, body, html = render(REPORT_EMAIL, values)
    assert subject == "📊 Relatório mensal de tokens: novembro de 2026"
    lines = body.splitlines()
    for line in (
        "• Tokens consumidos: 478.960 (mensais: 478.960; adicionais: 0)",
        "• Consultas: 8",
        "• Usuários com consumo: 6",
        "• Em relação a outubro de 2026: +19% (400.010 tokens)",
        "• 80%: 1",
        "• 95%: 1",
        "• 100% (bloqueados): 1",
        "• Compras: 1 crédito, 5.000 tokens, 1 usuário",
        "1. dave@x.com (basic): 400.000 tokens, 40% do limite",
        "• dave@x.com: 100.000 → 400.000 tokens (+300%)",
        "• erin@x.com: 300.000 → 50.000 tokens (-83%)",
        "• Tokens: 31.000",
        "• power: 1 usuário, 20.000 tokens, 1 consulta",
        "• basic: 5 usuários, 458.960 tokens, 7 consultas",
        "• claude-sonnet: 1 usuário, 20.000 tokens, 1 consulta",
    ):
        assert line in lines, line
    assert "<td" in html and "dave@x.com" in html and "31.000" in html


async def test_an_empty_month_still_reports(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(REPORT_TIME)
    report = await monthly_report(runtime)
    assert (report.totals.tokens, report.users, report.change_percent, report.projection.tokens) == (0, (), None, 0)
    assert list(csv.reader(io.StringIO(report.to_csv())))[1:] == []
    assert "Top consumers: none" in report.to_text()
    _, body, _ = render(REPORT_EMAIL, report.email_payload())
    assert "• Em relação a outubro de 2026: sem consumo no mês anterior" in body.splitlines()


async def test_a_month_not_yet_started_is_refused(runtime: Runtime, clock: FakeClock) -> None:
    clock.set(REPORT_TIME)
    with pytest.raises(InvalidInput):
        await monthly_report(runtime, "2027-01")


def test_month_over_month_rules() -> None:
    assert change_percent(150, 100) == 50
    assert change_percent(50, 300) == -83
    assert change_percent(5, 0) is None
    rule = {"factor": 3, "min_tokens": 100}
    assert anomaly(300, 100, **rule) is Anomaly.SPIKE
    assert anomaly(299, 100, **rule) is None
    assert anomaly(100, 300, **rule) is Anomaly.DROP
    assert anomaly(150, 0, **rule) is Anomaly.SPIKE
    assert anomaly(99, 0, **rule) is None
    assert anomaly(0, 99, **rule) is None

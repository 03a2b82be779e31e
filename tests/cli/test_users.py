"""`users ...` commands (SPEC M1, M2, M4, M5, M7; issue 2 item 7), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from solaris_tokens.domain import Verdict
from tests.cli.conftest import Cli, Helpers
from tests.cli.mail import render
from tests.support import FakeClock

MARIA = "maria.silva@empresa.com.br"
ACCOUNT_FIELDS = {
    "email",
    "name",
    "plan",
    "status",
    "limit",
    "used",
    "reserved",
    "additional",
    "available",
    "period",
    "next_reset",
}


def test_first_request_450_tokens_shown_by_users_show(cli: Cli, helpers: Helpers) -> None:
    """The spec's worked example, as an admin reads it: 999.550 available, one request."""
    helpers.use(MARIA, 300, 150)
    shown = cli.json("users", "show", MARIA)
    assert shown.keys() >= ACCOUNT_FIELDS
    assert shown["name"] == "Maria Silva"
    assert (shown["plan"], shown["status"]) == ("basic", "active")
    assert (shown["limit"], shown["used"], shown["reserved"], shown["additional"]) == (1_000_000, 450, 0, 0)
    assert shown["available"] == 999_550
    assert (shown["period"], shown["next_reset"]) == ("2026-11", "2026-12-01T00:00:00Z")
    assert (shown["warning_percent"], shown["urgent_percent"]) == (80, 95)
    (recent,) = shown["recent_requests"]
    assert (recent["model"], recent["prompt_tokens"], recent["completion_tokens"], recent["monthly"]) == (
        "gpt-4o",
        300,
        150,
        450,
    )
    human = cli("users", "show", MARIA).stdout
    assert "999.550" in human and "Maria Silva" in human and "2026-12-01 00:00:00" in human


def test_set_limit_add_tokens_and_their_audit(cli: Cli, helpers: Helpers) -> None:
    helpers.use(MARIA, 1000, 0)
    limited = cli.json("users", "set-limit", MARIA, "2M", "--reason", "projeto especial", "--actor", "ana")
    assert (limited["limit"], limited["available"]) == (2_000_000, 1_999_000)

    added = cli.json("users", "add-tokens", MARIA, "50.000", "--reason", "bônus de boas-vindas", "--actor", "ana")
    assert (added["outcome"], added["kind"], added["tokens"]) == ("credited", "bonus", 50_000)
    assert added["account"]["additional"] == 50_000
    assert added["key"].startswith("bonus:")
    (mail,) = helpers.outbox("purchase_credited")
    payload = helpers.payload(mail)
    assert (payload["credit_kind"], payload["tokens"], payload["balance"]) == ("bonus", 50_000, 2_049_000)
    _, body, _ = render("purchase_credited", payload)
    assert "Você recebeu tokens adicionais de bônus." in body
    assert "• Motivo: bônus de boas-vindas" in body
    assert "• Novo saldo: 2.049.000 tokens" in body

    cli("users", "add-tokens", MARIA, "10k", code=2)  # --reason is required
    assert "tokens must be >= 1" in cli("users", "add-tokens", MARIA, "0", "--reason", "x", code=1).output

    audit = cli.json("audit", "list", "--email", MARIA, "--actor", "ana")
    by_action = {e["action"]: e for e in audit}
    assert by_action["user.set_limit"]["before"] == {"monthly_limit": None}
    assert by_action["user.set_limit"]["after"] == {"monthly_limit": 2_000_000}
    assert by_action["user.set_limit"]["reason"] == "projeto especial"
    assert by_action["tokens.bonus"]["after"]["credited"] == 50_000
    assert by_action["tokens.bonus"]["reason"] == "bônus de boas-vindas"


def test_compensation_after_an_incident_credits_once_per_key(cli: Cli, helpers: Helpers) -> None:
    """X4 by hand: rerunning the same incident's compensation (same --key) credits once."""
    helpers.use(MARIA, 10, 10)
    args = ["users", "compensate", MARIA, "20k", "--reason", "Incidente #42: Redis fora do ar", "--key", "incident-42"]
    first = cli.json(*args, "--actor", "ops")
    again = cli.json(*args, "--actor", "ops")
    assert (first["outcome"], again["outcome"]) == ("credited", "duplicate")
    assert again["account"]["additional"] == 20_000
    assert [(c.kind, c.amount, c.idempotency_key) for c in helpers.credits()] == [
        ("compensation", 20_000, "incident-42")
    ]
    (mail,) = helpers.outbox("purchase_credited")
    _, body, html = render("purchase_credited", helpers.payload(mail))
    assert "como compensação" in body and "Incidente #42: Redis fora do ar" in body
    assert "Não expira (acumulativo)" in html
    quiet = cli("users", "compensate", MARIA, "1000", "--reason", "ajuste", "--no-notify")
    assert "+1.000 compensation tokens" in quiet.stdout
    assert len(helpers.outbox("purchase_credited")) == 1


def test_suspend_until_t_refused_before_t_admitted_after_t(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    """Enforced by the next reservation at once; lifts itself at T with no job (injected clock)."""
    helpers.use(MARIA, 100, 100)
    until = clock.now + timedelta(hours=6)
    result = cli.json(
        "users", "suspend", MARIA, "--until", until.isoformat(), "--reason", "Uso anômalo em análise", "--actor", "ana"
    )
    assert result["status"] == "suspended"
    assert result["suspended_until"] == until.isoformat()
    assert result["suspend_reason"] == "Uso anômalo em análise"

    decision = helpers.authorize(MARIA)
    assert decision.verdict is Verdict.SUSPENDED  # the proxy's 403
    assert decision.suspended_until == until
    assert decision.suspend_reason == "Uso anômalo em análise"

    clock.set(until - timedelta(milliseconds=1))
    assert helpers.authorize(MARIA).verdict is Verdict.SUSPENDED
    assert cli.json("users", "show", MARIA)["status"] == "suspended"

    clock.set(until)
    assert helpers.authorize(MARIA).verdict is Verdict.ADMITTED  # the proxy's 200
    shown = cli.json("users", "show", MARIA)
    assert (shown["status"], shown["suspended_until"], shown["suspend_reason"]) == ("active", None, "")

    (entry,) = cli.json("audit", "list", "--action", "user.suspend")
    assert entry["before"] == {"status": "active", "suspended_until": None, "suspend_reason": ""}
    assert entry["after"]["status"] == "suspended"
    assert (entry["actor"], entry["reason"]) == ("ana", "Uso anômalo em análise")


def test_suspend_for_a_duration_and_indefinitely_until_resumed(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    helpers.use(MARIA, 10, 10)
    timed = cli.json("users", "suspend", MARIA, "--until", "24h", "--reason", "pausa")
    assert timed["suspended_until"] == (clock.now + timedelta(hours=24)).isoformat()
    human = cli("users", "suspend", MARIA, "--reason", "Violação dos termos de uso").stdout
    assert "suspended until resumed" in human
    clock.advance(days=400)
    decision = helpers.authorize(MARIA)
    assert decision.verdict is Verdict.SUSPENDED and decision.suspended_until is None
    assert "indefinitely" in cli("users", "show", MARIA).stdout

    cli("users", "resume", MARIA, "--reason", "esclarecido", "--actor", "ana")
    assert helpers.authorize(MARIA).verdict is Verdict.ADMITTED
    (entry,) = cli.json("audit", "list", "--action", "user.resume")
    assert entry["before"]["status"] == "suspended" and entry["after"]["status"] == "active"

    past = (clock.now - timedelta(hours=1)).isoformat()
    assert "not in the future" in cli("users", "suspend", MARIA, "--until", past, "--reason", "x", code=1).output
    assert "not a date/time" in cli("users", "suspend", MARIA, "--until", "amanhã", "--reason", "x", code=1).output
    assert "a reason is required" in cli("users", "suspend", MARIA, "--reason", "", code=1).output
    assert helpers.authorize(MARIA).verdict is Verdict.ADMITTED


def test_set_plan_power_user(cli: Cli, helpers: Helpers) -> None:
    helpers.use(MARIA, 10, 10)
    moved = cli.json("users", "set-plan", MARIA, "power", "--reason", "desenvolvedor")
    assert (moved["plan"], moved["limit"], moved["warning_percent"], moved["urgent_percent"]) == (
        "power",
        3_000_000,
        90,
        98,
    )
    assert "unknown plan 'gold'" in cli("users", "set-plan", MARIA, "gold", code=1).output
    assert cli.json("users", "show", MARIA)["plan"] == "power"


def test_users_list_highlights_near_limit_and_filters(cli: Cli, helpers: Helpers) -> None:
    helpers.use("casual@x.com", 100_000, 0)
    helpers.use("perto@x.com", 850_000, 0)
    helpers.use("quase@x.com", 970_000, 0)
    cli("users", "set-plan", "casual@x.com", "casual")
    cli("users", "suspend", "perto@x.com", "--reason", "análise")

    everyone = cli.json("users", "list")
    assert [(u["email"], u["percent"]) for u in everyone] == [
        ("quase@x.com", 97.0),
        ("perto@x.com", 85.0),
        ("casual@x.com", 10.0),
    ]
    near = cli.json("users", "list", "--near-limit", "80")
    assert [u["email"] for u in near] == ["quase@x.com", "perto@x.com"]
    assert [u["email"] for u in cli.json("users", "list", "--status", "suspended")] == ["perto@x.com"]
    assert [u["email"] for u in cli.json("users", "list", "--plan", "casual")] == ["casual@x.com"]
    human = cli("users", "list").stdout
    assert "3 users" in human and "97.0" in human


def _at(clock: FakeClock, day: int, hour: int, minute: int = 0) -> None:
    clock.set(datetime(2026, 11, day, hour, minute, tzinfo=UTC))


def test_statement_totals_equal_show(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    """Debits with their monthly/additional split, credits with actor and reason, a limit change,
    a running balance, and closing figures identical to `users show`."""
    clock.set(datetime(2026, 10, 20, 9, 0, tzinfo=UTC))
    helpers.use(MARIA, 600_000, 300_000, model="gpt-4o")
    clock.advance(hours=1)
    cli("users", "add-tokens", MARIA, "300k", "--reason", "bônus de outubro", "--actor", "ana")
    clock.advance(hours=1)
    helpers.use(MARIA, 100_000, 100_000, model="gpt-4o")  # 100k monthly + 100k additional

    _at(clock, 2, 10)
    helpers.use(MARIA, 400_000, 100_000, model="gpt-4o-mini")
    _at(clock, 3, 11)
    cli("users", "compensate", MARIA, "50k", "--reason", "Incidente #7", "--actor", "ops", "--no-notify")
    _at(clock, 5, 12)
    cli("users", "set-limit", MARIA, "600k", "--reason", "corte de custos", "--actor", "ana")
    _at(clock, 6, 13)
    helpers.use(MARIA, 150_000, 50_000, model="claude")  # 100k monthly left, then 100k additional

    statement = cli.json("users", "statement", MARIA)
    shown = cli.json("users", "show", MARIA)
    totals = statement["totals"]
    assert statement["period"] == shown["period"] == "2026-11"
    assert statement["opening"] == {"limit": 1_000_000, "additional": 200_000, "balance": 1_200_000}
    assert totals["used"] == shown["used"] == 600_000
    assert totals["limit"] == shown["limit"] == 600_000
    assert totals["additional"] == shown["additional"] == 150_000
    assert totals["requests"] == shown["requests"] == 2
    assert totals["balance"] == shown["available"] == 150_000
    assert (totals["credited"], totals["debited_additional"]) == (50_000, 100_000)
    assert statement["account"]["available"] == shown["available"]

    lines = statement["lines"]
    assert [(line["kind"], line["tokens"]) for line in lines] == [
        ("usage", -500_000),
        ("credit", 50_000),
        ("limit", -400_000),
        ("usage", -200_000),
    ]
    assert [line["balance"] for line in lines] == [700_000, 750_000, 350_000, 150_000]
    last = lines[-1]
    assert (last["model"], last["monthly"], last["additional"]) == ("claude", 100_000, -100_000)
    credit = lines[1]
    assert (credit["credit_kind"], credit["actor"], credit["reason"]) == ("compensation", "ops", "Incidente #7")
    change = lines[2]
    assert (change["limit"], change["actor"], change["reason"]) == (600_000, "ana", "corte de custos")

    october = cli.json("users", "statement", MARIA, "--month", "2026-10")
    assert october["opening"] == {"limit": 1_000_000, "additional": 0, "balance": 1_000_000}
    assert [line["kind"] for line in october["lines"]] == ["usage", "credit", "usage"]
    assert october["totals"]["used"] == 1_000_000
    assert october["totals"]["additional"] == statement["opening"]["additional"]
    assert october["account"] is None

    human = cli("users", "statement", MARIA).stdout
    assert "totals: 2 requests, used 600.000 of 600.000" in human
    assert "live: used 600.000, additional 150.000, reserved 0, available 150.000" in human
    assert "period must look like YYYY-MM" in cli("users", "statement", MARIA, "--month", "nov", code=1).output


def test_statement_of_a_plan_change_and_an_open_reservation(
    cli: Cli, helpers: Helpers, core: Any, clock: FakeClock
) -> None:
    helpers.use(MARIA, 100, 0)
    clock.advance(minutes=5)
    cli("users", "set-plan", MARIA, "power", "--actor", "ana")

    async def hold(rt: Any) -> None:
        decision = await rt.quota.authorize(MARIA, 5_000)
        assert decision.admitted

    core(hold)  # a request in flight: reserved, not yet in the ledger
    statement = cli.json("users", "statement", MARIA)
    shown = cli.json("users", "show", MARIA)
    assert [(line["kind"], line["tokens"]) for line in statement["lines"]] == [("usage", -100), ("limit", 2_000_000)]
    assert statement["totals"]["limit"] == shown["limit"] == 3_000_000
    assert shown["reserved"] == 5_000
    assert statement["totals"]["balance"] - shown["reserved"] == shown["available"]


def test_usage_by_hour_and_by_day(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    for day, hour, minute, tokens in [(2, 14, 5, 1000), (2, 14, 50, 2000), (2, 15, 0, 500), (9, 9, 30, 4000)]:
        _at(clock, day, hour, minute)
        helpers.use(MARIA, tokens, 0)
    clock.set(datetime(2026, 11, 10, tzinfo=UTC))

    hourly = cli.json("users", "usage", MARIA, "--by", "hour")
    assert [(b["start"], b["requests"], b["total"]) for b in hourly["buckets"]] == [
        ("2026-11-02T14:00:00+00:00", 2, 3000),
        ("2026-11-02T15:00:00+00:00", 1, 500),
        ("2026-11-09T09:00:00+00:00", 1, 4000),
    ]
    daily = cli.json("users", "usage", MARIA, "--by", "day")
    assert [(b["start"][:10], b["total"]) for b in daily["buckets"]] == [("2026-11-02", 3500), ("2026-11-09", 4000)]
    assert (daily["requests"], daily["total"]) == (4, 7500)
    recent = cli.json("users", "usage", MARIA, "--days", "3")
    assert [b["total"] for b in recent["buckets"]] == [4000]
    assert cli.json("users", "usage", MARIA, "--month", "2026-10")["buckets"] == []
    human = cli("users", "usage", MARIA, "--by", "hour").stdout
    assert "2026-11-02 14:00" in human and "█" in human
    cli("users", "usage", MARIA, "--by", "week", code=2)


@pytest.mark.parametrize(
    ("template", "extra", "subject", "phrase"),
    [
        ("balance", [], "Seu saldo de tokens na IA SOLARIS", "• Disponível: 999.800 tokens"),
        ("limit_changed", [], "Seu limite mensal de tokens foi ajustado", "ajustado para 1.000.000 tokens"),
        ("contact", ["--text", "Podemos conversar amanhã?"], "A equipe da IA SOLARIS quer falar com você", "amanhã"),
        ("custom", ["--subject", "Manutenção", "--text", "Sábado às 22h."], "Manutenção", "Sábado às 22h."),
    ],
)
def test_message_sends_a_templated_email(
    cli: Cli, helpers: Helpers, template: str, extra: list[str], subject: str, phrase: str
) -> None:
    helpers.use(MARIA, 100, 100)
    result = cli.json("users", "message", MARIA, "--template", template, *extra, "--actor", "ana")
    assert result["queued"] is True
    (mail,) = helpers.outbox("user_message")
    assert mail.recipient == MARIA
    payload = helpers.payload(mail)
    assert payload["template"] == template and payload["available"] == 999_800
    got_subject, body, _ = render("user_message", payload)
    assert got_subject == subject
    assert phrase in body
    (entry,) = cli.json("audit", "list", "--action", "user.message")
    assert (entry["actor"], entry["after"]["template"]) == ("ana", template)


def test_message_about_a_suspension_and_bad_messages(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    helpers.use(MARIA, 10, 10)
    assert "is not suspended" in cli("users", "message", MARIA, "--template", "suspended", code=1).output
    assert "a subject" in cli("users", "message", MARIA, "--template", "custom", "--text", "x", code=1).output
    assert "a text" in cli("users", "message", MARIA, "--template", "contact", code=1).output
    cli("users", "message", MARIA, "--template", "nope", code=2)
    assert helpers.outbox("user_message") == []

    until = clock.now + timedelta(days=2)
    cli("users", "suspend", MARIA, "--until", until.isoformat(), "--reason", "Uso <automatizado>")
    cli("users", "message", MARIA, "--template", "suspended", "--key", "susp-1")
    again = cli.json("users", "message", MARIA, "--template", "suspended", "--key", "susp-1")
    assert again["queued"] is False
    (mail,) = helpers.outbox("user_message")
    subject, body, html = render("user_message", helpers.payload(mail))
    assert subject == "Seu acesso à IA SOLARIS foi suspenso"
    assert "foi suspenso até 17/11/2026 às 12:00 UTC." in body
    assert "Motivo: Uso <automatizado>" in body
    assert "Uso &lt;automatizado&gt;" in html and "<automatizado>" not in html


def test_unknown_user_is_a_clear_error(cli: Cli) -> None:
    for args in (
        ["users", "show", "ninguem@x.com"],
        ["users", "statement", "ninguem@x.com"],
        ["users", "set-limit", "ninguem@x.com", "1M"],
        ["users", "add-tokens", "ninguem@x.com", "1k", "--reason", "x"],
        ["users", "suspend", "ninguem@x.com", "--reason", "x"],
    ):
        result = cli(*args, code=1)
        assert "no user with email ninguem@x.com" in result.output
    assert cli.json("users", "list") == []


def test_overview_near_limit_recent_alerts_pending_requests_and_health(cli: Cli, helpers: Helpers) -> None:
    helpers.use("ok@x.com", 100_000, 0)
    helpers.use("perto@x.com", 850_000, 0)  # crosses 80%: a warning alert
    helpers.use("fim@x.com", 1_000_000, 0)  # crosses 80% and 95%
    assert helpers.authorize("fim@x.com").verdict is Verdict.EXHAUSTED  # the blocked alert
    cli("users", "suspend", "ok@x.com", "--reason", "análise")
    cli("requests", "create", "--email", "fim@x.com", "--tokens", "1M", "--justification", "fim do mês")
    cli("ledger", "flush")

    view = cli.json("users", "overview")
    assert (view["users"], view["suspended"], view["exhausted"], view["pending_requests"]) == (3, 1, 1, 1)
    assert [u["email"] for u in view["near_limit"]] == ["fim@x.com", "perto@x.com"]
    assert sorted((a["recipient"], a["kind"]) for a in view["recent_alerts"]) == [
        ("fim@x.com", "blocked"),
        ("fim@x.com", "urgent"),
        ("fim@x.com", "warning"),
        ("perto@x.com", "warning"),
    ]
    assert all(a["period"] == "2026-11" for a in view["recent_alerts"])
    assert view["health"] == {"redis": True, "database": True}
    human = cli("users", "overview").stdout
    assert "3 users, 1 suspended, 1 with nothing left, 1 purchase requests pending" in human
    assert "perto@x.com" in human and "blocked" in human

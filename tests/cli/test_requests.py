"""Purchase requests end to end through the CLI (SPEC P2, P3, M3), on both backends."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from solaris_tokens.admin import AdminService
from solaris_tokens.domain import CreditKind, CreditOutcome, Verdict
from solaris_tokens.errors import SolarisError
from solaris_tokens.purchases import Approval, PurchaseService
from solaris_tokens.runtime import Runtime
from tests.cli.conftest import ADMINS, Cli, Core, Helpers
from tests.cli.mail import render

MARIA = "maria.silva@empresa.com.br"


def _exhaust(helpers: Helpers, email: str = MARIA) -> None:
    """The spec's user at 100% of the monthly 1.000.000 tokens."""
    helpers.use(email, 600_000, 400_000)
    assert helpers.authorize(email).verdict is Verdict.EXHAUSTED


def _create(cli: Cli, email: str = MARIA, tokens: str = "500k", urgency: str = "alta") -> dict[str, Any]:
    data: dict[str, Any] = cli.json(
        "requests",
        "create",
        "--email",
        email,
        "--tokens",
        tokens,
        "--justification",
        "Fechamento do relatório trimestral",
        "--urgency",
        urgency,
        "--actor",
        "suporte@solaris.test",
    )
    return data


def test_request_500k_confirmation_approve_blocked_user_can_chat_again(cli: Cli, helpers: Helpers) -> None:
    _exhaust(helpers)

    # The form: 500k, justification, urgency → ticket #1, R$ 25,00.
    created = _create(cli)
    assert created["ticket"] == "#1"
    assert created["tokens"] == 500_000
    assert created["quantity"] == "500k"
    assert created["price_cents"] == 2500
    assert created["price"] == "R$ 25,00"
    assert created["status"] == "pending"
    assert created["urgency"] == "alta"
    assert created["requested_by"] == "suporte@solaris.test"

    # The confirmation email to the user, with the spec's text.
    (received,) = helpers.outbox("purchase_received")
    assert received.recipient == MARIA
    assert received.dedupe_key == "purchase-request:1"
    payload = helpers.payload(received)
    assert (payload["ticket"], payload["tokens"], payload["price_cents"]) == (1, 500_000, 2500)
    subject, body, _ = render("purchase_received", payload)
    assert subject == "Solicitação de tokens recebida #1"
    assert "Sua solicitação foi recebida e será processada em até 24h." in body
    assert "• Quantidade: 500.000 tokens" in body
    assert "• Valor estimado: R$ 25,00" in body
    assert "• Ticket: #1" in body
    assert "Você receberá confirmação quando os tokens forem adicionados." in body

    # Every admin is notified, with the user's situation and how to decide.
    notices = helpers.outbox("purchase_admin_notice")
    assert sorted(n.recipient for n in notices) == sorted(ADMINS)
    notice = helpers.payload(notices[0])
    assert notice["user_used"] == 1_000_000 and notice["user_available"] == 0
    subject, body, _ = render("purchase_admin_notice", notice, user_name="Admin")
    assert subject == "Nova solicitação de tokens #1: 500.000 tokens para Maria Silva (urgência Alta)"
    assert "solaris-tokens requests approve 1" in body
    assert "Justificativa: Fechamento do relatório trimestral" in body

    # The admin approves: the user, blocked at 100%, can chat again at once.
    approved = cli.json("requests", "approve", "1", "--note", "pagamento confirmado", "--actor", "ana@solaris.test")
    assert approved["newly_approved"] is True
    assert approved["credit"] == "credited"
    assert approved["request"]["status"] == "approved"
    assert approved["request"]["reviewer"] == "ana@solaris.test"
    assert approved["account"]["additional"] == 500_000
    assert approved["account"]["available"] == 500_000
    assert helpers.authorize(MARIA, 500).verdict is Verdict.ADMITTED

    # "✅ Tokens adicionais creditados" with the new balance and "não expira".
    (credited,) = helpers.outbox("purchase_credited")
    assert credited.recipient == MARIA
    payload = helpers.payload(credited)
    assert (payload["tokens"], payload["balance"]) == (500_000, 500_000)
    subject, body, _ = render("purchase_credited", payload)
    assert subject == "✅ Tokens adicionais creditados"
    assert "Seus tokens adicionais foram creditados com sucesso!" in body
    assert "• Tokens adicionados: 500.000" in body
    assert "• Novo saldo: 500.000 tokens" in body
    assert "• Válido até: Não expira (acumulativo)" in body
    assert "Você já pode continuar usando a IA SOLARIS normalmente." in body

    # The statement shows the credit with actor and reason; the audit log has every step.
    statement = cli.json("users", "statement", MARIA)
    credit_lines = [line for line in statement["lines"] if line["kind"] == "credit"]
    assert len(credit_lines) == 1
    line = credit_lines[0]
    assert (line["credit_kind"], line["tokens"], line["actor"]) == ("purchase", 500_000, "ana@solaris.test")
    assert line["reason"] == "purchase request #1: pagamento confirmado"
    assert line["reference"] == "purchase-request:1"
    assert statement["totals"]["additional"] == 500_000

    audit = cli.json("audit", "list", "--email", MARIA)
    actions = [(e["action"], e["actor"]) for e in audit]
    assert ("purchase.requested", "suporte@solaris.test") in actions
    assert ("purchase.approved", "ana@solaris.test") in actions
    assert ("tokens.purchase", "ana@solaris.test") in actions
    approval = next(e for e in audit if e["action"] == "purchase.approved")
    assert approval["before"] == {"request": 1, "status": "pending"}
    assert approval["after"] == {"request": 1, "status": "approved", "tokens": 500_000}
    assert approval["reason"] == "pagamento confirmado"


def test_double_approve_credits_once(cli: Cli, helpers: Helpers) -> None:
    helpers.use(MARIA, 100, 50)
    _create(cli, tokens="1M")
    first = cli("requests", "approve", "1", "--actor", "ana")
    assert "approved: +1.000.000 tokens" in first.stdout
    second = cli("requests", "approve", "1", "--actor", "bruno")
    assert "already approved by ana; nothing credited again" in second.stdout
    again = cli.json("requests", "approve", "1", "--actor", "bruno")
    assert again["newly_approved"] is False
    assert again["credit"] == "duplicate"
    assert again["account"]["additional"] == 1_000_000
    assert [(c.kind, c.amount, c.actor) for c in helpers.credits()] == [("purchase", 1_000_000, "ana")]
    assert len(helpers.outbox("purchase_credited")) == 1
    shown = cli.json("requests", "show", "1")
    assert shown["credited"] is True and shown["reviewer"] == "ana"


def test_concurrent_approvals_credit_once(cli: Cli, helpers: Helpers, core: Core) -> None:
    """Six admins press approve at the same instant, each in its own process-like runtime."""
    helpers.use(MARIA, 100, 50)
    _create(cli, tokens="2M")
    barrier = threading.Barrier(6)
    results: list[Approval] = []
    errors: list[BaseException] = []

    def admin(n: int) -> None:
        async def work(rt: Runtime) -> Approval:
            barrier.wait(timeout=30)
            return await PurchaseService(rt.quota).approve(1, actor=f"admin{n}")

        try:
            results.append(core(work))
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=admin, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 6
    assert sum(r.newly_approved for r in results) == 1
    assert sum(r.credit is CreditOutcome.CREDITED for r in results) == 1
    winner = next(r for r in results if r.newly_approved).request.reviewer
    assert [(c.amount, c.actor) for c in helpers.credits()] == [(2_000_000, winner)]
    assert cli.json("users", "show", MARIA)["additional"] == 2_000_000
    assert len(helpers.outbox("purchase_credited")) == 1
    approvals = cli.json("audit", "list", "--action", "purchase.approved")
    assert [e["actor"] for e in approvals] == [winner]


def test_reject_sends_reason_and_credits_nothing(cli: Cli, helpers: Helpers) -> None:
    _exhaust(helpers)
    _create(cli)
    rejected = cli.json("requests", "reject", "1", "--reason", "Orçamento do departamento esgotado", "--actor", "ana")
    assert rejected["newly_rejected"] is True
    assert rejected["request"]["status"] == "rejected"
    assert rejected["request"]["note"] == "Orçamento do departamento esgotado"

    (mail,) = helpers.outbox("purchase_rejected")
    assert mail.recipient == MARIA
    payload = helpers.payload(mail)
    assert payload["reason"] == "Orçamento do departamento esgotado"
    subject, body, _ = render("purchase_rejected", payload)
    assert subject == "Solicitação de tokens #1 não aprovada"
    assert "• Motivo: Orçamento do departamento esgotado" in body
    assert "• Quantidade: 500.000 tokens" in body

    assert helpers.credits() == []
    assert helpers.outbox("purchase_credited") == []
    assert helpers.authorize(MARIA).verdict is Verdict.EXHAUSTED

    # Resolved once: approving a rejected request fails; rejecting again changes nothing.
    refused = cli("requests", "approve", "1", code=1)
    assert "already rejected by ana" in refused.output
    assert helpers.credits() == []
    again = cli.json("requests", "reject", "1", "--reason", "outro motivo")
    assert again["newly_rejected"] is False
    assert again["request"]["note"] == "Orçamento do departamento esgotado"
    assert len(helpers.outbox("purchase_rejected")) == 1


def test_approved_request_cannot_be_rejected(cli: Cli, helpers: Helpers) -> None:
    helpers.use(MARIA, 10, 10)
    _create(cli, tokens="100k")
    cli("requests", "approve", "1")
    refused = cli("requests", "reject", "1", "--reason", "engano", code=1)
    assert "already approved" in refused.output
    assert cli.json("users", "show", MARIA)["additional"] == 100_000
    assert helpers.outbox("purchase_rejected") == []


def test_list_show_and_review_queue_order(cli: Cli, helpers: Helpers, clock: Any) -> None:
    for email in ("ana@x.com", "bia@x.com", "caio@x.com"):
        helpers.use(email, 10, 10)
    _create(cli, "ana@x.com", "100k", "baixa")
    clock.advance(minutes=1)
    _create(cli, "bia@x.com", "1.500.000", "critica")
    clock.advance(minutes=1)
    _create(cli, "caio@x.com", "2M", "média")
    cli("requests", "approve", "1")

    everything = cli.json("requests", "list")
    assert [r["ticket"] for r in everything] == ["#3", "#2", "#1"]  # newest first
    queue = cli.json("requests", "list", "--status", "pending")
    assert [(r["ticket"], r["urgency"]) for r in queue] == [("#2", "crítica"), ("#3", "média")]
    assert queue[0]["quantity"] == "custom" and queue[0]["tokens"] == 1_500_000
    assert queue[0]["price"] == "R$ 75,00"
    assert [r["ticket"] for r in cli.json("requests", "list", "--email", "ana@x.com")] == ["#1"]

    human = cli("requests", "list", "--status", "pending").stdout
    assert "#2" in human and "#3" in human and "#1" not in human
    shown = cli("requests", "show", "2").stdout
    assert "bia@x.com" in shown and "Crítica" in shown and "R$ 75,00" in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "ninguem@x.com", "--tokens", "500k"], "no user with email ninguem@x.com"),
        (["--email", MARIA, "--tokens", "0"], "tokens must be >= 1"),
        (["--email", MARIA, "--tokens", "1.5"], "not a whole number"),
        (["--email", MARIA, "--tokens", "muitos"], "not a token quantity"),
        (["--email", MARIA, "--tokens", "500k", "--urgency", "urgente"], "urgency must be one of"),
        (["--email", MARIA, "--tokens", "500k", "--justification", "   "], "a justification is required"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(cli: Cli, helpers: Helpers, args: list[str], message: str) -> None:
    helpers.use(MARIA, 10, 10)
    full = ["requests", "create", *args]
    if "--justification" not in args:
        full += ["--justification", "preciso"]
    result = cli(*full, code=1)
    assert message in result.output
    assert cli.json("requests", "list") == []
    assert helpers.outbox("purchase_received") == []


def test_unknown_request_and_missing_reason(cli: Cli, helpers: Helpers) -> None:
    assert "no purchase request #42" in cli("requests", "approve", "42", code=1).output
    assert "no purchase request #42" in cli("requests", "show", "42", code=1).output
    helpers.use(MARIA, 10, 10)
    _create(cli)
    assert "a reason is required" in cli("requests", "reject", "1", "--reason", " ", code=1).output
    cli("requests", "reject", "1", code=2)  # --reason is required by the command line itself
    assert cli.json("requests", "show", "1")["status"] == "pending"


def test_database_refuses_to_rewrite_a_resolved_request(cli: Cli, helpers: Helpers, engine: Engine) -> None:
    """The review trail is enforced by the database, not only by Python."""
    helpers.use(MARIA, 10, 10)
    _create(cli)
    cli("requests", "approve", "1")
    for statement in (
        "UPDATE purchase_requests SET status = 'rejected', note = 'x' WHERE id = 1",
        "UPDATE purchase_requests SET tokens = 1 WHERE id = 1",
        "DELETE FROM purchase_requests WHERE id = 1",
    ):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))
    _create(cli)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("UPDATE purchase_requests SET tokens = 1 WHERE id = 2"))
    with pytest.raises(DBAPIError), engine.begin() as conn:  # a rejection needs a reason
        conn.execute(text("UPDATE purchase_requests SET status = 'rejected', reviewed_at = created_at WHERE id = 2"))
    assert cli.json("requests", "show", "1")["status"] == "approved"


def test_purchase_credit_is_kept_across_the_month_turn(cli: Cli, helpers: Helpers, clock: Any) -> None:
    """Additional tokens never expire (P1): next month the user has the allowance plus the credit."""
    _exhaust(helpers)
    _create(cli)
    cli("requests", "approve", "1")
    helpers.use(MARIA, 100_000, 0)  # taken from the additional tokens
    clock.set(clock.now.replace(month=12, day=1, hour=0, minute=0))
    shown = cli.json("users", "show", MARIA)
    assert (shown["period"], shown["used"], shown["additional"]) == ("2026-12", 0, 400_000)
    assert shown["available"] == 1_400_000


def test_approving_an_unknown_request_is_an_error(core: Core) -> None:
    async def work(rt: Runtime) -> None:
        await PurchaseService(rt.quota).approve(7, actor="ana")

    with pytest.raises(SolarisError, match="no purchase request #7"):
        core(work)


def test_purchase_kind_is_reserved_for_approvals(cli: Cli, helpers: Helpers, core: Core) -> None:
    helpers.use(MARIA, 10, 10)

    async def work(rt: Runtime) -> None:
        await AdminService(rt.quota).grant(MARIA, 10, CreditKind.PURCHASE, reason="x", actor="ana")

    with pytest.raises(SolarisError, match="approving a purchase request"):
        core(work)

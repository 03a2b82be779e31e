"""This issue's email templates: every kind renders, in pt-BR, with user text escaped in HTML."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.mail import TEMPLATES, render

REQUEST: dict[str, Any] = {
    "ticket": 12345,
    "email": "maria.silva@empresa.com.br",
    "name": "Maria <Silva>",
    "tokens": 500_000,
    "quantity": "500k",
    "price_cents": 2500,
    "urgency": "crítica",
    "urgency_label": "Crítica",
    "justification": "Relatório <script>alert(1)</script> & gráficos",
}
BALANCE: dict[str, Any] = {
    "plan": "basic",
    "used": 1_000_000,
    "limit": 1_000_000,
    "additional": 500_000,
    "available": 500_000,
    "period": "2024-01",
    "next_reset": "2024-02-01T00:00:00Z",
}
PAYLOADS: dict[str, dict[str, Any]] = {
    "purchase_received": REQUEST,
    "purchase_admin_notice": {
        **REQUEST,
        **{f"user_{k}": v for k, v in BALANCE.items()},
        "price": "R$ 25,00",
        "requested_by": "suporte@solaris.test",
        "created_at": "2024-01-20T14:30:00+00:00",
        "approve_command": "solaris-tokens requests approve 12345",
        "reject_command": 'solaris-tokens requests reject 12345 --reason "..."',
    },
    "purchase_credited": {
        **REQUEST,
        **BALANCE,
        "credit_kind": "purchase",
        "balance": 1_500_000,
        "reason": "",
        "note": "",
    },
    "purchase_rejected": {**REQUEST, "reason": "Sem <orçamento>"},
    "user_message": {
        **BALANCE,
        "email": "maria.silva@empresa.com.br",
        "name": "Maria Silva",
        "template": "custom",
        "subject": "Aviso",
        "text": "Olá <b>equipe</b>",
        "status": "active",
        "suspended_until": None,
        "suspend_reason": "",
    },
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_every_kind_has_its_three_templates_and_renders(kind: str) -> None:
    for suffix in (".subject.txt", ".txt", ".html"):
        assert (TEMPLATES / f"{kind}{suffix}").is_file()
    subject, body, html = render(kind, PAYLOADS[kind])
    assert subject and "\n" not in subject
    assert body.startswith("Olá") and "IA SOLARIS" in body
    assert html.lstrip().startswith("<!DOCTYPE html>") and 'lang="pt-BR"' in html
    assert "<script>" not in html and "<b>equipe</b>" not in html
    assert "<Silva>" not in html


def test_spec_texts_of_the_purchase_flow() -> None:
    subject, body, _ = render("purchase_received", REQUEST)
    assert subject == "Solicitação de tokens recebida #12345"
    assert body.splitlines()[2:9] == [
        "Sua solicitação foi recebida e será processada em até 24h.",
        "",
        "Detalhes:",
        "• Quantidade: 500.000 tokens",
        "• Valor estimado: R$ 25,00",
        "• Ticket: #12345",
        "",
    ]
    subject, body, html = render("purchase_credited", PAYLOADS["purchase_credited"])
    assert subject == "✅ Tokens adicionais creditados"
    assert [line for line in body.splitlines() if line.startswith("•")] == [
        "• Tokens adicionados: 500.000",
        "• Novo saldo: 1.500.000 tokens",
        "• Válido até: Não expira (acumulativo)",
        "• Ticket: #12345",
    ]
    assert "Novo saldo: <strong>1.500.000</strong> tokens" in html
    _, body, html = render("purchase_rejected", PAYLOADS["purchase_rejected"])
    assert "• Motivo: Sem <orçamento>" in body
    assert "Motivo: Sem &lt;orçamento&gt;" in html
    _, body, html = render("purchase_admin_notice", PAYLOADS["purchase_admin_notice"], user_name="Admin")
    assert "Justificativa: Relatório <script>alert(1)</script> & gráficos" in body
    assert "Relatório &lt;script&gt;alert(1)&lt;/script&gt; &amp; gráficos" in html
    assert "Situação do usuário em janeiro de 2024:" in body
    assert "Registrada por: suporte@solaris.test em 20/01/2024 às 14:30 UTC" in body


def test_user_message_variants() -> None:
    base = PAYLOADS["user_message"]
    suspended = {
        **base,
        "template": "suspended",
        "text": "",
        "status": "suspended",
        "suspended_until": None,
        "suspend_reason": "Violação dos termos",
    }
    subject, body, _ = render("user_message", suspended)
    assert subject == "Seu acesso à IA SOLARIS foi suspenso"
    assert "Seu acesso à IA SOLARIS foi suspenso." in body
    assert "Motivo: Violação dos termos" in body
    assert "fale com o suporte" in body
    subject, body, _ = render("user_message", {**base, "template": "resumed", "text": ""})
    assert subject == "Seu acesso à IA SOLARIS foi restabelecido"
    assert "• Disponível: 500.000 tokens" in body
    subject, body, _ = render("user_message", {**base, "template": "balance", "text": ""})
    assert "Este é o resumo dos seus tokens em janeiro de 2024:" in body
    assert "• Renovação mensal: 01/02/2024 às 00:00 UTC" in body

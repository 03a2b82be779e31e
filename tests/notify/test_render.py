"""Templates (SPEC A1–A5): pt-BR texts of the spec, Brazilian figures, escaping, operator overrides."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from jinja2 import TemplateNotFound, UndefinedError

from solaris_tokens.errors import InvalidInput
from solaris_tokens.notify import formatting
from solaris_tokens.notify.render import RenderedEmail, Renderer
from solaris_tokens.notify.transport import build_message
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.support import FakeClock

TEMPLATES = Path(__file__).resolve().parents[2] / "solaris_tokens" / "notify" / "templates"
MARIA = "maria.silva@x.com"

# Realistic payloads, as the ledger flusher writes them for the quota alerts.
ALERTS = {
    "warning": {"used": 800_000, "limit": 1_000_000, "additional": 0, "percent": 80, "period": "2024-01"},
    "urgent": {"used": 950_000, "limit": 1_000_000, "additional": 0, "percent": 95, "period": "2024-01"},
    "blocked": {"used": 1_000_000, "limit": 1_000_000, "additional": 0, "period": "2024-01"},
}


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", sqlite_path=tmp_path / "x.db", public_base_url="https://ia.solaris.com"
    )


def render(settings: Settings, kind: str, **changes: object) -> RenderedEmail:
    return Renderer(settings, clock=FakeClock()).render(kind, {**ALERTS[kind], **changes}, MARIA)


def test_every_template_set_is_complete() -> None:
    """Each kind with a subject has its text and HTML bodies (whoever added the kind)."""
    renderer = Renderer(Settings())
    kinds = renderer.kinds()
    assert {"warning", "urgent", "blocked"} <= set(kinds)
    for kind in kinds:
        assert (TEMPLATES / f"{kind}.txt").is_file(), kind
        assert (TEMPLATES / f"{kind}.html").is_file(), kind
    for name in renderer.env.list_templates():
        renderer.env.get_template(name)  # compiles: no syntax error in anybody's template


def test_phase2_80_percent_email_reproduces_the_spec(plain_settings: Settings) -> None:
    email = render(plain_settings, "warning", eta_days=3)
    assert email.subject == "⚠️ 80% dos seus tokens foram utilizados"
    expected = """Olá Maria Silva,

Você já utilizou 800.000 dos seus 1.000.000 tokens mensais.
Restam apenas 200.000 tokens para este mês.

Estimativa: Com seu padrão atual de uso, os tokens podem esgotar em aproximadamente 3 dias.

Recomendações:
• Monitore seu uso mais de perto
• Considere adquirir tokens adicionais
• Otimize suas consultas para economizar tokens

Comprar Tokens Adicionais: https://ia.solaris.com/api/tokens/purchase
Ver Extrato Detalhado: https://ia.solaris.com/api/tokens/statement
"""
    assert email.text.startswith(expected)
    assert "aproximadamente 3 dias" in email.html
    assert '<a href="https://ia.solaris.com/api/tokens/purchase"' in email.html
    assert "Comprar Tokens Adicionais</a>" in email.html and "Ver Extrato Detalhado</a>" in email.html
    assert email.html.startswith("<!DOCTYPE html>") and '<html lang="pt-BR">' in email.html


def test_phase2_95_percent_email_reproduces_the_spec(plain_settings: Settings) -> None:
    email = render(plain_settings, "urgent")
    assert email.subject == "🚨 URGENTE: 95% dos tokens utilizados"
    for line in (
        "Atenção Maria Silva,",
        "Você utilizou 950.000 dos seus 1.000.000 tokens mensais.",
        "Restam apenas 50.000 tokens!",
        "AÇÃO NECESSÁRIA: Seus tokens podem esgotar a qualquer momento.",
        "• Comprar tokens adicionais agora",
        "• Reduzir uso até renovação mensal (01/02/2024 às 00:00 UTC)",
        "• Contatar suporte para ajuste de limite",
        "COMPRAR TOKENS AGORA: https://ia.solaris.com/api/tokens/purchase",
        "Falar com Suporte: https://ia.solaris.com/api/support/contact",
    ):
        assert line in email.text.splitlines(), line
    assert "COMPRAR TOKENS AGORA</a>" in email.html and "Falar com Suporte</a>" in email.html


def test_phase2_block_email_has_the_429_facts_and_links(plain_settings: Settings) -> None:
    email = render(plain_settings, "blocked")
    assert email.subject == "⛔ Limite de tokens esgotado"
    assert "seus tokens deste mês se esgotaram" in email.text
    assert "• Tokens utilizados: 1.000.000 de 1.000.000" in email.text
    assert "• Tokens adicionais disponíveis: 0" in email.text
    assert "• Renovação mensal: 01/02/2024 às 00:00 UTC" in email.text
    assert "https://ia.solaris.com/api/tokens/purchase" in email.text
    assert "https://ia.solaris.com/api/support/contact" in email.text
    # refused because the estimate did not fit what is left: the email says so instead
    partial = render(plain_settings, "blocked", used=999_000, additional=500)
    assert "os 1.500 tokens que restam não bastam para ela" in partial.text


def test_eta_sentence_is_singular_for_one_day_and_omitted_without_estimate(plain_settings: Settings) -> None:
    assert "esgotar em aproximadamente 1 dia." in render(plain_settings, "warning", eta_days=1).text
    without = render(plain_settings, "warning")  # no engine, no history: no estimate
    assert "Estimativa" not in without.text and "Estimativa" not in without.html


def test_additional_tokens_are_mentioned_only_when_the_user_has_some(plain_settings: Settings) -> None:
    assert "adicionais, que não expiram" not in render(plain_settings, "warning").text
    assert "Você também tem 150.000 tokens adicionais" in render(plain_settings, "warning", additional=150_000).text


async def test_user_name_comes_from_the_users_table_and_is_escaped_in_html(runtime: Runtime) -> None:
    runtime.ledger.ensure_user(MARIA)
    runtime.ledger.update_user(
        MARIA, {"name": '<script>alert("x")</script> & Cia'}, actor="admin", action="user.rename"
    )
    renderer = Renderer(runtime.settings, engine=runtime.engine, clock=FakeClock())
    email = renderer.render("warning", ALERTS["warning"], MARIA)
    assert "<script>" not in email.html
    assert "Olá &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Cia," in email.html
    assert 'Olá <script>alert("x")</script> & Cia,' in email.text  # plain text is not HTML
    assert renderer.render("warning", ALERTS["warning"], "nobody.here@x.com").text.startswith("Olá Nobody Here,")


def test_operator_override_replaces_one_template_and_keeps_the_others(plain_settings: Settings, tmp_path: Path) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "warning.subject.txt").write_text("[Solaris] {{ percent }}% usado, {{ user_name }}\n")
    plain_settings.email_templates_dir = overrides
    email = render(plain_settings, "warning")
    assert email.subject == "[Solaris] 80% usado, Maria Silva"
    assert "Você já utilizou 800.000 dos seus 1.000.000 tokens mensais." in email.text  # packaged body kept
    assert render(plain_settings, "urgent").subject == "🚨 URGENTE: 95% dos tokens utilizados"


def test_user_controlled_text_of_any_kind_is_escaped_in_html(plain_settings: Settings, tmp_path: Path) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "note.subject.txt").write_text("Pedido de {{ user_name }}\n")
    (overrides / "note.txt").write_text("Justificativa: {{ justification }}\n")
    (overrides / "note.html").write_text(
        '{% extends "_layout.html" %}{% block content %}<p>{{ justification }}</p>{% endblock %}'
    )
    plain_settings.email_templates_dir = overrides
    payload = {"justification": '<img src=x onerror="steal()"> preciso & urgente', "user_name": "Zé\nBcc: x@y"}
    email = Renderer(plain_settings).render("note", payload, MARIA)
    assert "<img" not in email.html
    assert "&lt;img src=x onerror=&#34;steal()&#34;&gt; preciso &amp; urgente" in email.html
    assert email.text == 'Justificativa: <img src=x onerror="steal()"> preciso & urgente\n'
    assert email.subject == "Pedido de Zé Bcc: x@y"  # one header line: no header injection


def test_missing_variable_is_an_error_not_a_blank(plain_settings: Settings) -> None:
    renderer = Renderer(plain_settings)
    with pytest.raises(UndefinedError):
        renderer.render("urgent", {"used": 1, "limit": 2, "additional": 0, "period": "2024-01"}, MARIA)
    with pytest.raises(TemplateNotFound):
        renderer.render("no_such_kind", {}, MARIA)


def test_attachments_travel_with_the_email(plain_settings: Settings, tmp_path: Path) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    for name, body in (("report.subject.txt", "Relatório"), ("report.txt", "Segue."), ("report.html", "<p>Segue.</p>")):
        (overrides / name).write_text(body)
    plain_settings.email_templates_dir = overrides
    payload = {
        "attachments": [
            {"filename": "uso-2024-01.csv", "content_type": "text/csv", "content": "email;tokens\nmaria;800000\n"},
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_base64": base64.b64encode(b"\x89PNG").decode(),
            },
        ]
    }
    email = Renderer(plain_settings).render("report", payload, "admin@x.com")
    assert [(a.filename, a.content_type) for a in email.attachments] == [
        ("uso-2024-01.csv", "text/csv"),
        ("logo.png", "image/png"),
    ]
    msg = build_message(
        email,
        sender="IA SOLARIS <n@x.com>",
        recipient="admin@x.com",
        kind="report",
        message_id="<1@x>",
        date=FakeClock()(),
    )
    assert msg.get_content_type() == "multipart/mixed"
    parts = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}  # type: ignore[attr-defined]
    assert parts == {"uso-2024-01.csv": "email;tokens\nmaria;800000\n", "logo.png": b"\x89PNG"}
    with pytest.raises(InvalidInput):
        Renderer(plain_settings).render("report", {"attachments": [{"filename": "../etc/passwd"}]}, "a@x.com")


def test_links_are_absolute_under_a_base_url_with_a_path(plain_settings: Settings) -> None:
    plain_settings.public_base_url = "https://intranet.example.com/solaris/"
    values = Renderer(plain_settings).common(MARIA, None)
    assert values["buy_url"] == "https://intranet.example.com/solaris/api/tokens/purchase"
    assert values["support_url"] == "https://intranet.example.com/solaris/api/support/contact"
    assert values["statement_url"] == "https://intranet.example.com/solaris/api/tokens/statement"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (999, "999"), (1_000, "1.000"), (800_000, "800.000"), (1_000_000, "1.000.000"), (-1_500, "-1.500")],
)
def test_token_figures_use_brazilian_thousands_separators(value: int, text: str) -> None:
    assert formatting.tokens(value) == text


def test_money_dates_and_months_are_brazilian() -> None:
    assert formatting.brl(2_500) == "R$ 25,00"
    assert formatting.brl(123_456_789) == "R$ 1.234.567,89"
    assert formatting.brl(5) == "R$ 0,05"
    assert formatting.date_br("2024-02-01T00:00:00Z") == "01/02/2024"
    assert formatting.datetime_br("2024-02-01T00:00:00Z") == "01/02/2024 às 00:00 UTC"
    assert formatting.month_br("2024-03") == "março de 2024"
    assert formatting.percent(85) == "85%" and formatting.percent(85.5) == "85,5%"
    with pytest.raises(TypeError):
        formatting.tokens(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        formatting.brl(25.0)  # type: ignore[arg-type]

"""Render this issue's email templates with plain Jinja2, configured like the product's renderer
(strict variables, `.html` autoescaped, the pt-BR number filters), to check their texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

import solaris_tokens.notify
from solaris_tokens.notify import formatting

TEMPLATES = Path(solaris_tokens.notify.__file__).parent / "templates"
COMMON = {
    "product": "IA SOLARIS",
    "base_url": "https://solaris.test",
    "buy_url": "https://solaris.test/api/tokens/purchase",
    "statement_url": "https://solaris.test/api/tokens/statement",
    "support_url": "https://solaris.test/api/support/contact",
}


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        tokens=formatting.tokens,
        brl=formatting.brl,
        date_br=formatting.date_br,
        datetime_br=formatting.datetime_br,
        month_br=formatting.month_br,
        percent=formatting.percent,
    )
    return env


def render(kind: str, payload: dict[str, Any], user_name: str = "Maria Silva") -> tuple[str, str, str]:
    """(subject, text, html) of one outbox row's payload."""
    env = _env()
    values = {**COMMON, "user_name": user_name, "recipient": "", **payload}
    subject = " ".join(env.get_template(f"{kind}.subject.txt").render(values).split())
    values["subject"] = subject
    return subject, env.get_template(f"{kind}.txt").render(values), env.get_template(f"{kind}.html").render(values)

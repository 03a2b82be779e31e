"""Turns one outbox row (kind + payload + recipient) into a subject, a text body and an HTML body.

Templates are Jinja2 files, `{kind}.subject.txt`, `{kind}.txt` and `{kind}.html`, looked up first
in the operator's folder (`settings.email_templates_dir`), then in the packaged `templates/`: an
operator overrides one file without copying the others. Only `.html` is autoescaped (user names and
free text cannot inject markup); text and subject are plain. Undefined variables are errors, so an
email never goes out with a hole where a figure should be.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)
from sqlalchemy import Engine

from solaris_tokens.clock import Clock, utc_now
from solaris_tokens.errors import InvalidInput
from solaris_tokens.ledger.models import User
from solaris_tokens.ledger.repository import Ledger
from solaris_tokens.notify import formatting
from solaris_tokens.notify.alerts import ALERT_HOOKS
from solaris_tokens.policy import name_from_email
from solaris_tokens.settings import Settings

PRODUCT_NAME = "IA SOLARIS"
SUBJECT_SUFFIX = ".subject.txt"
ATTACHMENTS_KEY = "attachments"


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What a kind's context hook may look at to add variables of its own."""

    kind: str
    payload: Mapping[str, Any]
    recipient: str
    user: User | None
    now: datetime
    settings: Settings
    engine: Engine | None


ContextHook = Callable[[RenderContext], Mapping[str, Any]]


def absolute_url(settings: Settings, path: str) -> str:
    """Links in emails are absolute: the configured public base URL joined with a path."""
    return urljoin(settings.public_base_url.rstrip("/") + "/", path.lstrip("/"))


def _attachments(payload: Mapping[str, Any]) -> tuple[Attachment, ...]:
    raw = payload.get(ATTACHMENTS_KEY) or []
    if not isinstance(raw, list):
        raise InvalidInput("payload 'attachments' must be a list of {filename, content_type, content}")
    out: list[Attachment] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidInput("each attachment must be an object")
        filename = str(item.get("filename") or "")
        if not filename or any(ch in filename for ch in "/\\\r\n\0"):
            raise InvalidInput(f"attachment filename {filename!r} is not a plain file name")
        content_type = str(item.get("content_type") or "application/octet-stream")
        if content_type.count("/") != 1 or any(ch in content_type for ch in "\r\n;"):
            raise InvalidInput(f"attachment content type {content_type!r} is not valid")
        if "content_base64" in item:
            try:
                data = base64.b64decode(str(item["content_base64"]), validate=True)
            except binascii.Error as exc:
                raise InvalidInput(f"attachment {filename}: content_base64 is not base64") from exc
        else:
            data = str(item.get("content", "")).encode("utf-8")
        out.append(Attachment(filename, content_type, data))
    return tuple(out)


class Renderer:
    """`render(kind, payload, recipient) -> RenderedEmail`; see the package docstring for the contract."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        clock: Clock = utc_now,
        hooks: Mapping[str, ContextHook] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.hooks: dict[str, ContextHook] = {**ALERT_HOOKS, **(hooks or {})}
        self._ledger = Ledger(engine, settings, clock) if engine is not None else None
        loaders: list[BaseLoader] = []
        if settings.email_templates_dir is not None:
            loaders.append(FileSystemLoader(str(settings.email_templates_dir)))
        loaders.append(PackageLoader("solaris_tokens.notify", "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(
            tokens=formatting.tokens,
            brl=formatting.brl,
            percent=formatting.percent,
            date_br=formatting.date_br,
            datetime_br=formatting.datetime_br,
            month_br=formatting.month_br,
        )

    def kinds(self) -> list[str]:
        """Every kind with a subject template (packaged or overridden)."""
        names = self.env.list_templates(filter_func=lambda n: n.endswith(SUBJECT_SUFFIX) and "/" not in n)
        return sorted({n[: -len(SUBJECT_SUFFIX)] for n in names})

    def common(self, recipient: str, user: User | None) -> dict[str, Any]:
        """Variables every template can use; a payload key of the same name wins."""
        s = self.settings
        return {
            "product": PRODUCT_NAME,
            "recipient": recipient,
            "user_name": user.name if user is not None and user.name else name_from_email(recipient),
            "base_url": s.public_base_url.rstrip("/"),
            "buy_url": absolute_url(s, s.purchase_path),
            "statement_url": absolute_url(s, s.statement_path),
            "support_url": absolute_url(s, s.support_path),
            "now": self.clock(),
        }

    def variables(self, kind: str, payload: Mapping[str, Any], recipient: str) -> dict[str, Any]:
        user = self._ledger.get_user(recipient) if self._ledger is not None else None
        values = self.common(recipient, user)
        hook = self.hooks.get(kind)
        if hook is not None:
            ctx = RenderContext(kind, payload, recipient, user, self.clock(), self.settings, self.engine)
            values.update(hook(ctx))
        values.update({k: v for k, v in payload.items() if k != ATTACHMENTS_KEY})
        values["kind"] = kind
        return values

    def render(self, kind: str, payload: Mapping[str, Any], recipient: str) -> RenderedEmail:
        values = self.variables(kind, payload, recipient)
        subject = self.env.get_template(f"{kind}{SUBJECT_SUFFIX}").render(values)
        subject = " ".join(subject.split())  # one header line, whatever the template or data held
        values["subject"] = subject
        text = self.env.get_template(f"{kind}.txt").render(values)
        html = self.env.get_template(f"{kind}.html").render(values)
        return RenderedEmail(subject, text, html, _attachments(payload))

"""Emails: pt-BR Jinja2 templates, a renderer, the outbox delivery loop, SMTP and `.eml` transports.

Contract for every email kind (quota alerts here; purchases, messages, renewal, reports elsewhere):

1. To send an email, put ONE outbox row: `Ledger.enqueue_email(recipient=, kind=, dedupe_key=,
   payload=, user_id=)`. The row is unique per (recipient, kind, dedupe_key), so choose a
   dedupe_key that names the event (a period, a ticket id): enqueuing it twice sends once. Never
   call SMTP or Celery from the request path or from inside a transaction that may roll back.
2. `kind` names three templates in `notify/templates/`: `{kind}.subject.txt` (one line; may hold
   an emoji), `{kind}.txt` (plain text) and `{kind}.html` (may `{% extends "_layout.html" %}` and
   `{% from "_macros.html" import button %}`). Only `.html` is autoescaped.
3. `payload` (JSON) holds the template variables. Token figures and money are integers (tokens;
   centavos). Datetimes travel as ISO 8601 strings; the `date_br` / `datetime_br` filters accept
   them. Variables are strict: a missing one fails the render (the row is retried, then `failed`);
   for optional ones write `{% if x is defined %}` or `{{ x|default("") }}`.
4. The renderer adds, for every kind (a payload key of the same name wins): `user_name` (users
   table, else derived from the email), `recipient`, `product` ("IA SOLARIS"), `base_url`,
   `buy_url`, `statement_url`, `support_url` (absolute, from settings.public_base_url), `now`,
   `kind`, and `subject` (in text and HTML). Filters: `tokens` (1.000.000), `brl` (centavos →
   R$ 25,00), `percent`, `date_br`, `datetime_br`, `month_br` ("fevereiro de 2024").
5. Attachments: payload key `attachments` = list of `{"filename", "content_type", "content"}`
   (text, UTF-8) or `{"filename", "content_type", "content_base64"}`.
6. `Renderer(settings, engine=...).render(kind, payload, recipient) -> RenderedEmail(subject,
   text, html, attachments)`; operators override any single file by putting one of the same name
   in `settings.email_templates_dir`.
"""

from solaris_tokens.notify.delivery import DeliveryReport, OutboxDelivery, RetryPolicy
from solaris_tokens.notify.outbox import Outbox, OutboxItem, OutboxStatus
from solaris_tokens.notify.render import Attachment, RenderedEmail, Renderer
from solaris_tokens.notify.transport import (
    EmlDirectoryTransport,
    MailTransport,
    SendError,
    SmtpTransport,
    transport_for,
)

__all__ = [
    "Attachment",
    "DeliveryReport",
    "EmlDirectoryTransport",
    "MailTransport",
    "Outbox",
    "OutboxDelivery",
    "OutboxItem",
    "OutboxStatus",
    "RenderedEmail",
    "Renderer",
    "RetryPolicy",
    "SendError",
    "SmtpTransport",
    "transport_for",
]

"""How a rendered email leaves: SMTP (settings smtp_*), or `.eml` files when no SMTP host is set.

Both are used the same way: open a session for a batch, `send()` each message. A failed send
raises `SendError`, which says whether retrying can help (`permanent`: the server refused this
message for good) and whether the session is unusable for the rest of the batch (`connection`:
the server is down or dropped us, so the other messages of the batch are not tried in vain).
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

from solaris_tokens.errors import SolarisError
from solaris_tokens.notify.render import RenderedEmail
from solaris_tokens.settings import Settings

KIND_HEADER = "X-Solaris-Kind"


class SendError(SolarisError):
    """One message could not be handed over."""

    def __init__(self, message: str, *, permanent: bool = False, connection: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection


class MailSession(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class MailTransport(Protocol):
    @property
    def description(self) -> str: ...

    def session(self) -> AbstractContextManager[MailSession]: ...


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rsplit("@", 1)[1] if "@" in address else "solaris.local"


def build_message(
    email: RenderedEmail, *, sender: str, recipient: str, kind: str, message_id: str, date: datetime
) -> EmailMessage:
    """A MIME message: text and HTML as alternatives, attachments (if any) alongside."""
    msg = EmailMessage()
    msg["Subject"] = email.subject
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg[KIND_HEADER] = kind
    msg.set_content(email.text, subtype="plain", charset="utf-8")
    msg.add_alternative(email.html, subtype="html", charset="utf-8")
    for attachment in email.attachments:
        maintype, subtype = attachment.content_type.split("/", 1)
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return msg


# --- SMTP ---------------------------------------------------------------------------------------


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        starttls: bool = False,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.starttls = starttls
        self.user = user
        self.password = password
        self.timeout = timeout

    @property
    def description(self) -> str:
        mode = "tls" if self.tls else "starttls" if self.starttls else "plain"
        return f"smtp://{self.host}:{self.port} ({mode})"

    @contextmanager
    def session(self) -> Iterator[MailSession]:
        session = _SmtpSession(self)
        try:
            yield session
        finally:
            session.close()


class _SmtpSession:
    """One SMTP connection, opened at the first send and reused for the batch."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.t = transport
        self.client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        t = self.t
        try:
            client: smtplib.SMTP
            if t.tls:
                client = smtplib.SMTP_SSL(t.host, t.port, timeout=t.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(t.host, t.port, timeout=t.timeout)
            try:
                client.ehlo()
                if t.starttls and not t.tls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                if t.user:
                    client.login(t.user, t.password or "")
            except BaseException:
                client.close()
                raise
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(f"SMTP authentication failed: {exc.smtp_code} {_reply(exc)}", connection=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP server {t.host}:{t.port} unavailable: {exc}", connection=True) from exc
        return client

    def send(self, message: EmailMessage) -> None:
        if self.client is None:
            self.client = self._connect()
        try:
            refused = self.client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise SendError(f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPServerDisconnected as exc:
            self.client = None
            raise SendError(f"SMTP server disconnected: {exc}", connection=True) from exc
        except smtplib.SMTPSenderRefused as exc:
            # The configured From is refused: the same for every message, so retry once it is fixed.
            raise SendError(f"sender refused: {exc.smtp_code} {_reply(exc)}", connection=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise SendError(f"SMTP {exc.smtp_code} {_reply(exc)}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.client = None
            raise SendError(f"SMTP error: {exc}", connection=True) from exc
        if refused:
            codes = [code for code, _ in refused.values()]
            raise SendError(f"recipient refused: {refused}", permanent=all(c >= 500 for c in codes))

    def close(self) -> None:
        if self.client is None:
            return
        try:
            self.client.quit()
        except (smtplib.SMTPException, OSError):
            self.client.close()
        self.client = None


def _reply(exc: smtplib.SMTPResponseException) -> str:
    error = exc.smtp_error
    return error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)


# --- .eml files -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class EmlDirectoryTransport:
    """Writes each message as an `.eml` file a mail client opens; the embedded-mode default.

    The file name comes from the Message-ID, so delivering the same outbox row again replaces its
    file instead of adding a second one. Files appear atomically (written aside, then renamed).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def description(self) -> str:
        return f"eml files in {self.folder}"

    @contextmanager
    def session(self) -> Iterator[MailSession]:
        yield self

    def path_for(self, message: EmailMessage) -> Path:
        kind = _UNSAFE.sub("_", str(message.get(KIND_HEADER, "email")))
        ident = _UNSAFE.sub("_", str(message.get("Message-ID", "")).strip("<>").split("@", 1)[0]) or "message"
        return self.folder / f"{ident}-{kind}.eml"

    def send(self, message: EmailMessage) -> None:
        target = self.path_for(message)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(message.as_bytes())
            os.replace(tmp, target)
        except OSError as exc:
            raise SendError(f"cannot write {target}: {exc}", connection=True) from exc


def email_dir(settings: Settings) -> Path:
    return settings.email_dir or settings.state_dir / "mail"


def transport_for(settings: Settings) -> MailTransport:
    """SMTP when a host is configured, else `.eml` files in `email_dir` (default state_dir/mail)."""
    if settings.smtp_host:
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            starttls=settings.smtp_starttls,
            user=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
        )
    return EmlDirectoryTransport(email_dir(settings))

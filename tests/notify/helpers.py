"""Helpers of the email tests: a real SMTP server (aiosmtpd), outbox reads, spending tokens."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlmodel import Session, col, select

from solaris_tokens.domain import CallDetails, Settlement, Usage, Verdict
from solaris_tokens.ledger.models import OutboxMessage
from solaris_tokens.notify.delivery import OutboxDelivery
from solaris_tokens.notify.transport import email_dir
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.support import FakeClock


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


class Inbox:
    """aiosmtpd handler: records accepted messages; `replies` makes the next DATA commands fail."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[str] = []
        self.logins: list[str] = []
        self.tls_logins: list[bool] = []
        self.refused_senders: set[str] = set()
        self.unknown_recipients: set[str] = set()
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused_senders:
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.unknown_recipients:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server on a fixed free port that a test can stop and start again.

    With `credentials`, it offers AUTH and accepts only those. With `tls` ("starttls" or
    "implicit") and a server `ssl.SSLContext`, it requires STARTTLS or speaks TLS from the start.
    """

    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        *,
        tls: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.credentials = credentials
        self.tls = tls
        self.context = context
        self._controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != self.credentials:
            return AuthResult(success=False, handled=False)
        self.inbox.logins.append(login)
        self.inbox.tls_logins.append(server.transport.get_extra_info("ssl_object") is not None)
        return AuthResult(success=True)

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.credentials is not None:
            # aiosmtpd offers AUTH under implicit TLS only without its STARTTLS-only "require TLS" check
            options |= {"authenticator": self._authenticate, "auth_require_tls": self.tls == "starttls"}
        if self.tls == "starttls":
            options |= {"tls_context": self.context, "require_starttls": True}
        elif self.tls == "implicit":
            options |= {"ssl_context": self.context}
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (cert.pem, key.pem): the SMTP server's, and the client's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime(2020, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365 * 200))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def use_smtp(settings: Settings, server: SmtpServer) -> Settings:
    settings.smtp_host = "127.0.0.1"
    settings.smtp_port = server.port
    settings.smtp_starttls = False
    settings.smtp_timeout_seconds = 5
    return settings


def delivery(runtime: Runtime, clock: FakeClock) -> OutboxDelivery:
    return OutboxDelivery.from_settings(runtime.settings, runtime.engine, clock=clock)


def outbox_rows(runtime: Runtime, *where: Any) -> list[OutboxMessage]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(OutboxMessage).where(*where).order_by(col(OutboxMessage.id))).all())


async def spend(runtime: Runtime, email_address: str, tokens: int) -> Settlement:
    """One admitted request that really used `tokens` (prompt only, for simple figures)."""
    decision = await runtime.quota.authorize(email_address, tokens)
    assert decision.verdict is Verdict.ADMITTED, decision
    return await runtime.quota.settle(
        email_address, decision.reservation_id, Usage(tokens, 0, CallDetails(model="gpt-4o"))
    )


async def spend_concurrently(runtime: Runtime, email_address: str, requests: int, tokens: int) -> list[Settlement]:
    runtime.store.timeout_seconds = 30  # many calls share one pool: the deadline is not under test
    return list(await asyncio.gather(*(spend(runtime, email_address, tokens) for _ in range(requests))))


def eml_text(runtime: Runtime, kind: str) -> str:
    """The plain-text body of the one `.eml` file of `kind` written by the file transport."""
    folder = email_dir(runtime.settings)
    [path] = list(folder.glob(f"*-{kind}.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]

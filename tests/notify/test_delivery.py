"""Outbox delivery against a real SMTP server (aiosmtpd): content, retries, claims — both backends."""

from __future__ import annotations

import ssl
import threading
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from pydantic import SecretStr

from solaris_tokens.ledger.models import OutboxMessage
from solaris_tokens.notify.delivery import OutboxDelivery, RetryPolicy
from solaris_tokens.notify.outbox import Outbox, OutboxStatus
from solaris_tokens.notify.render import Renderer
from solaris_tokens.notify.transport import EmlDirectoryTransport, email_dir
from solaris_tokens.runtime import Runtime
from tests.notify.helpers import SmtpServer, delivery, outbox_rows, self_signed_certificate, spend, use_smtp
from tests.support import FakeClock

MARIA = "maria.silva@x.com"


def enqueue_warning(runtime: Runtime, recipient: str = MARIA, period: str = "2026-11") -> None:
    user, _ = runtime.ledger.ensure_user(recipient)
    assert runtime.ledger.enqueue_email(
        recipient=recipient,
        kind="warning",
        dedupe_key=period,
        payload={"used": 800_000, "limit": 1_000_000, "additional": 0, "percent": 80, "period": period},
        user_id=user.id,
    )


async def test_phase2_80_percent_email_arrives_over_smtp_with_the_spec_text(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    runtime.settings.public_base_url = "https://ia.solaris.example/"
    await spend(runtime, MARIA, 800_000)
    await runtime.flusher.drain()

    report = delivery(runtime, clock).run()

    assert report.sent == 1
    [mail] = smtp.inbox.received
    assert mail.mail_from == "nao-responda@localhost"
    assert mail.rcpt_tos == [MARIA]
    assert mail.message["To"] == MARIA
    assert mail.message["Subject"] == "⚠️ 80% dos seus tokens foram utilizados"
    assert mail.message.get_content_type() == "multipart/alternative"
    assert "Olá Maria Silva," in mail.text
    assert "Você já utilizou 800.000 dos seus 1.000.000 tokens mensais." in mail.text
    assert "Restam apenas 200.000 tokens para este mês." in mail.text
    assert "Estimativa" not in mail.text  # one burst of usage: no pace to estimate from
    assert "Comprar Tokens Adicionais: https://ia.solaris.example/api/tokens/purchase" in mail.text
    assert "Ver Extrato Detalhado: https://ia.solaris.example/api/tokens/statement" in mail.text
    assert "<strong>800.000</strong> dos seus <strong>1.000.000</strong>" in mail.html
    assert 'href="https://ia.solaris.example/api/tokens/purchase"' in mail.html
    [row] = outbox_rows(runtime)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.SENT, 1, "")
    assert row.sent_at is not None


async def test_blocked_email_carries_the_429_facts(runtime: Runtime, clock: FakeClock, smtp: SmtpServer) -> None:
    use_smtp(runtime.settings, smtp)
    await spend(runtime, MARIA, 1_000_000)
    await runtime.quota.authorize(MARIA, 500)
    await runtime.flusher.drain()
    runtime.ledger.enqueue_email(recipient="other@x.com", kind="nothing", dedupe_key="k", payload={})

    delivery(runtime, clock).run()

    by_subject = {str(m.message["Subject"]): m for m in smtp.inbox.received}
    blocked = by_subject["⛔ Limite de tokens esgotado"]
    assert "• Tokens utilizados: 1.000.000 de 1.000.000" in blocked.text
    assert "• Tokens adicionais disponíveis: 0" in blocked.text
    assert "• Renovação mensal: 01/12/2026 às 00:00 UTC" in blocked.text
    assert "http://localhost:4000/api/support/contact" in blocked.text
    # the row of an unknown kind fails to render: retried later, the others were still sent
    [broken] = outbox_rows(runtime, OutboxMessage.kind == "nothing")
    assert broken.status == OutboxStatus.PENDING and "TemplateNotFound" in broken.last_error


async def test_smtp_down_then_back_retries_later_and_sends_each_email_once(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    for n in range(3):
        enqueue_warning(runtime, f"user{n}@x.com")
    smtp.stop()

    report = delivery(runtime, clock).run()

    assert (report.sent, report.retried) == (0, 3)
    rows = outbox_rows(runtime)
    assert {r.status for r in rows} == {OutboxStatus.PENDING}
    assert {r.attempts for r in rows} == {1}
    assert all("unavailable" in r.last_error for r in rows)
    assert delivery(runtime, clock).run().handled == 0  # not due yet: backing off

    smtp.start()
    clock.advance(seconds=59)
    assert delivery(runtime, clock).run().handled == 0
    clock.advance(seconds=1)  # the first retry is due after 60 s
    assert delivery(runtime, clock).run().sent == 3
    assert delivery(runtime, clock).run().handled == 0
    assert sorted(m.rcpt_tos[0] for m in smtp.inbox.received) == ["user0@x.com", "user1@x.com", "user2@x.com"]
    assert {(r.status, r.attempts) for r in outbox_rows(runtime)} == {(OutboxStatus.SENT, 2)}


async def test_temporary_refusal_is_retried_and_permanent_refusal_fails(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    enqueue_warning(runtime, "first@x.com")
    enqueue_warning(runtime, "second@x.com")
    smtp.inbox.replies = ["451 4.3.0 try again later", "550 5.1.1 mailbox unavailable"]

    report = delivery(runtime, clock).run()

    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    first, second = outbox_rows(runtime)
    assert (first.status, first.attempts) == (OutboxStatus.PENDING, 1) and "451" in first.last_error
    assert (second.status, second.attempts) == (OutboxStatus.FAILED, 1) and "550" in second.last_error
    clock.advance(minutes=1)
    assert delivery(runtime, clock).run().sent == 1
    assert [m.rcpt_tos for m in smtp.inbox.received] == [["first@x.com"]]


async def test_unknown_recipient_fails_and_a_refused_sender_waits_for_the_operator(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    enqueue_warning(runtime, "ghost@x.com")
    enqueue_warning(runtime, "real@x.com")
    smtp.inbox.unknown_recipients = {"ghost@x.com"}
    smtp.inbox.refused_senders = {"nao-responda@localhost"}

    report = delivery(runtime, clock).run()  # From refused: a settings problem, retried for every row

    assert (report.sent, report.retried, report.failed) == (0, 2, 0)
    assert all("sender refused: 553" in r.last_error for r in outbox_rows(runtime))
    smtp.inbox.refused_senders = set()
    clock.advance(minutes=1)
    report = delivery(runtime, clock).run()
    assert (report.sent, report.failed) == (1, 1)
    ghost, real = outbox_rows(runtime)
    assert ghost.status == OutboxStatus.FAILED and "550" in ghost.last_error
    assert real.status == OutboxStatus.SENT
    assert [m.rcpt_tos for m in smtp.inbox.received] == [["real@x.com"]]


async def test_gives_up_after_max_attempts_with_exponential_backoff(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    runtime.settings.email_max_attempts = 3
    enqueue_warning(runtime)
    smtp.stop()
    waits = []
    for _ in range(3):
        before = clock()
        delivery(runtime, clock).run()
        [row] = outbox_rows(runtime)
        if row.status == OutboxStatus.FAILED:
            break
        waits.append(row.next_attempt_at.replace(tzinfo=before.tzinfo) - before)
        clock.set(before + waits[-1])
    assert waits == [timedelta(seconds=60), timedelta(seconds=120)]
    [row] = outbox_rows(runtime)
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 3)
    assert row.last_error.startswith("gave up after 3 attempts")


def test_retry_policy_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base=timedelta(seconds=60), cap=timedelta(hours=1))
    assert [policy.delay(n).total_seconds() for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


class Recorder:
    """A transport that records messages (thread-safe), standing in for SMTP in claim races."""

    description = "recorder"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.lock = threading.Lock()

    def session(self) -> Recorder:
        return self

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, message: EmailMessage) -> None:
        with self.lock:
            self.sent.append(message)


def _delivery_with(runtime: Runtime, clock: FakeClock, transport: Recorder, batch: int = 5) -> OutboxDelivery:
    return OutboxDelivery(
        Outbox(runtime.engine, clock),
        Renderer(runtime.settings, engine=runtime.engine, clock=clock),
        transport,
        sender=runtime.settings.email_from,
        batch_size=batch,
        clock=clock,
    )


async def test_concurrent_workers_never_send_a_row_twice(runtime: Runtime, clock: FakeClock) -> None:
    for n in range(40):
        enqueue_warning(runtime, f"user{n}@x.com")
    recorder = Recorder()
    workers = [_delivery_with(runtime, clock, recorder) for _ in range(4)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    recipients = [str(m["To"]) for m in recorder.sent]
    assert len(recipients) == 40
    assert len(set(recipients)) == 40
    assert {(r.status, r.attempts) for r in outbox_rows(runtime)} == {(OutboxStatus.SENT, 1)}


async def test_row_stuck_in_sending_is_reclaimed_after_the_lease(runtime: Runtime, clock: FakeClock) -> None:
    enqueue_warning(runtime)
    outbox = Outbox(runtime.engine, clock)
    [lost] = outbox.claim(10, lease=timedelta(minutes=10))  # a worker that died mid-send
    recorder = Recorder()
    worker = _delivery_with(runtime, clock, recorder)
    worker.lease = timedelta(minutes=10)

    assert worker.run().handled == 0
    clock.advance(minutes=10)
    assert worker.run().sent == 1
    assert len(recorder.sent) == 1
    [row] = outbox_rows(runtime)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 2)
    assert outbox.mark_sent(lost) is False  # the lost worker's late answer changes nothing


async def test_without_smtp_emails_are_eml_files_a_newcomer_can_open(runtime: Runtime, clock: FakeClock) -> None:
    assert runtime.settings.smtp_host is None
    await spend(runtime, MARIA, 960_000)
    await runtime.flusher.drain()

    assert delivery(runtime, clock).run().sent == 2
    folder = email_dir(runtime.settings)
    assert folder == runtime.settings.state_dir / "mail"
    files = {f.name.rsplit("-", 1)[1]: f for f in folder.glob("*.eml")}
    assert sorted(files) == ["urgent.eml", "warning.eml"]
    warning = message_from_bytes(files["warning.eml"].read_bytes(), policy=default_policy)
    assert warning["Subject"] == "⚠️ 80% dos seus tokens foram utilizados"
    assert warning["To"] == MARIA


def test_eml_transport_rewrites_the_same_file_for_the_same_message(tmp_path: Path) -> None:
    transport = EmlDirectoryTransport(tmp_path / "mail")
    msg = EmailMessage()
    msg["Message-ID"] = "<solaris-outbox-7-1700000000000@x.com>"
    msg["X-Solaris-Kind"] = "warning"
    msg.set_content("olá")
    with transport.session() as session:
        session.send(msg)
        session.send(msg)
    assert [p.name for p in (tmp_path / "mail").iterdir()] == ["solaris-outbox-7-1700000000000-warning.eml"]


@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize("smtp", [("solaris", "s3cret")], indirect=True)
async def test_smtp_authenticates_with_the_configured_user(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer
) -> None:
    use_smtp(runtime.settings, smtp)
    runtime.settings.smtp_user = "solaris"
    runtime.settings.smtp_password = SecretStr("wrong")
    enqueue_warning(runtime)

    assert delivery(runtime, clock).run().retried == 1
    [row] = outbox_rows(runtime)
    assert row.status == OutboxStatus.PENDING and "authentication failed" in row.last_error

    runtime.settings.smtp_password = SecretStr("s3cret")
    clock.advance(minutes=1)
    assert delivery(runtime, clock).run().sent == 1
    assert smtp.inbox.logins == ["solaris"]


@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_smtp_over_tls_verifies_the_server_and_logs_in_encrypted(
    runtime: Runtime, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SmtpServer(("solaris", "s3cret"), tls=mode, context=context)
    server.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this test's certificate only
        use_smtp(runtime.settings, server)
        runtime.settings.smtp_starttls = mode == "starttls"
        runtime.settings.smtp_tls = mode == "implicit"
        runtime.settings.smtp_user = "solaris"
        runtime.settings.smtp_password = SecretStr("s3cret")
        enqueue_warning(runtime)
        assert delivery(runtime, clock).run().sent == 1
    finally:
        server.stop()
    assert server.inbox.logins == ["solaris"] and server.inbox.tls_logins == [True]
    assert server.inbox.received[0].message["Subject"] == "⚠️ 80% dos seus tokens foram utilizados"


@pytest.mark.parametrize("backend", ["embedded"])
async def test_smtp_tls_refuses_an_untrusted_server(
    runtime: Runtime, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SmtpServer(tls="starttls", context=context)
    server.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
        use_smtp(runtime.settings, server)
        runtime.settings.smtp_starttls = True
        enqueue_warning(runtime)
        assert delivery(runtime, clock).run().retried == 1
    finally:
        server.stop()
    assert server.inbox.received == []
    [row] = outbox_rows(runtime)
    assert "CERTIFICATE_VERIFY_FAILED" in row.last_error

"""Delivering the outbox: claim due rows, render, send, record sent / retry later / failed.

Nothing here runs on the request path: the request path only appends alert entries to the ledger
stream (the flusher makes them outbox rows); a Celery task (jobs/delivery.py) calls `run()`.
Retries back off exponentially (`email_retry_base_seconds` doubled per attempt, capped at
`email_retry_max_seconds`); after `email_max_attempts`, or when the server refuses the message for
good (5xx), the row is `failed` with the error kept in `last_error`. When the SMTP server is down,
the rest of the batch is rescheduled without being tried (nothing lost, nobody hammered).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from solaris_tokens.clock import Clock, to_ms, utc_now
from solaris_tokens.notify.outbox import Outbox, OutboxItem
from solaris_tokens.notify.render import Renderer
from solaris_tokens.notify.transport import (
    MailSession,
    MailTransport,
    SendError,
    build_message,
    sender_domain,
    transport_for,
)
from solaris_tokens.settings import Settings

log = logging.getLogger("solaris_tokens.notify")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 12
    base: timedelta = timedelta(seconds=60)
    cap: timedelta = timedelta(hours=1)

    def delay(self, attempts: int) -> timedelta:
        """Wait after the `attempts`-th failure: base, 2·base, 4·base, ... up to the cap."""
        exponent = min(max(attempts - 1, 0), 30)
        delay: timedelta = self.base * (2**exponent)
        return min(delay, self.cap)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.email_max_attempts,
            base=timedelta(seconds=settings.email_retry_base_seconds),
            cap=timedelta(seconds=settings.email_retry_max_seconds),
        )


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost_claims: int = 0  # rows reclaimed by another worker while this one held them
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed
        self.lost_claims += other.lost_claims
        self.errors += other.errors

    @property
    def handled(self) -> int:
        return self.sent + self.retried + self.failed + self.lost_claims


class OutboxDelivery:
    def __init__(
        self,
        outbox: Outbox,
        renderer: Renderer,
        transport: MailTransport,
        *,
        sender: str,
        policy: RetryPolicy | None = None,
        batch_size: int = 50,
        lease: timedelta = timedelta(minutes=10),
        clock: Clock = utc_now,
    ) -> None:
        self.outbox = outbox
        self.renderer = renderer
        self.transport = transport
        self.sender = sender
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.lease = lease
        self.clock = clock
        self._domain = sender_domain(sender)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> OutboxDelivery:
        return cls(
            Outbox(engine, clock),
            Renderer(settings, engine=engine, clock=clock),
            transport_for(settings),
            sender=settings.email_from,
            policy=RetryPolicy.from_settings(settings),
            batch_size=settings.email_batch_size,
            lease=timedelta(seconds=settings.email_sending_lease_seconds),
            clock=clock,
        )

    def run(self, max_batches: int = 20) -> DeliveryReport:
        """Deliver due rows batch after batch until none is due (or `max_batches` were handled)."""
        report = DeliveryReport()
        for _ in range(max_batches):
            items = self.outbox.claim(self.batch_size, lease=self.lease)
            if not items:
                break
            batch = self.deliver(items)
            report.add(batch)
            if batch.sent == 0 and batch.retried > 0:
                break  # the server is down or refusing: the next run will try again
        return report

    def message_id(self, item: OutboxItem) -> str:
        """Stable per row, so a receiver can drop the copy a lost worker might have sent too."""
        return f"<solaris-outbox-{item.id}-{to_ms(item.created_at)}@{self._domain}>"

    def deliver(self, items: list[OutboxItem]) -> DeliveryReport:
        report = DeliveryReport()
        broken: SendError | None = None
        with self.transport.session() as session:
            for item in items:
                if broken is not None:
                    self._retry(item, str(broken), report)
                    continue
                try:
                    self._send(session, item)
                except SendError as exc:
                    if exc.connection:
                        broken = exc
                    if exc.permanent:
                        self._fail(item, str(exc), report)
                    else:
                        self._retry(item, str(exc), report)
                    continue
                except Exception as exc:  # a template or payload bug must not stop the other emails
                    log.exception("outbox %s (%s) could not be rendered", item.id, item.kind)
                    self._retry(item, f"{type(exc).__name__}: {exc}", report)
                    continue
                if self.outbox.mark_sent(item):
                    report.sent += 1
                else:
                    report.lost_claims += 1
                    log.warning("outbox %s was reclaimed while being sent", item.id)
        return report

    def _send(self, session: MailSession, item: OutboxItem) -> None:
        if item.attempts > self.policy.max_attempts:
            # Only a row reclaimed after its worker was lost gets here.
            raise SendError(f"gave up after {item.attempts - 1} attempts", permanent=True)
        email = self.renderer.render(item.kind, item.payload, item.recipient)
        message = build_message(
            email,
            sender=self.sender,
            recipient=item.recipient,
            kind=item.kind,
            message_id=self.message_id(item),
            date=self.clock(),
        )
        session.send(message)

    def _retry(self, item: OutboxItem, error: str, report: DeliveryReport) -> None:
        if item.attempts >= self.policy.max_attempts:
            self._fail(item, f"gave up after {item.attempts} attempts; last error: {error}", report)
            return
        at: datetime = self.clock() + self.policy.delay(item.attempts)
        report.errors.append(error)
        if self.outbox.mark_retry(item, error, at=at):
            report.retried += 1
            log.info("outbox %s (%s to %s) retry at %s: %s", item.id, item.kind, item.recipient, at, error)
        else:
            report.lost_claims += 1

    def _fail(self, item: OutboxItem, error: str, report: DeliveryReport) -> None:
        report.errors.append(error)
        if self.outbox.mark_failed(item, error):
            report.failed += 1
            log.error("outbox %s (%s to %s) failed: %s", item.id, item.kind, item.recipient, error)
        else:
            report.lost_claims += 1

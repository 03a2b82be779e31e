"""The request path in LiteLLM-free terms: identify → estimate → reserve, then settle or release.

The LiteLLM callback (handler.py) only translates LiteLLM's payloads into these calls; the
quota decisions themselves are the core's (QuotaService). Rejections leave as the HTTP
exceptions of bodies.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from solaris_tokens.domain import CallDetails, ReleaseOutcome, Settlement, Usage, Verdict
from solaris_tokens.errors import InvalidInput
from solaris_tokens.estimate import Estimator
from solaris_tokens.identity import CallerKey, IdentityResolver, UnidentifiedCaller
from solaris_tokens.proxy import bodies
from solaris_tokens.proxy.rejections import RejectedRequest, RejectionReason, RejectionRecorder
from solaris_tokens.proxy.settle_queue import SettleQueue
from solaris_tokens.proxy.ticket import Ticket, TicketSigner, attach_ticket, clear_tickets
from solaris_tokens.quota import new_reservation_id
from solaris_tokens.runtime import Runtime

log = logging.getLogger("solaris_tokens.proxy")

# A settle that met a Redis outage is tried again later (it is idempotent by reservation id).
SETTLE_RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0)
_MAX_PENDING_SETTLES = 10_000

_Finished = tuple[Ticket, tuple[int, int] | None, CallDetails]  # what a success event leaves to settle


class QuotaGate:
    def __init__(
        self,
        runtime: Runtime,
        *,
        signer: TicketSigner | None = None,
        recorder: RejectionRecorder | None = None,
        retry_delays: tuple[float, ...] = SETTLE_RETRY_DELAYS,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.quota = runtime.quota
        self.identity = IdentityResolver(runtime.settings)
        self.estimator = Estimator(runtime.settings)
        self.signer = signer or TicketSigner()
        self.recorder = recorder or RejectionRecorder(runtime.ledger)
        self.retry_delays = retry_delays
        self._retries: set[asyncio.Task[None]] = set()
        window = runtime.settings.settle_batch_seconds
        self.settles: SettleQueue[_Finished] | None = (
            SettleQueue(self._settle_finished, window=window, limit=runtime.settings.settle_batch_max)
            if window > 0
            else None
        )

    # --- before the call ----------------------------------------------------------------------

    async def admit(
        self,
        body: MutableMapping[str, Any],
        *,
        headers: Mapping[str, object],
        key: CallerKey,
        call_type: str = "",
    ) -> Ticket:
        """Reserve the request's estimate and leave a ticket in its metadata, or raise the HTTP answer."""
        clear_tickets(body)
        try:
            email = self.identity.resolve(headers=headers, key=key, user_field=body.get("user")).email
        except UnidentifiedCaller as exc:
            raise bodies.unidentified(exc.problem, self.settings) from None
        estimate = self.estimator.estimate(body, call_type=call_type).total
        try:
            decision = await self.quota.authorize(email, estimate)
        except Exception as exc:  # Redis down or slow, or the ledger down while provisioning a new user
            return self._outage(body, email, estimate, exc)
        if decision.verdict is Verdict.EXHAUSTED:
            raise bodies.exhausted(decision, self.settings, self.quota.clock())
        if decision.verdict is Verdict.SUSPENDED:
            raise bodies.suspended(decision, self.settings)
        ticket = Ticket(email, decision.reservation_id, estimate)
        attach_ticket(body, self.signer.seal(ticket))
        return ticket

    def _outage(self, body: MutableMapping[str, Any], email: str, estimate: int, exc: Exception) -> Ticket:
        """F8: fail closed with 503 (or admit unreserved when fail_open), and note the request."""
        fail_open = self.settings.fail_open
        log.warning("quota check unavailable for %s (%s): %r", email, "admitted" if fail_open else "503", exc)
        reason = RejectionReason.FAIL_OPEN if fail_open else RejectionReason.STORE_UNAVAILABLE
        model = str(body.get("model") or "")
        self.recorder.record(RejectedRequest(email, reason, model, estimate, self.quota.clock()))
        if not fail_open:
            raise bodies.unavailable(self.settings) from exc
        # No reservation: the success hook still debits the real usage ("late") if Redis is back.
        ticket = Ticket(email, new_reservation_id(), estimate, reserved=False)
        attach_ticket(body, self.signer.seal(ticket))
        return ticket

    # --- after the call -----------------------------------------------------------------------

    def open(self, raw: object) -> Ticket | None:
        return self.signer.open(raw)

    async def finish(self, ticket: Ticket, tokens: tuple[int, int] | None, call: CallDetails) -> None:
        """Settle a finished call: in the next batch (`settle_batch_seconds`), or now when that is 0."""
        if self.settles is None:
            await self.settle(ticket, tokens, call)
        else:
            self.settles.put((ticket, tokens, call))

    async def drain(self) -> None:
        """Run the settles waiting for their batch now, and wait for them."""
        if self.settles is not None:
            await self.settles.drain()

    async def _settle_finished(self, finished: _Finished) -> None:
        await self.settle(*finished)

    async def settle(self, ticket: Ticket, tokens: tuple[int, int] | None, call: CallDetails) -> Settlement | None:
        """Debit the real usage (prompt, completion tokens) in place of the reservation.

        A call that reported no usable counts, or absurd ones (beyond the configured cap), is
        debited its estimate: neither free nor lost, and logged. A Redis outage schedules
        retries instead of losing the debit.
        """
        if tokens is None:
            log.warning("no usage reported for reservation %s: debiting its estimate", ticket.reservation_id)
            tokens = (ticket.estimate, 0)
        usage = Usage(*tokens, call)
        try:
            return await self.quota.settle(ticket.email, ticket.reservation_id, usage)
        except InvalidInput as exc:
            log.error(
                "usage of %s refused (%s): %s; debiting the estimate of %d instead",
                ticket.email,
                ticket.reservation_id,
                exc,
                ticket.estimate,
            )
            fallback = Usage(ticket.estimate, 0, call)
            try:
                return await self.quota.settle(ticket.email, ticket.reservation_id, fallback)
            except Exception as retry_exc:
                self._retry_later(ticket, fallback, retry_exc)
                return None
        except Exception as exc:
            self._retry_later(ticket, usage, exc)
            return None

    def _retry_later(self, ticket: Ticket, usage: Usage, exc: Exception) -> None:
        if len(self._retries) >= _MAX_PENDING_SETTLES or not self.retry_delays:
            _log_lost(ticket, usage, exc)
            return
        log.warning("settle of %s postponed: %r", ticket.reservation_id, exc)
        task = asyncio.create_task(self._settle_retrying(ticket, usage))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _settle_retrying(self, ticket: Ticket, usage: Usage) -> None:
        error: Exception | None = None
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            try:
                await self.quota.settle(ticket.email, ticket.reservation_id, usage)
                return
            except InvalidInput:
                raise
            except Exception as exc:
                error = exc
        _log_lost(ticket, usage, error)

    async def release(self, ticket: Ticket) -> ReleaseOutcome | None:
        """Void the reservation of a failed call; an outage leaves it to the reservation TTL."""
        if not ticket.reserved:
            return ReleaseOutcome.UNKNOWN
        try:
            return await self.quota.release(ticket.email, ticket.reservation_id)
        except Exception as exc:
            log.warning("release of %s left to its TTL: %r", ticket.reservation_id, exc)
            return None

    async def aclose(self) -> None:
        if self.settles is not None:
            await self.settles.aclose()
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)


def _log_lost(ticket: Ticket, usage: Usage, error: Exception | None) -> None:
    """The one loud line an operator greps for when a settle is given up (compensate by hand)."""
    log.error(
        "usage lost for %s: reservation %s, %d prompt + %d completion tokens (%r)",
        ticket.email,
        ticket.reservation_id,
        usage.prompt_tokens,
        usage.completion_tokens,
        error,
    )

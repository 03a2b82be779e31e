"""The reservation ticket the pre-call hook leaves in the request's metadata for the later hooks.

LiteLLM hands `data["metadata"]` back to the success and failure hooks, but clients can put
anything in `metadata` too, and some routes may log a success without running the pre-call hook.
So the hook always overwrites the key, and the ticket carries a MAC (keyed BLAKE2b) made with a secret born in
this process (the hooks of one request always run in the process that received it): a ticket the
client wrote, or one from another process, does not open, and debits nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "solaris_tokens"
# Where LiteLLM keeps request metadata: `metadata` on most routes, `litellm_metadata` on
# /v1/responses, /v1/messages, batches, files, threads and assistants.
METADATA_FIELDS = ("litellm_metadata", "metadata")


@dataclass(frozen=True, slots=True)
class Ticket:
    email: str
    reservation_id: str
    estimate: int
    reserved: bool = True  # False when admitted by fail_open with no reservation behind it


class TicketSigner:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, email: str, rid: str, estimate: int, reserved: bool) -> str:
        # Keyed BLAKE2b is a MAC by design (RFC 7693) and, unlike OpenSSL's HMAC, costs well under
        # a microsecond: this runs twice per request.
        message = f"{email}\n{rid}\n{estimate}\n{int(reserved)}".encode()
        return hashlib.blake2b(message, key=self._secret, digest_size=32).hexdigest()

    def seal(self, ticket: Ticket) -> dict[str, Any]:
        return {
            "email": ticket.email,
            "rid": ticket.reservation_id,
            "estimate": ticket.estimate,
            "reserved": ticket.reserved,
            "sig": self._mac(ticket.email, ticket.reservation_id, ticket.estimate, ticket.reserved),
        }

    def open(self, value: object) -> Ticket | None:
        """The ticket if `value` is one this process sealed, else None."""
        if not isinstance(value, Mapping):
            return None
        email, rid, estimate, reserved, sig = (
            value.get("email"),
            value.get("rid"),
            value.get("estimate"),
            value.get("reserved", True),
            value.get("sig"),
        )
        if not (isinstance(email, str) and isinstance(rid, str) and isinstance(sig, str) and rid):
            return None
        if isinstance(estimate, bool) or not isinstance(estimate, int) or not isinstance(reserved, bool):
            return None
        if not hmac.compare_digest(sig, self._mac(email, rid, estimate, reserved)):
            return None
        return Ticket(email, rid, estimate, reserved)


def attach_ticket(data: MutableMapping[str, Any], sealed: dict[str, Any]) -> None:
    """Put a sealed ticket in every metadata dict of the request body (`metadata` created if none)."""
    placed = False
    for name in METADATA_FIELDS:
        value = data.get(name)
        if isinstance(value, MutableMapping):
            value[METADATA_KEY] = sealed
            placed = True
    if not placed:
        data["metadata"] = {METADATA_KEY: sealed}


def clear_tickets(data: MutableMapping[str, Any]) -> None:
    """Drop whatever the client put under our key, in every metadata field."""
    for name in METADATA_FIELDS:
        value = data.get(name)
        if isinstance(value, MutableMapping):
            value.pop(METADATA_KEY, None)


def find_ticket(containers: list[Any]) -> Any:
    """The raw ticket from the first metadata dict of `containers` that has one."""
    for container in containers:
        if not isinstance(container, Mapping):
            continue
        for name in METADATA_FIELDS:
            meta = container.get(name)
            if isinstance(meta, Mapping) and METADATA_KEY in meta:
                return meta[METADATA_KEY]
    return None

"""Error bodies (E2: pt-BR, self-contained) and the signed reservation ticket."""

from __future__ import annotations

from datetime import UTC, datetime

from solaris_tokens.domain import Decision, Snapshot, Verdict
from solaris_tokens.identity import IdentityProblem
from solaris_tokens.proxy import bodies
from solaris_tokens.proxy.ticket import METADATA_KEY, Ticket, TicketSigner, attach_ticket, clear_tickets, find_ticket
from solaris_tokens.settings import Settings

RESET = datetime(2024, 2, 1, tzinfo=UTC)


def decision(used: int, limit: int, additional: int, estimate: int = 500) -> Decision:
    return Decision(Verdict.EXHAUSTED, "", estimate, Snapshot(used, limit, additional, 0, "2024-01", RESET))


def test_spec_example_object() -> None:
    """The 429 body of the spec's flow, for used = limit = 1.000.000 in January 2024."""
    error = bodies.exhausted(decision(1_000_000, 1_000_000, 0), Settings(), datetime(2024, 1, 31, 23, 0, tzinfo=UTC))
    assert error.provider_specific_fields == {
        "error": "Limite de tokens esgotado",
        "details": {"used": 1000000, "limit": 1000000, "additional": 0, "next_reset": "2024-02-01T00:00:00Z"},
        "actions": {"buy_tokens": "/api/tokens/purchase", "contact_support": "/api/support/contact"},
    }
    assert error.headers is not None and error.headers["Retry-After"] == "3600"
    assert "1.000.000 de 1.000.000 tokens" in error.message
    assert "renovados em 01/02/2024 às 00:00 UTC" in error.message


def test_links_in_the_message_are_absolute_and_follow_settings() -> None:
    settings = Settings(public_base_url="https://ia.solaris.com.br/", purchase_path="/comprar", support_path="ajuda")
    error = bodies.exhausted(decision(10, 10, 0), settings, datetime(2024, 1, 5, tzinfo=UTC))
    assert "https://ia.solaris.com.br/comprar" in error.message
    assert "https://ia.solaris.com.br/ajuda" in error.message
    assert error.provider_specific_fields["actions"] == {"buy_tokens": "/comprar", "contact_support": "ajuda"}


def test_suspension_without_end_says_so() -> None:
    suspended = Decision(
        Verdict.SUSPENDED, "", 1, Snapshot(0, 10, 0, 0, "2024-01", RESET), suspended_until=None, suspend_reason=""
    )
    error = bodies.suspended(suspended, Settings())
    assert error.status_code == 403
    assert "suspensa por tempo indeterminado. Motivo: não informado." in error.message
    assert error.provider_specific_fields["details"] == {"reason": "", "until": None}


def test_unidentified_and_unavailable_bodies() -> None:
    settings = Settings(identity_header="X-LibreChat-Email", retry_after_seconds=7, maintenance_message="Manutenção.")
    missing = bodies.unidentified(IdentityProblem.MISSING, settings)
    assert missing.status_code == 401 and "X-LibreChat-Email" in missing.message
    down = bodies.unavailable(settings)
    assert (down.status_code, down.message, down.headers) == (503, "Manutenção.", {"Retry-After": "7"})


def test_ticket_opens_only_when_sealed_here_and_untouched() -> None:
    signer = TicketSigner()
    ticket = Ticket("maria@example.com", "rid-1", 500)
    sealed = signer.seal(ticket)
    assert signer.open(sealed) == ticket
    assert signer.open(dict(sealed)) == ticket  # a copy (LiteLLM deep-copies metadata) still opens
    assert TicketSigner().open(sealed) is None  # another process
    for field, value in [("email", "x@example.com"), ("rid", "rid-2"), ("estimate", 1), ("reserved", False)]:
        assert signer.open({**sealed, field: value}) is None
    for junk in (None, "ticket", {"email": "a@b.c"}, {**sealed, "estimate": True}, {**sealed, "rid": ""}):
        assert signer.open(junk) is None


def test_ticket_goes_into_every_metadata_dict_and_client_values_are_cleared() -> None:
    data: dict[str, object] = {"metadata": {METADATA_KEY: "forged", "x": 1}, "litellm_metadata": {METADATA_KEY: 2}}
    clear_tickets(data)
    assert data == {"metadata": {"x": 1}, "litellm_metadata": {}}
    attach_ticket(data, {"sig": "s"})
    assert data == {"metadata": {"x": 1, METADATA_KEY: {"sig": "s"}}, "litellm_metadata": {METADATA_KEY: {"sig": "s"}}}
    bare: dict[str, object] = {}
    attach_ticket(bare, {"sig": "s"})
    assert bare == {"metadata": {METADATA_KEY: {"sig": "s"}}}
    assert find_ticket([None, {"litellm_params": 1}, {"metadata": {METADATA_KEY: 3}}]) == 3
    assert find_ticket([{"metadata": {}}]) is None

"""The error answers of the request path (SPEC F1, F4, F8, E2), as LiteLLM will render them.

LiteLLM wraps an HTTPException raised in a pre-call hook in its OpenAI-style envelope
`{"error": {"message", "type", "param", "code", "provider_specific_fields"}}` and keeps its headers
(checked on litellm 1.108). With a string `detail`, `message` is that string and
`provider_specific_fields` is the exception's own `provider_specific_fields` attribute, untouched:
so `message` carries the self-contained pt-BR sentence LibreChat shows, and
`provider_specific_fields` carries exactly the spec's object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from solaris_tokens.clock import iso_z
from solaris_tokens.domain import Decision, Snapshot
from solaris_tokens.identity import IdentityProblem
from solaris_tokens.settings import Settings

EXHAUSTED_ERROR = "Limite de tokens esgotado"
SUSPENDED_ERROR = "Conta suspensa"
UNIDENTIFIED_ERROR = "Usuário não identificado"
UNAVAILABLE_ERROR = "Sistema de controle de tokens em manutenção"
# OpenAI SDKs (Python and Node, so LibreChat too) retry 429 and 5xx unless told not to; a retry a
# second later cannot succeed when the budget is spent or the account suspended.
NO_RETRY = {"x-should-retry": "false"}


class QuotaHTTPException(HTTPException):
    """An HTTPException whose `provider_specific_fields` LiteLLM puts in the envelope as is."""

    def __init__(
        self, status_code: int, message: str, fields: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.provider_specific_fields = fields

    @property
    def message(self) -> str:
        return str(self.detail)


def tokens_br(value: int) -> str:
    """`1000000` → `1.000.000`, as the spec writes token figures."""
    return f"{value:,}".replace(",", ".")


def moment_br(moment: datetime) -> str:
    """`2026-12-01T00:00Z` → `01/12/2026 às 00:00 UTC`."""
    return moment.astimezone(UTC).strftime("%d/%m/%Y às %H:%M UTC")


def absolute(settings: Settings, path: str) -> str:
    return settings.public_base_url.rstrip("/") + "/" + path.lstrip("/")


def exhausted_object(snapshot: Snapshot, settings: Settings) -> dict[str, Any]:
    """The spec's 429 object, field for field (integers; next_reset in UTC ending in Z)."""
    return {
        "error": EXHAUSTED_ERROR,
        "details": {
            "used": int(snapshot.used),
            "limit": int(snapshot.limit),
            "additional": int(snapshot.additional),
            "next_reset": iso_z(snapshot.next_reset),
        },
        "actions": {"buy_tokens": settings.purchase_path, "contact_support": settings.support_path},
    }


def exhausted(decision: Decision, settings: Settings, now: datetime) -> QuotaHTTPException:
    """429: the estimate does not fit in what is left; says when it renews and how to buy more."""
    s = decision.snapshot
    available = max(s.available, 0)
    if s.used >= s.limit and s.additional <= 0:
        what = (
            f"Seu limite mensal de tokens foi esgotado: você já usou {tokens_br(s.used)} "
            f"de {tokens_br(s.limit)} tokens deste mês e não tem tokens adicionais."
        )
    else:
        what = (
            f"Seu saldo de tokens não é suficiente para esta solicitação: restam {tokens_br(available)} "
            f"tokens e ela precisa de cerca de {tokens_br(decision.estimate)}."
        )
    message = (
        f"{what} Seus tokens mensais serão renovados em {moment_br(s.next_reset)}. "
        f"Para continuar agora, compre tokens adicionais em {absolute(settings, settings.purchase_path)} "
        f"ou fale com o suporte em {absolute(settings, settings.support_path)}."
    )
    retry_after = max(1, int((s.next_reset - now).total_seconds()))
    return QuotaHTTPException(
        429, message, exhausted_object(s, settings), {"Retry-After": str(retry_after), **NO_RETRY}
    )


def suspended(decision: Decision, settings: Settings) -> QuotaHTTPException:
    """403: the account is suspended; says why and until when."""
    until = decision.suspended_until
    reason = decision.suspend_reason.strip()
    when = f"até {moment_br(until)}" if until else "por tempo indeterminado"
    message = (
        f"Sua conta na IA SOLARIS está suspensa {when}. Motivo: {reason or 'não informado'}. "
        f"Para contestar ou pedir a reativação, fale com o suporte em {absolute(settings, settings.support_path)}."
    )
    fields = {
        "error": SUSPENDED_ERROR,
        "details": {"reason": reason, "until": iso_z(until) if until else None},
        "actions": {"contact_support": settings.support_path},
    }
    return QuotaHTTPException(403, message, fields, dict(NO_RETRY))


def unidentified(problem: IdentityProblem, settings: Settings) -> QuotaHTTPException:
    """401: no valid, trusted user email; nothing was created or debited."""
    if problem is IdentityProblem.MISSING:
        message = (
            "Não foi possível identificar o usuário desta solicitação: nenhum e-mail foi informado. "
            "Entre novamente na sua conta ou peça ao administrador que envie o e-mail do usuário "
            f"(cabeçalho {settings.identity_header})."
        )
    else:
        message = (
            "Não foi possível identificar o usuário desta solicitação: o e-mail informado não é válido. "
            f"Verifique o endereço da sua conta ou fale com o suporte em {absolute(settings, settings.support_path)}."
        )
    fields = {
        "error": UNIDENTIFIED_ERROR,
        "details": {"problem": problem.value},
        "actions": {"contact_support": settings.support_path},
    }
    return QuotaHTTPException(401, message, fields, dict(NO_RETRY))


def unavailable(settings: Settings) -> QuotaHTTPException:
    """503: the counter store cannot be reached; a temporary condition, so Retry-After."""
    fields = {"error": UNAVAILABLE_ERROR, "details": {"retry_after": settings.retry_after_seconds}}
    return QuotaHTTPException(
        503, settings.maintenance_message, fields, {"Retry-After": str(settings.retry_after_seconds)}
    )

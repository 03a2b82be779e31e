"""Variables the quota alert emails (warning, urgent, blocked) add to their payload.

The outbox payload of an alert holds the figures at the instant the threshold was crossed (used,
limit, additional, percent, period); this adds what the texts derive from them: what remains, when
the allowance renews, and for the first alert the exhaustion estimate (None → sentence omitted).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from solaris_tokens.domain import AlertKind
from solaris_tokens.errors import InvalidInput
from solaris_tokens.forecast import exhaustion_days
from solaris_tokens.policy import Period

if TYPE_CHECKING:
    from solaris_tokens.notify.render import ContextHook, RenderContext


def _int(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key, 0)
    if isinstance(value, bool):
        raise InvalidInput(f"alert payload {key!r} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"alert payload {key!r} must be an integer, got {value!r}") from exc


def alert_variables(ctx: RenderContext) -> dict[str, Any]:
    payload = ctx.payload
    used, limit, additional = _int(payload, "used"), _int(payload, "limit"), _int(payload, "additional")
    period = Period.parse(str(payload.get("period") or Period.of(ctx.now).name))
    values: dict[str, Any] = {
        "used": used,
        "limit": limit,
        "additional": additional,
        "remaining": max(limit - used, 0),
        "available": max(limit - used, 0) + additional,
        "period": period.name,
        "next_reset": period.end,
    }
    if "percent" in payload:
        values["percent"] = _int(payload, "percent")
    if ctx.kind == AlertKind.WARNING and "eta_days" not in payload:
        values["eta_days"] = None
        if ctx.engine is not None and ctx.user is not None and ctx.user.id is not None:
            values["eta_days"] = exhaustion_days(
                ctx.engine,
                ctx.user.id,
                remaining=limit - used,
                now=ctx.now,
                window=timedelta(days=ctx.settings.forecast_window_days),
                reset=period.end,
            )
    return values


ALERT_HOOKS: dict[str, ContextHook] = {kind.value: alert_variables for kind in AlertKind}

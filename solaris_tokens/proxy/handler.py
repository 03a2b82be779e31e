"""The LiteLLM callback: `litellm_settings: callbacks: ["solaris_tokens.proxy.handler.handler"]`.

A thin adapter. It reads what LiteLLM hands each hook, and calls the gate:
- `async_pre_call_hook`: identity → estimate → reserve (401 / 403 / 429 / 503 leave from here);
- `async_log_success_event`: settle the real usage (streams too, and streams the client dropped),
  in the next batch of settles (`settle_queue.py`);
- `async_log_failure_event` / `async_post_call_failure_hook`: release the reservation.

LiteLLM calls `async_pre_call_hook` only when the registered class defines it itself (it looks in
`vars(cls)`), so every hook is defined here, never inherited. The runtime (Redis, ledger, flusher)
is built lazily inside the proxy's event loop, started as soon as the config loads the callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.constants import LITELLM_PROXY_MASTER_KEY_ALIAS as MASTER_KEY_ALIAS
from litellm.integrations.custom_logger import CustomLogger

from solaris_tokens.domain import CallDetails
from solaris_tokens.identity import CallerKey
from solaris_tokens.proxy import bodies
from solaris_tokens.proxy.service import ProxyService
from solaris_tokens.proxy.ticket import find_ticket
from solaris_tokens.settings import Settings

log = logging.getLogger("solaris_tokens.proxy")

# LiteLLM's own token counting must not reach for a Hugging Face tokenizer at run time either
# (an explicit operator setting wins).
if litellm.disable_hf_tokenizer_download is None:
    litellm.disable_hf_tokenizer_download = True

# Call types that spend tokens: everything else (files, batches, assistants admin...) passes untouched.
METERED_CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "embedding",
        "aembedding",
        "responses",
        "aresponses",
        "anthropic_messages",
        "aanthropic_messages",
        "generate_content",
        "agenerate_content",
        "generate_content_stream",
        "agenerate_content_stream",
    }
)


def caller_key(auth: object) -> CallerKey:
    """LiteLLM's UserAPIKeyAuth → what identity needs. The master key arrives under a fixed alias."""
    api_key = getattr(auth, "api_key", None) or getattr(auth, "token", None) or ""
    alias = getattr(auth, "key_alias", None) or ""
    owner = getattr(auth, "user_email", None) or ""
    return CallerKey(
        hashed=str(api_key),
        alias=str(alias),
        owner_email=str(owner),
        is_master=api_key == MASTER_KEY_ALIAS,
    )


def request_headers(data: Mapping[str, Any]) -> Mapping[str, object]:
    """The HTTP headers LiteLLM recorded for the request (credentials already redacted by it)."""
    server_request = data.get("proxy_server_request")
    if isinstance(server_request, Mapping):
        headers = server_request.get("headers")
        if isinstance(headers, Mapping):
            return headers
    return {}


def _int(value: object) -> int | None:
    """A token count as reported, or None when malformed (negative, NaN, not a number): the caller
    then debits the reservation's estimate rather than trusting or dropping it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value == value and value >= 0 and value != float("inf"):
        return int(value)
    return None


def usage_of(kwargs: Mapping[str, Any], response: object) -> tuple[int, int] | None:
    """(prompt, completion) tokens: LiteLLM's standard logging payload, else the response's usage."""
    slo = kwargs.get("standard_logging_object")
    if isinstance(slo, Mapping):
        prompt, completion = _int(slo.get("prompt_tokens")), _int(slo.get("completion_tokens"))
        if prompt is not None and completion is not None:
            return prompt, completion
    usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
    if usage is None:
        return None

    def field(*names: str) -> int | None:
        for name in names:
            value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
            number = _int(value)
            if number is not None:
                return number
        return None

    prompt = field("prompt_tokens", "input_tokens")
    completion = field("completion_tokens", "output_tokens") or 0
    return (prompt, completion) if prompt is not None else None


def _epoch(value: object) -> float | None:
    """A positive epoch timestamp in seconds, as LiteLLM logs startTime/endTime, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def call_details(kwargs: Mapping[str, Any]) -> CallDetails:
    """The usage-history fields of a finished call (model, LiteLLM's call id, start, latency)."""
    slo = kwargs.get("standard_logging_object")
    slo = slo if isinstance(slo, Mapping) else {}
    model = slo.get("model_group") or slo.get("model") or kwargs.get("model") or ""
    started = _epoch(slo.get("startTime"))
    ended = _epoch(slo.get("endTime"))
    latency = int((ended - started) * 1000) if started and ended and ended >= started else None
    return CallDetails(
        model=str(model)[:200],
        call_id=str(kwargs.get("litellm_call_id") or slo.get("id") or "")[:200],
        started_ms=int(started * 1000) if started else None,
        latency_ms=latency,
    )


class SolarisHandler(CustomLogger):  # type: ignore[misc]
    def __init__(self, service: ProxyService | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self._service = service
        self._settings = settings
        self._starting: asyncio.Task[ProxyService] | None = None
        if service is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # imported outside a loop (tools, tests): built on the first request
            self._start_in_background()

    # --- lifecycle ----------------------------------------------------------------------------

    def _start_in_background(self) -> asyncio.Task[ProxyService]:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(ProxyService.start(self._settings))
            self._starting.add_done_callback(self._started)
        return self._starting

    def _started(self, task: asyncio.Task[ProxyService]) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("solaris-tokens could not start: %r", task.exception())
            self._starting = None  # the next request tries again
            return
        self._service = task.result()

    async def service(self) -> ProxyService:
        if self._service is not None:
            return self._service
        return await asyncio.shield(self._start_in_background())

    async def drain(self) -> None:
        """Run the settles waiting for their batch now (tests, tools), and wait for them."""
        if self._service is not None:
            await self._service.gate.drain()

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()
            self._service = None

    # --- hooks --------------------------------------------------------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        """Reserve the request's estimate, or raise the 401/403/429/503 answer."""
        if call_type not in METERED_CALL_TYPES:
            return data
        try:
            service = await self.service()
        except Exception as exc:
            raise bodies.unavailable(self._settings or Settings()) from exc
        await service.gate.admit(
            data, headers=request_headers(data), key=caller_key(user_api_key_dict), call_type=call_type
        )
        return data

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Settle the real usage in place of the reservation (once per reservation, whatever LiteLLM repeats)."""
        service = self._service
        if service is None or not isinstance(kwargs, Mapping):
            return
        ticket = service.gate.open(find_ticket([kwargs.get("litellm_params"), kwargs]))
        if ticket is not None:
            await service.gate.finish(ticket, usage_of(kwargs, response_obj), call_details(kwargs))

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """A failed call: release its reservation (a no-op if it had none, or was released already)."""
        if isinstance(kwargs, Mapping):
            await self._release(find_ticket([kwargs.get("litellm_params"), kwargs]))

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """The proxy's own view of a failed request (also when a later hook refused it): release."""
        await self._release(find_ticket([request_data]))

    async def _release(self, raw: object) -> None:
        service = self._service
        if service is None or raw is None:
            return
        ticket = service.gate.open(raw)
        if ticket is not None:
            await service.gate.release(ticket)


handler = SolarisHandler()

"""A callback that defines the same hooks as solaris-tokens and does nothing: what LiteLLM's own
callback machinery costs, measured apart from the plugin's work (bench_proxy.py's third proxy)."""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class NoopHandler(CustomLogger):  # type: ignore[misc]
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        return data

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        return None

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        return None

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        return None


handler = NoopHandler()

"""LiteLLM payloads as the proxy (litellm 1.108) hands them to a callback, recorded from a real proxy.

`chat_request` is the `data` of `async_pre_call_hook` for POST /v1/chat/completions;
`success_kwargs` / `failure_kwargs` are the `kwargs` of the logging hooks for the same request,
built from that `data` the way LiteLLM does (the metadata dict travels in `litellm_params`).
"""

from __future__ import annotations

import copy
import hashlib
import time
import uuid
from typing import Any

from litellm import ModelResponse
from litellm.constants import LITELLM_PROXY_MASTER_KEY_ALIAS
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

MODEL = "solaris-mock"


def master_key() -> UserAPIKeyAuth:
    """What LiteLLM passes for a request made with the master key (it hides the key behind an alias)."""
    return UserAPIKeyAuth(
        api_key=LITELLM_PROXY_MASTER_KEY_ALIAS,
        token=LITELLM_PROXY_MASTER_KEY_ALIAS,
        user_role=LitellmUserRoles.PROXY_ADMIN,
        user_id="default_user_id",
    )


def virtual_key(raw: str, *, alias: str | None = None, owner_email: str | None = None) -> UserAPIKeyAuth:
    """A LiteLLM virtual key: `api_key` is the sha256 of the key, as in LiteLLM's database."""
    hashed = hashlib.sha256(raw.encode()).hexdigest()
    return UserAPIKeyAuth(
        api_key=hashed,
        token=hashed,
        key_alias=alias,
        user_email=owner_email,
        user_id="u-" + hashed[:8],
        user_role=LitellmUserRoles.INTERNAL_USER,
    )


def chat_request(
    email: str | None = None,
    *,
    content: str = "Explique o teorema de Pitágoras em poucas palavras.",
    max_tokens: int | None = None,
    stream: bool = False,
    user: str | None = None,
    client_metadata: dict[str, Any] | None = None,
    call_id: str | None = None,
    header: str = "x-user-email",
) -> dict[str, Any]:
    headers = {
        "host": "localhost:4000",
        "user-agent": "AsyncOpenAI/Python 1.99.0",
        "accept": "application/json",
        "content-type": "application/json",
    }
    if email is not None:
        headers[header] = email
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    if user is not None:
        body["user"] = user
    requester = {**(client_metadata or {}), "headers": headers, "used_client_oauth_token": False}
    metadata = {
        **copy.deepcopy(client_metadata or {}),
        "headers": headers,
        "used_client_oauth_token": False,
        "requester_metadata": requester,
        "user_api_key_hash": LITELLM_PROXY_MASTER_KEY_ALIAS,
        "user_api_key_alias": None,
        "user_api_key_user_id": "default_user_id",
        "user_api_key_user_email": None,
        "user_api_key_request_route": "/v1/chat/completions",
        "litellm_api_version": "1.108.7",
        "endpoint": "http://localhost:4000/v1/chat/completions",
        "requester_ip_address": "127.0.0.1",
        "user_agent": headers["user-agent"],
    }
    data: dict[str, Any] = {
        **body,
        "metadata": metadata,
        "proxy_server_request": {
            "url": "http://localhost:4000/v1/chat/completions",
            "method": "POST",
            "headers": headers,
            "body": copy.deepcopy(body),
            "credential_fields": (),
            "arrival_time": time.time(),
        },
        "secret_fields": {"raw_headers": {"authorization": "Bearer sk-..."}},
        "litellm_call_id": call_id or str(uuid.uuid4()),
        "litellm_logging_obj": None,
    }
    if stream:
        data["stream_options"] = {"include_usage": True}
        data["_litellm_strip_stream_usage"] = True
    return data


def _litellm_params(data: dict[str, Any]) -> dict[str, Any]:
    metadata = copy.deepcopy(data.get("metadata") or {})
    metadata.update({"model_group": MODEL, "deployment": "openai/solaris-mock", "attempted_retries": 0})
    return {
        "acompletion": True,
        "api_base": None,
        "custom_llm_provider": "openai",
        "litellm_call_id": data["litellm_call_id"],
        "metadata": metadata,
        "model_info": {"id": "35e5aff7e0869d5e", "db_model": False},
        "proxy_server_request": data.get("proxy_server_request"),
        "stream_response": {},
    }


def success_kwargs(
    data: dict[str, Any], prompt: int, completion: int, *, client_disconnected: bool = False
) -> dict[str, Any]:
    start = time.time()
    end = start + 0.42
    slo = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "litellm_call_id": data["litellm_call_id"],
        "call_type": "acompletion",
        "stream": bool(data.get("stream")),
        "status": "success",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "startTime": start,
        "endTime": end,
        "completionStartTime": start + 0.1,
        "model": "openai/solaris-mock",
        "model_group": MODEL,
        "custom_llm_provider": "openai",
        "metadata": {"user_api_key_hash": LITELLM_PROXY_MASTER_KEY_ALIAS},
        "hidden_params": {"client_disconnected": client_disconnected} if client_disconnected else {},
    }
    return {
        "model": "solaris-mock",
        "messages": data.get("messages"),
        "stream": bool(data.get("stream")),
        "litellm_call_id": data["litellm_call_id"],
        "litellm_params": _litellm_params(data),
        "standard_logging_object": slo,
        "response_cost": 1.35e-05,
    }


def failure_kwargs(data: dict[str, Any], exception: Exception) -> dict[str, Any]:
    return {
        "model": "solaris-mock",
        "messages": data.get("messages"),
        "litellm_call_id": data["litellm_call_id"],
        "litellm_params": _litellm_params(data),
        "exception": exception,
        "standard_logging_object": {"status": "failure", "prompt_tokens": 0, "completion_tokens": 0},
    }


def model_response(prompt: int, completion: int) -> ModelResponse:
    return ModelResponse(
        model=MODEL,
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Olá!"}}],
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    )

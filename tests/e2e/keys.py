"""LiteLLM `custom_auth` for the end-to-end proxy: a few virtual keys without LiteLLM's own database.

The master key maps to exactly what LiteLLM's built-in auth gives it (the fixed master-key alias,
proxy admin role); the others are virtual keys as LiteLLM's database would describe them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any

from fastapi import HTTPException
from litellm.constants import LITELLM_PROXY_MASTER_KEY_ALIAS
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

UNTRUSTED_KEY = "sk-e2e-untrusted-app-5a7c"
LIBRECHAT_KEY = "sk-e2e-librechat-9d2e"  # its alias is listed in SOLARIS_TRUSTED_KEY_ALIASES
OWNED_KEY = "sk-e2e-joao-laptop-3b1f"
OWNER_EMAIL = "joao.owner@example.com"

VIRTUAL_KEYS: dict[str, dict[str, Any]] = {
    UNTRUSTED_KEY: {"key_alias": "other-app"},
    LIBRECHAT_KEY: {"key_alias": "librechat"},
    OWNED_KEY: {"key_alias": "joao-laptop", "user_email": OWNER_EMAIL},
}


async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
    key = api_key.removeprefix("Bearer ").strip()
    if secrets.compare_digest(key, os.environ["LITELLM_MASTER_KEY"]):
        return UserAPIKeyAuth(
            api_key=LITELLM_PROXY_MASTER_KEY_ALIAS,
            token=LITELLM_PROXY_MASTER_KEY_ALIAS,
            user_role=LitellmUserRoles.PROXY_ADMIN,
            user_id="default_user_id",
        )
    entry = VIRTUAL_KEYS.get(key)
    if entry is None:
        raise HTTPException(status_code=401, detail={"error": "invalid key"})
    hashed = hashlib.sha256(key.encode()).hexdigest()
    return UserAPIKeyAuth(
        api_key=hashed, token=hashed, user_id="u-" + hashed[:8], user_role=LitellmUserRoles.INTERNAL_USER, **entry
    )

"""Fixtures of the proxy adapter tests: LiteLLM imported offline, the handler over the `runtime` fixture."""

from __future__ import annotations

import os

# Before anything imports LiteLLM: its model cost map from the package, not from GitHub (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator

import pytest

from solaris_tokens.proxy.handler import SolarisHandler
from solaris_tokens.proxy.service import ProxyService
from solaris_tokens.runtime import Runtime


@pytest.fixture
async def service(runtime: Runtime) -> AsyncIterator[ProxyService]:
    runtime.settings.redis_warm_connections = 8
    svc = await ProxyService.start(runtime=runtime, background=False)
    svc.gate.retry_delays = ()
    yield svc
    await svc.aclose(close_runtime=False)


@pytest.fixture
def handler(service: ProxyService) -> SolarisHandler:
    return SolarisHandler(service=service)

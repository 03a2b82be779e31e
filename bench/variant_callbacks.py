"""Pieces of the plugin, one at a time, for `bench_proxy.py --variant NAME` (a third proxy).

Each variant but `imported` and `preloaded` starts the real plugin service (same imports, same
heap, same Redis channel) and runs only part of its request work, so an end-to-end difference
can be traced to a part:

- `imported`: the plugin's modules are imported (`bench/variant_spec.py`: all but
  `solaris_tokens.proxy`, whose handler instance would start the service), nothing is started,
  the hooks do nothing;
- `preloaded`: the same modules imported at interpreter start (`bench/proxy_site`), before LiteLLM's
  own start-up, the hooks do nothing;
- `started`: the service is built, the hooks do nothing;
- `ping`: one Redis round trip (PING over the channel) in the pre-call hook, none after;
- `ping-nowait`: the same PING sent from the pre-call hook in a task of its own, not awaited: the
  same I/O with no suspension of the request (tells the round trip's I/O from its await);
- `admit`: the real pre-call hook (identity, estimate, reserve, ticket); nothing after the call;
- `admit-ping`: the real pre-call hook; after the call, the ticket is opened and the usage read
  as the real success hook does, then one PING instead of the settle script;
- `full`: both real hooks, called from this class (the plugin's work, another registered class);
- `toggled`: the plugin's own hooks, skipped for requests carrying the `x-bench-idle` header: one
  process measured with and without the plugin's per-request work (`bench_proxy.py` alternates
  the two within each round), so no difference between processes enters the comparison.

The full plugin is the benchmark's `with` proxy. Selected by SOLARIS_BENCH_VARIANT. With
BENCH_NO_ENCODINGS=1 the service starts without loading tiktoken's encodings (127 MB of RSS measured): for
`started`, whose hooks never count a token, the process then holds none of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from bench.noop_callback import NoopHandler
from bench.variant_spec import IDLE_HEADER, import_plugin_modules

VARIANT = os.environ.get("SOLARIS_BENCH_VARIANT", "started")

NO_SERVICE = VARIANT in ("imported", "preloaded")  # the plugin's modules loaded, nothing started

if VARIANT == "imported":
    import_plugin_modules()
elif not NO_SERVICE:
    if os.environ.get("BENCH_NO_ENCODINGS"):  # the service starts without loading tiktoken's encodings
        from solaris_tokens import estimate

        estimate.warm_up = lambda: None
    from solaris_tokens.domain import Usage
    from solaris_tokens.proxy.handler import call_details, caller_key, request_headers, usage_of
    from solaris_tokens.proxy.handler import handler as plugin_handler
    from solaris_tokens.proxy.service import ProxyService
    from solaris_tokens.proxy.ticket import find_ticket


async def _ping(service: ProxyService) -> None:
    channel = service.runtime.store.channel
    if channel is None:
        raise RuntimeError("the variants need the pipelined channel (a redis:// URL)")
    await channel.call("PING")


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


_unawaited: set[asyncio.Task[None]] = set()


def _ping_unawaited(service: ProxyService) -> None:
    task = asyncio.ensure_future(_ping(service))
    _unawaited.add(task)  # a strong reference until it ends
    task.add_done_callback(_unawaited.discard)
    task.add_done_callback(_consume)


class VariantHandler(NoopHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        # The plugin's own instance: importing its module already started its service, and a
        # second SolarisHandler would start a second one (double heap, connections, start-up).
        self.plugin = None if NO_SERVICE else plugin_handler

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        if self.plugin is None:
            return data
        if VARIANT == "toggled":
            if IDLE_HEADER in request_headers(data):
                return data
            result: dict[str, Any] = await self.plugin.async_pre_call_hook(user_api_key_dict, cache, data, call_type)
            return result
        service = await self.plugin.service()
        if VARIANT == "ping":
            await _ping(service)
        elif VARIANT == "ping-nowait":
            _ping_unawaited(service)
        elif VARIANT in ("admit", "admit-ping", "full"):
            key = caller_key(user_api_key_dict)
            await service.gate.admit(data, headers=request_headers(data), key=key, call_type=call_type)
        return data

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if self.plugin is None:
            return
        if VARIANT in ("full", "toggled"):  # idle requests carry no ticket: nothing to settle
            await self.plugin.async_log_success_event(kwargs, response_obj, start_time, end_time)
            return
        service = self.plugin._service
        if VARIANT != "admit-ping" or service is None or not isinstance(kwargs, Mapping):
            return
        ticket = service.gate.open(find_ticket([kwargs.get("litellm_params"), kwargs]))
        if ticket is not None:
            Usage(*(usage_of(kwargs, response_obj) or (ticket.estimate, 0)), call_details(kwargs))
            await _ping(service)


handler = VariantHandler()

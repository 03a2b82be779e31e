"""The hooks' own cost, in process: CPU microseconds per request of the pre-call and success hooks.

Drives `SolarisHandler.async_pre_call_hook` and `async_log_success_event` directly with the
payloads LiteLLM 1.108 hands them (a LibreChat-like chat: system prompt, a few turns of history,
a new question each time), against the real Redis, with no HTTP and no upstream. CPU time is
`time.process_time` summed over the hook calls only (building payloads is not counted). Next to
it, in the same run and the same way: two plain Redis round trips (PING) — the floor for any
plugin that reserves before and debits after over the network — through redis-py's pool and
through the store's pipelined channel. It runs twice: with the request path on the pipelined
channel (the default) and on redis-py's pool (`SOLARIS_REDIS_PIPELINE=false`). On the channel it
then runs the hooks once more with every script answered by the reply Redis gave its first call,
no I/O ("replayed"): the hooks' own Python alone, a figure that moves by a few µs between runs
where the real one moves by tens, for measuring changes to that Python.

    .venv/bin/python bench/bench_hooks.py [--requests 5000] [--users 100] [--loop uvloop|asyncio]

With `--cold-requests N` (300 by default) it also measures the hooks, their replayed Python and two
PINGs with the CPU caches evicted before every call (`CacheEvictor`): inside the proxy ≈ 20 ms of
LiteLLM's work runs between two hook calls, so the hooks always start cold there, and a cold call
costs several times a warm one.

Goal (issue 3): ≤ 250 µs CPU per request, under 3% of the ≈ 9 ms the proxy itself spends.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import uvloop  # noqa: E402

from solaris_tokens.counters.channel import RedisChannel  # noqa: E402
from solaris_tokens.counters.connect import async_client  # noqa: E402
from solaris_tokens.proxy.handler import SolarisHandler  # noqa: E402
from solaris_tokens.proxy.service import ProxyService  # noqa: E402
from solaris_tokens.runtime import Runtime, build_runtime  # noqa: E402
from tests.proxy.payloads import chat_request, master_key, success_kwargs  # noqa: E402
from tests.support import REAL_REDIS_URL, real_redis_settings  # noqa: E402

SYSTEM = (
    "Você é a IA SOLARIS, uma assistente prestativa. Responda em português do Brasil, de forma clara, "
    "citando as fontes quando possível e pedindo esclarecimentos quando a pergunta for ambígua."
)
HISTORY = [
    ("user", "Preciso escrever uma função em Python que leia um CSV de vendas e some o total por mês."),
    (
        "assistant",
        "Claro! Você pode usar o módulo csv da biblioteca padrão: abra o arquivo, percorra as linhas com "
        "csv.DictReader, converta a data com datetime.strptime e acumule os valores num dicionário cuja "
        "chave é (ano, mês). No final, ordene as chaves e imprima cada total formatado com duas casas.",
    ),
    ("user", "E se o arquivo tiver milhões de linhas? Fica lento?"),
    (
        "assistant",
        "Para milhões de linhas o csv continua viável, pois lê em streaming. Se precisar de mais velocidade, "
        "o pandas com read_csv(chunksize=...) ou o polars com scan_csv processam em lotes e usam vários "
        "núcleos. Meça antes de otimizar: muitas vezes o gargalo é o disco, não o parse.",
    ),
]


class ReplayChannel:
    """Answers each script with the reply the real channel gave its first call: no I/O at all."""

    def __init__(self, real: RedisChannel) -> None:
        self.real = real
        self.replies: dict[str, Any] = {}

    async def evalsha(self, sha: Any, source: Any, keys: list[str], args: list[Any]) -> Any:
        if sha not in self.replies:
            self.replies[sha] = await self.real.evalsha(sha, source, keys, args)
        return self.replies[sha]


class CacheEvictor:
    """Walks, in Python, a shuffled list of integers spread over `size` × 36 bytes: between two hook
    calls it leaves the CPU caches and TLBs about as cold as LiteLLM's own work (≈ 20 ms per request)
    leaves them in a proxy, which is where the hooks really run. It allocates nothing while it walks,
    so no memory goes back to the system (and no page fault follows) because of it."""

    def __init__(self, size: int) -> None:
        items = list(range(size))
        random.Random(1).shuffle(items)
        # Tuples of integers, which the garbage collector stops tracking: the evictor adds no work
        # to collections that happen in the measured hooks. Every 7th item: the walk touches
        # objects all over the list's memory.
        self.items = tuple(items)
        self.walk = self.items[::7]
        self.last = 0
        # A collection now untracks both tuples; left tracked, the first full collection in a
        # measured pass walked their 2.3 M items (≈ 7 ms charged to one drain, seen in session 10).
        gc.collect()

    def __call__(self) -> None:
        total = 0
        for item in self.walk:
            total ^= item
        self.last = total


async def hook_cpu(
    handler: SolarisHandler,
    emails: list[str],
    requests: int,
    first: int,
    *,
    between: Callable[[], None] | None = None,
    pre_walls: list[float] | None = None,
    batch: int = 1,
) -> tuple[float, float]:
    """CPU seconds of the pre-call and the success hooks over requests `first`, `first` + 1, ...
    (each a new turn, so its new message is tokenized, never found memoized); building the
    payloads and `between` (run before each hook call and each batch) are not counted. The
    success hook only queues its settle: every `batch` requests, and after the last, the queued
    settles run (`handler.drain()`, as the batch window's end runs them in a proxy), counted with
    the success hook; `batch=0` leaves them queued (the caller drains). The pre-call hook's wall
    times are appended to `pre_walls` when given."""
    key = master_key()
    pre = post = 0.0
    for turn in range(first, first + requests):
        data = librechat_request(emails[turn % len(emails)], turn)
        if between is not None:
            between()
        c0, w0 = time.process_time(), time.perf_counter()
        await handler.async_pre_call_hook(key, None, data, "acompletion")
        pre += time.process_time() - c0
        if pre_walls is not None:
            pre_walls.append(time.perf_counter() - w0)
        kwargs = success_kwargs(data, 420, 180)
        if between is not None:
            between()
        c0 = time.process_time()
        await handler.async_log_success_event(kwargs, None, None, None)
        post += time.process_time() - c0
        if batch and ((turn - first + 1) % batch == 0 or turn == first + requests - 1):
            post += await drain_cpu(handler, between=between)
    return pre, post


async def drain_cpu(handler: SolarisHandler, *, between: Callable[[], None] | None = None) -> float:
    """CPU seconds of running the queued settles now (`between` runs first, not counted)."""
    if between is not None:
        between()
    c0 = time.process_time()
    await handler.drain()
    return time.process_time() - c0


async def pings_cpu(channel: RedisChannel, requests: int, *, between: Callable[[], None]) -> float:
    """CPU seconds of two channel PINGs per request, `between` run before each (not counted)."""
    cpu = 0.0
    for _ in range(2 * requests):
        between()
        c0 = time.process_time()
        await channel.call("PING")
        cpu += time.process_time() - c0
    return cpu


async def python_and_cold(
    runtime: Runtime, handler: SolarisHandler, emails: list[str], first: int, requests: int, cold: int, evict_items: int
) -> dict[str, float]:
    """The hooks' own Python (replayed replies, no I/O), then the hooks, their Python and two PINGs
    with the caches evicted before every call (`cold` requests of each). Requests are numbered
    from `first` on, every pass with turns of its own."""
    channel = runtime.store.channel
    assert channel is not None
    figures: dict[str, float] = {}
    runtime.store.channel = ReplayChannel(channel)  # type: ignore[assignment]
    try:
        await hook_cpu(handler, emails, 1, first)  # the first call of each script goes to Redis
        first += 1
        figures["replayed_us"] = sum(await hook_cpu(handler, emails, requests, first)) / requests * 1e6
        first += requests
        # Built only now: with its 2 M integers alive, the warm replayed figure measured 119–126 µs
        # against 50–57 in runs minutes apart (a bigger heap alone slows the hooks; not explained).
        evict = CacheEvictor(evict_items)
        figures["cold_replayed_us"] = sum(await hook_cpu(handler, emails, cold, first, between=evict)) / cold * 1e6
        first += cold
    finally:
        runtime.store.channel = channel
    figures["cold_hooks_us"] = sum(await hook_cpu(handler, emails, cold, first, between=evict)) / cold * 1e6
    first += cold
    for size in COLD_BATCHES:
        cpu = sum(await hook_cpu(handler, emails, cold, first, between=evict, batch=size))
        figures[f"cold_hooks_batch{size}_us"] = cpu / cold * 1e6
        first += cold
    figures["cold_pings_us"] = await pings_cpu(channel, cold, between=evict) / cold * 1e6
    return figures


# Settles per batch in the cold measure of batched settling: ≈ 25 requests/s per proxy for the
# 200 ms window (four proxies sharing a CPU) gives 5; one proxy alone, ≈ 90 requests/s, 18.
COLD_BATCHES = (5, 18)
# Settles per batch in the warm measure (the headline figure): one proxy alone.
WARM_BATCH = 18


def librechat_request(email: str, turn: int) -> dict[str, Any]:
    """What LibreChat sends on a later turn of a conversation, as LiteLLM's pre-call hook sees it."""
    data = chat_request(email, content=f"Mostre um exemplo com polars, versão {turn}.")
    data["messages"] = [
        {"role": "system", "content": SYSTEM},
        *({"role": role, "content": text} for role, text in HISTORY),
        data["messages"][0],
    ]
    data["user"] = uuid.uuid4().hex[:24]  # LibreChat's own user id: not an email, ignored
    data["temperature"] = 0.7
    return data


async def run(
    requests: int, users: int, *, pipeline: bool, cold: int = 300, evict_items: int = 2_000_000
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    settings = real_redis_settings(tmp, "bench", redis_warm_connections=4, redis_pipeline=pipeline)
    # Settles run when hook_cpu drains them, never at a window's end in the middle of a measure.
    settings.settle_batch_seconds, settings.settle_batch_max = 3600.0, 1_000_000
    runtime = build_runtime(settings, redis=async_client(REAL_REDIS_URL, settings))
    channel = runtime.store.channel or RedisChannel.for_client(runtime.redis, timeout=1.0)
    assert channel is not None
    service = await ProxyService.start(runtime=runtime, background=False)
    handler = SolarisHandler(service=service)
    emails = [f"usuario{i}@example.com" for i in range(users)]
    key = master_key()
    try:
        for i, email in enumerate(emails):  # first requests provision users (ledger work, not measured)
            data = librechat_request(email, i)
            await handler.async_pre_call_hook(key, None, data, "acompletion")
            await handler.async_log_success_event(success_kwargs(data, 300, 150), None, None, None)
        await handler.drain()

        pre_cpu = post_cpu = ping_cpu = channel_ping_cpu = 0.0
        pre_wall: list[float] = []
        for i in range(requests):
            pre, post = await hook_cpu(handler, emails, 1, users + i, pre_walls=pre_wall, batch=0)
            if (i + 1) % WARM_BATCH == 0 or i == requests - 1:
                post += await drain_cpu(handler)
            c3 = time.process_time()
            await runtime.redis.ping()
            await runtime.redis.ping()
            c4 = time.process_time()
            await channel.call("PING")
            await channel.call("PING")
            c5 = time.process_time()
            pre_cpu += pre
            post_cpu += post
            ping_cpu += c4 - c3
            channel_ping_cpu += c5 - c4

        extra: dict[str, float] = {}
        if runtime.store.channel is not None:
            extra = await python_and_cold(runtime, handler, emails, users + requests, requests, cold, evict_items)
        await runtime.flusher.drain()  # written to SQL by the background flusher in the proxy; not counted
        return {
            **extra,
            "pre_call_us": pre_cpu / requests * 1e6,
            "success_us": post_cpu / requests * 1e6,
            "hooks_us": (pre_cpu + post_cpu) / requests * 1e6,
            "two_round_trips_us": ping_cpu / requests * 1e6,
            "two_channel_round_trips_us": channel_ping_cpu / requests * 1e6,
            "pre_call_wall_p50_us": statistics.median(pre_wall) * 1e6,
        }
    finally:
        names = [k async for k in runtime.redis.scan_iter(match=f"{settings.key_prefix}:*", count=1000)]
        if names:
            await runtime.redis.delete(*names)
        await channel.aclose()
        await service.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--cold-requests", type=int, default=300, help="requests of each cold measure")
    parser.add_argument("--evict-items", type=int, default=2_000_000, help="size of the cache evictor's list")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the proxy runs on uvloop")
    args = parser.parse_args()
    proxy_cpu_us = 9000
    print(f"requests: {args.requests} over {args.users} users (real Redis {REAL_REDIS_URL}), {args.loop} loop")
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    for label, pipeline in (("request path on the pipelined channel (default)", True), ("redis-py pool only", False)):
        figures = runner(
            run(args.requests, args.users, pipeline=pipeline, cold=args.cold_requests, evict_items=args.evict_items)
        )
        print(f"-- {label}")
        print(f"pre-call hook          {figures['pre_call_us']:8.1f} µs CPU/request")
        print(f"success hook           {figures['success_us']:8.1f} µs CPU/request")
        batched = f"{WARM_BATCH} settles/batch"
        print(f"hooks, total           {figures['hooks_us']:8.1f} µs CPU/request  (goal ≤ 250; {batched})")
        print(f"2 PINGs, redis-py pool {figures['two_round_trips_us']:8.1f} µs CPU (same run)")
        print(f"2 PINGs, channel       {figures['two_channel_round_trips_us']:8.1f} µs CPU (same run)")
        if "replayed_us" in figures:
            print(f"hooks, replayed        {figures['replayed_us']:8.1f} µs CPU/request  (the hooks' Python, no I/O)")
            print(f"-- caches evicted before every call ({args.cold_requests} requests), as in a busy proxy")
            print(f"hooks, cold            {figures['cold_hooks_us']:8.1f} µs CPU/request  (one settle per batch)")
            for size in COLD_BATCHES:
                print(f"hooks, cold, batch {size:<3} {figures[f'cold_hooks_batch{size}_us']:8.1f} µs CPU/request")
            print(f"hooks, cold, replayed  {figures['cold_replayed_us']:8.1f} µs CPU/request  (their Python, no I/O)")
            print(f"2 PINGs, channel, cold {figures['cold_pings_us']:8.1f} µs CPU")
        print(f"hooks ÷ 2 pool PINGs   {figures['hooks_us'] / figures['two_round_trips_us']:8.2f} ×")
        print(f"share of ≈9 ms proxy CPU {figures['hooks_us'] / proxy_cpu_us:6.1%}  (goal < 3%)")
        print(f"pre-call wall p50      {figures['pre_call_wall_p50_us']:8.1f} µs")


if __name__ == "__main__":
    main()

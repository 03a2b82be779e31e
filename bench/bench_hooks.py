"""The hooks' own cost, in process: CPU microseconds per request of the pre-call and success hooks.

Drives `SolarisHandler.async_pre_call_hook` and `async_log_success_event` directly with the
payloads LiteLLM 1.108 hands them (a LibreChat-like chat: system prompt, a few turns of history,
a new question each time), against the real Redis, with no HTTP and no upstream. CPU time is
`time.process_time` summed over the hook calls only (building payloads is not counted). Next to
it, in the same run and the same way: two plain Redis round trips (PING) — the floor for any
plugin that reserves before and debits after over the network — through redis-py's pool and
through the store's pipelined channel. It runs twice: with the request path on the pipelined
channel (the default) and on redis-py's pool (`SOLARIS_REDIS_PIPELINE=false`).

    .venv/bin/python bench/bench_hooks.py [--requests 5000] [--users 100] [--loop uvloop|asyncio]

Goal (issue 3): ≤ 250 µs CPU per request, under 3% of the ≈ 9 ms the proxy itself spends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
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
from solaris_tokens.runtime import build_runtime  # noqa: E402
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


async def run(requests: int, users: int, *, pipeline: bool) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    settings = real_redis_settings(tmp, "bench", redis_warm_connections=4, redis_pipeline=pipeline)
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

        pre_cpu = post_cpu = ping_cpu = channel_ping_cpu = 0.0
        pre_wall: list[float] = []
        for i in range(requests):
            data = librechat_request(emails[i % users], users + i)
            c0, w0 = time.process_time(), time.perf_counter()
            await handler.async_pre_call_hook(key, None, data, "acompletion")
            c1, w1 = time.process_time(), time.perf_counter()
            kwargs = success_kwargs(data, 420, 180)
            c2 = time.process_time()
            await handler.async_log_success_event(kwargs, None, None, None)
            c3 = time.process_time()
            await runtime.redis.ping()
            await runtime.redis.ping()
            c4 = time.process_time()
            await channel.call("PING")
            await channel.call("PING")
            c5 = time.process_time()
            pre_cpu += c1 - c0
            post_cpu += c3 - c2
            ping_cpu += c4 - c3
            channel_ping_cpu += c5 - c4
            pre_wall.append(w1 - w0)

        await runtime.flusher.drain()  # written to SQL by the background flusher in the proxy; not counted
        return {
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
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the proxy runs on uvloop")
    args = parser.parse_args()
    proxy_cpu_us = 9000
    print(f"requests: {args.requests} over {args.users} users (real Redis {REAL_REDIS_URL}), {args.loop} loop")
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    for label, pipeline in (("request path on the pipelined channel (default)", True), ("redis-py pool only", False)):
        figures = runner(run(args.requests, args.users, pipeline=pipeline))
        print(f"-- {label}")
        print(f"pre-call hook          {figures['pre_call_us']:8.1f} µs CPU/request")
        print(f"success hook           {figures['success_us']:8.1f} µs CPU/request")
        print(f"hooks, total           {figures['hooks_us']:8.1f} µs CPU/request  (goal ≤ 250)")
        print(f"2 PINGs, redis-py pool {figures['two_round_trips_us']:8.1f} µs CPU (same run)")
        print(f"2 PINGs, channel       {figures['two_channel_round_trips_us']:8.1f} µs CPU (same run)")
        print(f"hooks ÷ 2 pool PINGs   {figures['hooks_us'] / figures['two_round_trips_us']:8.2f} ×")
        print(f"share of ≈9 ms proxy CPU {figures['hooks_us'] / proxy_cpu_us:6.1%}  (goal < 3%)")
        print(f"pre-call wall p50      {figures['pre_call_wall_p50_us']:8.1f} µs")


if __name__ == "__main__":
    main()

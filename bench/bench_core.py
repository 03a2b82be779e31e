"""Quota core benchmark, on the real Redis and PostgreSQL of this machine, in one run.

1. reserve+settle pairs per second in one process (the request path on the store's pipelined
   channel, as in the proxy), side by side with
   - the practical ceiling: two raw redis-py EVALSHA calls of a trivial script per pair;
   - the same two trivial EVALSHA calls over the pipelined channel;
   - the naive approach: GET the counters, compare in Python, INCRBY (not atomic: shown for cost only).
2. Ledger flush rows per second (Redis stream → PostgreSQL, through LedgerFlusher) side by side
   with a plain COPY of the same rows into a scratch table.

Usage: .venv/bin/python bench/bench_core.py [--pairs 20000] [--concurrency 64] [--rows 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg
from redis.asyncio import Redis

from solaris_tokens.counters.channel import RedisChannel
from solaris_tokens.counters.connect import async_client
from solaris_tokens.domain import CallDetails, Usage
from solaris_tokens.ledger.database import make_engine, upgrade
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
CEILING = "raw EVALSHA x2, redis-py (ceiling)"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def timed_pairs(pair: Callable[[int], Awaitable[None]], total: int, concurrency: int) -> float:
    """Run `total` pairs with `concurrency` in flight; returns pairs per second."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await pair(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def bench_pairs(rt: Runtime, raw: Redis, total: int, concurrency: int, users: int) -> dict[str, float]:
    emails = [f"bench{i}@x.com" for i in range(users)]
    for email in emails:
        await rt.quota.ensure_loaded(email)
        await rt.quota.set_limit(email, 10**9, actor="bench")

    async def ours(i: int) -> None:
        email = emails[i % users]
        d = await rt.quota.authorize(email, 500)
        await rt.quota.settle(email, d.reservation_id, Usage(300, 150, CallDetails(model="m")))

    trivial = raw.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    prefix = rt.settings.key_prefix

    async def ceiling(i: int) -> None:
        key = f"{prefix}:raw:{i % users}"
        await trivial(keys=[key], args=[1])
        await trivial(keys=[key], args=[1])

    channel = RedisChannel.for_client(raw, timeout=5.0)
    assert channel is not None
    await raw.script_load(trivial.script)

    async def channel_ceiling(i: int) -> None:
        key = f"{prefix}:raw:{i % users}"
        await channel.evalsha(trivial.sha, trivial.script, [key], [1])
        await channel.evalsha(trivial.sha, trivial.script, [key], [1])

    async def naive(i: int) -> None:
        key = f"{prefix}:naive:{i % users}"
        used = int(await raw.get(key) or 0)
        if used + 500 <= 10**9:
            await raw.incrby(key, 450)

    results: dict[str, float] = {}
    for name, fn in (
        (CEILING, ceiling),
        ("raw EVALSHA x2, pipelined channel", channel_ceiling),
        ("naive GET+INCRBY (redis-py)", naive),
        ("solaris reserve+settle", ours),
    ):
        await timed_pairs(fn, min(2000, total), concurrency)  # warm-up
        results[name] = await timed_pairs(fn, total, concurrency)
    await channel.aclose()
    return results


async def bench_flush(rt: Runtime, pg_url: str, rows: int) -> dict[str, float]:
    users = 200
    emails = [f"flush{i}@x.com" for i in range(users)]
    for email in emails:
        await rt.quota.ensure_loaded(email)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    payload = json.dumps({"call_id": "c", "model": "gpt-4o-mini", "started_ms": now_ms, "latency_ms": 900})
    fields_list = []
    for i in range(rows):
        email = emails[i % users]
        fields_list.append(
            (
                rt.store.keys.user(email).stream,
                {
                    "type": "usage",
                    "email": email,
                    "rid": uuid.uuid4().hex,
                    "period": "2026-11",
                    "prompt": 300,
                    "completion": 150,
                    "monthly": 450,
                    "additional": 0,
                    "outcome": "settled",
                    "at": now_ms,
                    "payload": payload,
                },
            )
        )
    for start in range(0, rows, 5000):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for stream, fields in fields_list[start : start + 5000]:
                pipe.xadd(stream, fields)
            await pipe.execute()
    start = time.perf_counter()
    written = await rt.flusher.drain()
    ours = written / (time.perf_counter() - start)
    assert written == rows, (written, rows)

    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute("CREATE TEMP TABLE copy_target (LIKE usage_entries INCLUDING DEFAULTS) ON COMMIT DROP")
        start = time.perf_counter()
        with conn.cursor().copy(
            "COPY copy_target (id, reservation_id, user_id, call_id, model, prompt_tokens, completion_tokens,"
            " monthly_tokens, additional_tokens, period, outcome, started_at, settled_at, latency_ms) FROM STDIN"
        ) as copy:
            moment = datetime.now(UTC)
            for i, (_, f) in enumerate(fields_list):
                copy.write_row(
                    (
                        i + 1,
                        f["rid"],
                        1,
                        "c",
                        "gpt-4o-mini",
                        300,
                        150,
                        450,
                        0,
                        "2026-11",
                        "settled",
                        moment,
                        moment,
                        900,
                    )
                )
        conn.commit()
        plain = rows / (time.perf_counter() - start)
    return {"solaris flusher (stream → PostgreSQL)": ours, "plain COPY of the same rows": plain}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=Settings().flush_batch_size, help="ledger flush batch")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop (the LiteLLM proxy runs on uvloop under uvicorn)",
    )
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    db = f"solaris_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    pg_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=REDIS_URL, key_prefix=prefix, flush_batch_size=args.batch)
    engine = make_engine(pg_url)
    upgrade(engine)
    rt = build_runtime(settings, engine=engine, migrate=False)
    raw = async_client(REDIS_URL, settings)
    try:
        for concurrency in (1, args.concurrency):
            pairs = await bench_pairs(
                rt, raw, args.pairs if concurrency > 1 else args.pairs // 4, concurrency, args.users
            )
            ceiling = pairs[CEILING]
            print(f"\nreserve+settle pairs/s, one process, {concurrency} in flight ({args.users} users):")
            for name, rate in pairs.items():
                print(f"  {name:36s} {rate:10,.0f} pairs/s   {rate / ceiling:5.2f}x ceiling")
        await rt.flusher.drain()
        flush = await bench_flush(rt, pg_url, args.rows)
        print(f"\nledger flush, {args.rows:,} usage rows:")
        for name, rate in flush.items():
            print(f"  {name:40s} {rate:10,.0f} rows/s")
    finally:
        keys = [k async for k in raw.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await raw.delete(*keys[i : i + 1000])
        await raw.aclose()
        await rt.aclose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    arguments = parse_args()
    print(f"event loop: {arguments.loop}")
    if arguments.loop == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))

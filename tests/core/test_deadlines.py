"""Store deadlines time Redis, not the proxy's own busy event loop.

A proxy whose loop is busy past a deadline (a burst of cold requests on a loaded CPU) must not
answer 503 for calls Redis answered in time; a Redis that does not answer must still fail. Each
scenario runs on asyncio's loop and on uvloop (the proxy's loop under uvicorn), which order
timers and socket reads differently. The loop is blocked at every early point of a call: before
its command is written, after, and inside another connection's socket callback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from redis.asyncio import Redis

from solaris_tokens.counters.connect import async_client
from solaris_tokens.counters.deadline import store_deadline
from solaris_tokens.counters.redis import RedisCounterStore
from solaris_tokens.keys import KeyBuilder
from solaris_tokens.settings import Settings
from tests.core.scripted_redis import ScriptedServer, channel_for

DEADLINE = 0.05
BLOCKED = 3 * DEADLINE  # far longer than a local Redis takes to answer
YIELDS = range(6)  # how many loop turns the call gets before the loop blocks

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop_name: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())


class Blocker(asyncio.Protocol):
    """A connection whose data callback blocks the loop: busy work inside the socket-reading phase."""

    def data_received(self, data: bytes) -> None:
        time.sleep(BLOCKED)


async def outcomes(call: Callable[[], Awaitable[Any]]) -> list[str]:
    """Start `call`, let it run `n` loop turns, block the loop past the deadline (directly, then
    from a socket callback), and collect what each call ended with."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    await loop.connect_accepted_socket(Blocker, theirs)
    results = []
    try:
        for in_callback in (False, True):
            for n in YIELDS:
                pending = asyncio.ensure_future(call())
                for _ in range(n):
                    await asyncio.sleep(0)
                if in_callback:
                    ours.send(b"x")
                else:
                    time.sleep(BLOCKED)
                try:
                    results.append(repr(await pending))
                except Exception as exc:
                    results.append(f"{'callback' if in_callback else 'direct'} block after {n} turns: {exc!r}")
    finally:
        ours.close()
    return results


@pytest.mark.real
@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_busy_loop_does_not_fail_channel_calls_redis_answered_in_time(loop_name: str, real_url: str) -> None:
    async def scenario() -> None:
        channel = channel_for(real_url, timeout=DEADLINE)
        try:
            assert await channel.call("ECHO", "warm") == "warm"
            assert await outcomes(lambda: channel.call("ECHO", "in time")) == ["'in time'"] * 2 * len(YIELDS)
        finally:
            await channel.aclose()

    run_on(loop_name, scenario)


@pytest.mark.real
@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_busy_loop_does_not_fail_store_calls_redis_answered_in_time(loop_name: str, real_url: str) -> None:
    """The redis-py path (`RedisCounterStore._call`): the first requests of a process, before the
    scripts are loaded, and every call off the request path."""

    async def scenario() -> None:
        client = async_client(real_url, Settings())
        store = RedisCounterStore(client, KeyBuilder("tdeadline"), timeout_seconds=DEADLINE)
        try:
            assert await store.ping()
            answered = await outcomes(lambda: store._call(lambda: client.echo("in time")))
            assert answered == ["'in time'"] * 2 * len(YIELDS)
        finally:
            await client.aclose()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_server_that_does_not_answer_still_fails_at_its_deadline(loop_name: str) -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        url = f"redis://127.0.0.1:{tcp.sockets[0].getsockname()[1]}/0"
        channel = channel_for(url, timeout=DEADLINE)
        client = Redis.from_url(url, decode_responses=True, protocol=2)  # RESP2: the scripted server's
        try:
            assert await channel.call("ECHO", "warm") == "warm"
            assert await client.echo("warm") == "warm"
            server.answering.clear()
            with pytest.raises(TimeoutError):
                await channel.call("ECHO", "never")
            with pytest.raises(TimeoutError):  # the deadline of the store's redis-py calls
                async with store_deadline(DEADLINE):
                    await client.echo("never")
        finally:
            server.answering.set()
            await channel.aclose()
            await client.aclose()
            tcp.close()

    run_on(loop_name, scenario)


@pytest.mark.real
async def test_a_new_store_loads_its_scripts_under_a_set_up_deadline_not_its_first_calls(real_url: str) -> None:
    """A new store's first call loads the scripts (and opens its first connection): on a loaded
    machine that outlasted a request's deadline, and a CLI command failed with 'Redis did not
    answer in time'. A Redis paused for 6 deadlines delays the load; the call still succeeds."""
    client = async_client(real_url, Settings())
    store = RedisCounterStore(client, KeyBuilder("tdeadline"), timeout_seconds=DEADLINE)
    pauser = async_client(real_url, Settings())
    try:
        await pauser.execute_command("CLIENT", "PAUSE", int(6 * DEADLINE * 1000), "ALL")
        assert await store._call(lambda: client.echo("after the load")) == "after the load"
    finally:
        await pauser.execute_command("CLIENT", "UNPAUSE")
        await pauser.aclose()
        await client.aclose()

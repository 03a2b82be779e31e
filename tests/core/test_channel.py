"""The pipelined connection of the request path: order, errors, deadlines, losses, endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest
from redis import exceptions as redis_errors

from solaris_tokens.counters.channel import RedisChannel
from solaris_tokens.counters.connect import async_client
from solaris_tokens.settings import Settings
from tests.core.scripted_redis import ScriptedServer, channel_for


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[ScriptedServer, str]]:
    server = ScriptedServer()
    tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    yield server, f"redis://127.0.0.1:{port}/0"
    tcp.close()


async def silence_and_expire(server: ScriptedServer, channel: RedisChannel) -> None:
    """One answered call, then a silent server: the next call fails at its deadline."""
    assert await channel.call("ECHO", "warm") == "warm"
    server.answering.clear()
    with pytest.raises(TimeoutError):
        await channel.call("ECHO", "late")


async def test_a_thousand_concurrent_calls_each_get_their_own_reply(real_url: str) -> None:
    channel = channel_for(real_url)
    key = f"tchan:{uuid.uuid4().hex}"
    try:
        echoes = await asyncio.gather(*(channel.call("ECHO", f"m{i}") for i in range(1000)))
        counts = await asyncio.gather(*(channel.call("INCR", key) for _ in range(1000)))
        assert echoes == [f"m{i}" for i in range(1000)]
        assert sorted(counts) == list(range(1, 1001))
    finally:
        await channel.call("DEL", key)
        await channel.aclose()


async def test_an_error_reply_is_raised_and_the_connection_keeps_serving(real_url: str) -> None:
    channel = channel_for(real_url)
    try:
        with pytest.raises(redis_errors.ResponseError):
            await channel.call("NO-SUCH-COMMAND")
        with pytest.raises(redis_errors.DataError):
            await channel.call("ECHO", None)
        assert await channel.call("ECHO", "still here") == "still here"
    finally:
        await channel.aclose()


async def test_evalsha_loads_a_script_the_server_does_not_know(real_url: str) -> None:
    source = f"-- {uuid.uuid4().hex}\nreturn ARGV[1] + 1"
    sha = hashlib.sha1(source.encode()).hexdigest()
    channel = channel_for(real_url)
    try:
        with pytest.raises(redis_errors.NoScriptError):
            await channel.call("EVALSHA", sha, 0, 1)
        assert await channel.evalsha(sha, source, [], [41]) == 42
    finally:
        await channel.aclose()


async def test_the_database_number_of_the_url_is_selected(real_url: str) -> None:
    url = real_url.rsplit("/", 1)[0] + "/1"
    channel = channel_for(url)
    key = f"tchan:{uuid.uuid4().hex}"
    plain = async_client(url, Settings())
    try:
        await channel.call("SET", key, "db1")
        assert await plain.get(key) == "db1"
    finally:
        await plain.delete(key)
        await plain.aclose()
        await channel.aclose()


async def test_password_and_username_are_sent_before_any_command(
    scripted: tuple[ScriptedServer, str],
) -> None:
    server, url = scripted
    channel = channel_for(url.replace("redis://", "redis://ops:s3cret@").replace("/0", "/3"))
    try:
        assert await channel.call("ECHO", "hi") == "hi"
        assert server.commands[:3] == [["AUTH", "ops", "s3cret"], ["SELECT", "3"], ["ECHO", "hi"]]
    finally:
        await channel.aclose()


async def test_a_silent_server_gives_timeouts_and_a_late_reply_goes_to_nobody_else(
    scripted: tuple[ScriptedServer, str],
) -> None:
    server, url = scripted
    channel = channel_for(url, timeout=0.05)
    try:
        await silence_and_expire(server, channel)
        server.answering.set()
        # The reply to "late" arrives first and is discarded; this call gets its own.
        assert await channel.call("ECHO", "next") == "next"
        assert server.connections == 1
    finally:
        await channel.aclose()


async def test_a_call_after_an_expiry_keeps_its_own_deadline(scripted: tuple[ScriptedServer, str]) -> None:
    """After the first expiry the timer waits for the dead-link check (7 deadlines later); a new
    call must still fail at its own deadline, not then (that would also drop the link)."""
    server, url = scripted
    channel = channel_for(url, timeout=0.05)
    try:
        await silence_and_expire(server, channel)
        with pytest.raises(TimeoutError):  # builtin TimeoutError: its own deadline, not the dead link
            await channel.call("ECHO", "second")
        server.answering.set()
        assert await channel.call("ECHO", "third") == "third"
        assert server.connections == 1
    finally:
        await channel.aclose()


async def test_callers_waiting_for_a_connection_share_one_attempt(scripted: tuple[ScriptedServer, str]) -> None:
    server, url = scripted
    server.answering.clear()  # the AUTH of the attempt is never answered
    # A deadline long enough for all 50 callers to arrive while the one attempt is still pending.
    channel = channel_for(url.replace("redis://", "redis://:pw@"), timeout=0.5)
    try:
        results = await asyncio.gather(*(channel.call("ECHO", str(i)) for i in range(50)), return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert server.connections == 1
        server.answering.set()
        assert await channel.call("ECHO", "after") == "after"
    finally:
        await channel.aclose()


async def test_a_server_silent_for_many_deadlines_is_dropped_and_reopened(
    scripted: tuple[ScriptedServer, str],
) -> None:
    server, url = scripted
    channel = channel_for(url, timeout=0.02)
    try:
        await silence_and_expire(server, channel)
        await asyncio.sleep(0.3)  # well past 8 deadlines: the link is given up
        server.answering.set()
        assert await channel.call("ECHO", "fresh") == "fresh"
        assert server.connections == 2
    finally:
        await channel.aclose()


async def test_a_closed_connection_fails_the_calls_in_flight_then_reconnects(
    scripted: tuple[ScriptedServer, str],
) -> None:
    server, url = scripted
    channel = channel_for(url)
    try:
        assert await channel.call("ECHO", "a") == "a"
        results = await asyncio.gather(channel.call("HANGUP"), channel.call("ECHO", "b"), return_exceptions=True)
        assert all(isinstance(r, redis_errors.ConnectionError) for r in results), results
        assert await channel.call("ECHO", "c") == "c"
        assert server.connections == 2
    finally:
        await channel.aclose()


async def test_a_unix_socket_url_is_pipelined_too(tmp_path: Path) -> None:
    server = ScriptedServer()
    path = tmp_path / "redis.sock"
    unix = await asyncio.start_unix_server(server.handle, str(path))
    channel = channel_for(f"unix://{path}")
    try:
        assert await channel.call("ECHO", "over unix") == "over unix"
    finally:
        await channel.aclose()
        unix.close()


async def test_an_unreachable_server_raises_a_connection_error() -> None:
    channel = channel_for("redis://127.0.0.1:1/0")
    with pytest.raises(OSError):
        await channel.call("PING")


def test_tls_and_in_process_clients_are_not_pipelined() -> None:
    settings = Settings()
    assert RedisChannel.for_client(async_client("rediss://127.0.0.1:6380/0", settings), timeout=1) is None
    assert RedisChannel.for_client(fakeredis.FakeAsyncRedis(), timeout=1) is None

"""One pipelined Redis connection for the hot path: many calls in flight, replies matched in order.

redis-py's asyncio client takes a pooled connection for every command and sends it with a system
call of its own: about 55 µs of CPU per EVALSHA on the 2-core CI machine, most of a request's cost
in the plugin. Here every reserve, settle and release of the process shares one connection.
Commands issued in the same event-loop turn leave in one write, hiredis parses the replies in
bulk, and one timer keeps the deadline: Redis answers in order and every command carries the same
timeout, so the oldest unanswered command is always the next to expire.

Only plain TCP and Unix-socket connections made by `async_client` are pipelined; TLS and
in-process clients (fakeredis objects) keep using redis-py (`RedisChannel.for_client` says None).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from solaris_tokens.counters.connect import HiredisConnection, HiredisUnixConnection
from solaris_tokens.counters.deadline import after_next_poll, store_deadline

_UNSENT = float("inf")  # the deadline of a command not written yet

# A command unanswered for this many deadlines means the link is dead (a Redis that hangs):
# the connection is dropped and opened again on the next call.
_DEAD_LINK_DEADLINES = 8


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect; taken from a redis-py client's own connection settings."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None


class _Pending:
    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Any], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class _PipelineProtocol(asyncio.Protocol):
    """Writes commands as they come (one write per loop turn) and resolves replies in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader(
            protocolError=redis_errors.InvalidResponse,
            replyError=redis_errors.ResponseError,
            encoding="utf-8",
        )
        self._pending: deque[_Pending] = deque()
        self._expired = 0  # leading entries already failed with TimeoutError, still owed a reply
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while pending:
            try:
                reply = self._reader.gets()
            except (redis_errors.InvalidResponse, UnicodeDecodeError) as exc:
                self._fail(redis_errors.ConnectionError(f"unreadable reply from Redis: {exc}"))
                if self._transport is not None:
                    self._transport.abort()
                return
            if reply is False:
                return
            entry = pending.popleft()
            if self._expired:
                self._expired -= 1
            if not entry.future.done():
                entry.future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    # --- sending ------------------------------------------------------------------------------

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.lost is not None or self._transport is None:
            raise redis_errors.ConnectionError("Redis connection is closed")
        try:
            packed = hiredis.pack_command(args)
        except TypeError as exc:
            raise redis_errors.DataError(str(exc)) from exc
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(packed)
        future = self._loop.create_future()
        self._pending.append(_Pending(future, _UNSENT))
        return future

    def _flush(self) -> None:
        """Write what this loop turn queued; the deadlines start now, when Redis can see them."""
        outgoing, self._outgoing = self._outgoing, []
        transport = self._transport
        if not outgoing or transport is None or self.lost is not None:
            return
        if transport.is_closing():  # closed by the server; connection_lost is on its way
            self._fail(redis_errors.ConnectionError("Redis connection closed"))
            return
        transport.write(b"".join(outgoing))
        deadline = self._loop.time() + self._timeout
        pending = self._pending
        for index in range(len(pending) - len(outgoing), len(pending)):
            pending[index].deadline = deadline
        timer = self._timer
        if timer is None or deadline < timer.when():  # the timer may be set for a dead-link check
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, after_next_poll, self._loop, self._expire)

    # --- deadlines ----------------------------------------------------------------------------

    def _expire(self) -> None:
        """Fail every command past its deadline; drop the link when the oldest is long overdue."""
        self._timer = None
        pending = self._pending
        if not pending:
            return
        now = self._loop.time()
        if now >= pending[0].deadline + self._timeout * (_DEAD_LINK_DEADLINES - 1):
            self._fail(redis_errors.TimeoutError("Redis stopped answering"))
            if self._transport is not None:
                self._transport.abort()
            return
        index = self._expired
        while index < len(pending) and pending[index].deadline <= now:
            future = pending[index].future
            if not future.done():
                future.set_exception(TimeoutError())
            index += 1
        self._expired = index
        if index < len(pending) and pending[index].deadline != _UNSENT:
            when = pending[index].deadline
        else:  # all waiting for late replies: check again when the oldest would mean a dead link
            when = pending[0].deadline + self._timeout * (_DEAD_LINK_DEADLINES - 1)
        if when != _UNSENT:  # else the next flush sets the timer
            self._timer = self._loop.call_at(when, after_next_poll, self._loop, self._expire)

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(exc)
        self._expired = 0
        self._outgoing.clear()

    def close(self) -> None:
        self._fail(redis_errors.ConnectionError("Redis channel closed"))
        if self._transport is not None:
            self._transport.close()


class RedisChannel:
    """Calls Redis over one pipelined connection, opened on first use and again after a loss."""

    def __init__(self, endpoint: Endpoint, *, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._protocol: _PipelineProtocol | None = None
        self._connecting: asyncio.Task[_PipelineProtocol] | None = None

    @classmethod
    def for_client(cls, client: Redis, *, timeout: float) -> RedisChannel | None:
        """A channel to the same server as `client`, or None when it cannot be pipelined."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        db = int(kwargs.get("db") or 0)
        username, password = kwargs.get("username"), kwargs.get("password")
        if pool.connection_class is HiredisConnection:
            host, port = str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))
            endpoint = Endpoint(host=host, port=port, db=db, username=username, password=password)
        elif pool.connection_class is HiredisUnixConnection:
            endpoint = Endpoint(path=str(kwargs["path"]), db=db, username=username, password=password)
        else:
            return None
        return cls(endpoint, timeout=timeout)

    async def call(self, *args: Any) -> Any:
        """Send one command and wait for its reply; error replies are raised as redis-py errors.

        Raises TimeoutError past the deadline, redis ConnectionError when the link is lost.
        """
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        reply = await protocol.send(args)  # the protocol's timer keeps this call's deadline
        if isinstance(reply, redis_errors.ResponseError):
            raise _typed_error(reply)
        return reply

    async def evalsha(self, sha: Any, source: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script again if the server forgot it (restarted)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await self.call("SCRIPT", "LOAD", source)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _connect(self) -> _PipelineProtocol:
        """Wait for the connection attempt in progress, or start one: every caller waiting at the
        same time shares one attempt and its outcome, under one deadline."""
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.ensure_future(self._open())
            task.add_done_callback(_consume_exception)
        async with store_deadline(self.timeout):
            return await asyncio.shield(task)

    async def _open(self) -> _PipelineProtocol:
        loop = asyncio.get_running_loop()
        e = self.endpoint
        async with store_deadline(self.timeout):
            if e.path:
                _, protocol = await loop.create_unix_connection(lambda: _PipelineProtocol(loop, self.timeout), e.path)
            else:
                _, protocol = await loop.create_connection(
                    lambda: _PipelineProtocol(loop, self.timeout), e.host, e.port
                )
            try:
                if e.password:
                    auth = ("AUTH", e.username, e.password) if e.username else ("AUTH", e.password)
                    _raise_error(await protocol.send(auth))
                if e.db:
                    _raise_error(await protocol.send(("SELECT", e.db)))
            except BaseException:
                protocol.close()
                raise
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


def _typed_error(reply: redis_errors.ResponseError) -> redis_errors.RedisError:
    """The redis-py error class redis-py itself would raise for this reply."""
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return redis_errors.AuthenticationError(message)
    if message.startswith("LOADING"):  # a restarted Redis still reading its data
        return redis_errors.BusyLoadingError(message)
    if message.startswith("ERR max number of clients"):
        return redis_errors.ConnectionError(message)
    return reply


def _consume_exception(task: asyncio.Task[Any]) -> None:
    """A failed connection attempt is reported to its waiters; never log it again as unretrieved."""
    if not task.cancelled():
        task.exception()


def _raise_error(reply: Any) -> None:
    if isinstance(reply, redis_errors.ResponseError):
        raise _typed_error(reply)

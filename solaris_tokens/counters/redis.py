"""The counter store on Redis: each operation is one registered Lua script (EVALSHA)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from importlib.resources import files
from typing import Any, NoReturn, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from solaris_tokens.counters.base import (
    LedgerEvent,
    ProfileState,
    RawReserve,
    RawSettle,
    StoredCounters,
)
from solaris_tokens.counters.channel import RedisChannel
from solaris_tokens.counters.deadline import store_deadline
from solaris_tokens.domain import AlertKind, CreditKind, ReleaseOutcome, by_value
from solaris_tokens.errors import InvalidInput, StoreUnavailable
from solaris_tokens.keys import KeyBuilder

T = TypeVar("T")

LEDGER_GROUP = "ledger"
_PERIOD_TTL_S = 100 * 24 * 3600  # a period hash outlives its month, then goes by itself
_ALERT_KINDS = tuple(AlertKind)
_ALERT_BY_VALUE = by_value(AlertKind)
_RELEASE_BY_VALUE = by_value(ReleaseOutcome)
_SCRIPT_LOAD_TIMEOUT_S = 5.0  # like the other calls off the request path


def _script_source(name: str) -> str:
    lua = files("solaris_tokens.counters") / "lua"
    return (lua / "_common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raise_as_store_error(exc: Exception) -> NoReturn:
    """Raise our own error for a driver error: StoreUnavailable, or InvalidInput for a script's
    refusal; any other exception goes on as it is."""
    if isinstance(exc, TimeoutError):
        raise StoreUnavailable("Redis did not answer in time") from exc
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        raise StoreUnavailable(f"Redis unreachable: {exc}") from exc
    if isinstance(exc, redis_errors.ResponseError) and "solaris:" in str(exc):
        raise InvalidInput(str(exc).split("solaris:", 1)[1].strip()) from exc
    raise exc


class RedisCounterStore:
    """CounterStore over a redis-py asyncio client (a real server, or fakeredis in-process).

    With a `channel`, the request path (reserve, settle, release) goes over that one pipelined
    connection instead of redis-py's pool; everything else stays on redis-py.
    """

    def __init__(
        self,
        client: Redis,
        keys: KeyBuilder,
        *,
        timeout_seconds: float = 0.25,
        reservation_retention_ms: int = 7 * 24 * 3600 * 1000,
        channel: RedisChannel | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.channel = channel
        self.timeout_seconds = timeout_seconds
        self._retention_ms = reservation_retention_ms
        self._reserve = client.register_script(_script_source("reserve"))
        self._settle = client.register_script(_script_source("settle"))
        self._release = client.register_script(_script_source("release"))
        self._credit = client.register_script(_script_source("credit"))
        self._load = client.register_script(_script_source("load"))
        self._update = client.register_script(_script_source("update_profile"))
        self._revert = client.register_script(_script_source("revert"))
        self._ensure_group = client.register_script(_script_source("ensure_group"))
        self._groups_ready = False
        self._scripts = [
            self._reserve,
            self._settle,
            self._release,
            self._credit,
            self._load,
            self._update,
            self._revert,
            self._ensure_group,
        ]
        self._scripts_loaded = False

    async def _call(self, work: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Run one store call under a deadline, turning driver errors into our own."""
        try:
            if not self._scripts_loaded:  # set-up, once per store: not held to one call's deadline
                async with store_deadline(max(timeout or 0.0, _SCRIPT_LOAD_TIMEOUT_S)):
                    await self._load_scripts()
            async with store_deadline(timeout if timeout is not None else self.timeout_seconds):
                return await work()
        except Exception as exc:
            _raise_as_store_error(exc)

    async def _hot(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """A request-path script call: over the pipelined channel when there is one (it keeps the
        deadline itself, with one timer for all calls), else through redis-py under `_call`."""
        if self.channel is None or not self._scripts_loaded:
            return await self._call(lambda: script(keys=keys, args=args))
        try:
            return await self.channel.evalsha(script.sha, script.script, keys, args)
        except Exception as exc:
            _raise_as_store_error(exc)

    async def aclose(self) -> None:
        """Close the pipelined channel (the redis-py client belongs to whoever built it)."""
        if self.channel is not None:
            await self.channel.aclose()

    async def _load_scripts(self) -> None:
        """SCRIPT LOAD every script once, so calls are plain EVALSHA (redis-py still falls back to
        loading again after a server restart). The embedded stand-in needs this: it drops a
        connection that recovers from NOSCRIPT. One pipelined round trip, under a set-up deadline
        (the first call of a new store also opens its first connection: on a loaded machine that
        took longer than a request's 0.5 s). The proxy loads them at start; every caller that
        arrives before a load is done runs it too."""
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts:
            pipe.script_load(script.script)
        for script, sha in zip(self._scripts, await pipe.execute(), strict=True):
            script.sha = sha
        self._scripts_loaded = True

    # --- the hot path -------------------------------------------------------------------------

    async def reserve(
        self, email: str, *, now_ms: int, period: str, reservation_id: str, estimate: int, expires_ms: int
    ) -> RawReserve:
        k = self.keys.user(email)
        keys = [k.profile, k.period(period), k.reservations, k.reservation_expiry, k.stream]
        args: list[str | int] = [email, now_ms, period, reservation_id, estimate, expires_ms, _PERIOD_TTL_S]
        reply = await self._hot(self._reserve, keys, args)
        verdict = _text(reply[0])
        if verdict == "no_profile":
            return RawReserve(verdict)
        return RawReserve(
            verdict, int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]), _text(reply[6])
        )

    async def settle(
        self,
        email: str,
        *,
        now_ms: int,
        period: str,
        reservation_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        payload: str,
    ) -> RawSettle:
        k = self.keys.user(email)
        keys = [k.profile, k.period(period), k.reservations, k.reservation_expiry, k.settled, k.stream]
        args: list[str | int] = [
            email,
            now_ms,
            period,
            reservation_id,
            prompt_tokens,
            completion_tokens,
            payload,
            now_ms - self._retention_ms,
            _PERIOD_TTL_S,
        ]
        reply = await self._hot(self._settle, keys, args)
        outcome = _text(reply[0])
        if outcome in ("no_profile", "duplicate"):
            return RawSettle(outcome)
        alerts = tuple(_ALERT_BY_VALUE[_text(a)] for a in reply[6:]) if len(reply) > 6 else ()
        return RawSettle(outcome, int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]), alerts)

    async def release(self, email: str, reservation_id: str) -> tuple[ReleaseOutcome, int]:
        k = self.keys.user(email)
        keys = [k.profile, k.reservations, k.reservation_expiry]
        reply = await self._hot(self._release, keys, [reservation_id])
        return _RELEASE_BY_VALUE[_text(reply[0])], int(reply[1])

    # --- administration -----------------------------------------------------------------------

    async def credit(
        self, email: str, *, key: str, tokens: int, kind: CreditKind, actor: str, reason: str, now_ms: int
    ) -> tuple[str, int]:
        k = self.keys.user(email)
        keys = [k.profile, k.credits, k.stream]
        args: list[str | int] = [email, key, tokens, kind.value, actor, reason, now_ms]
        reply = await self._call(lambda: self._credit(keys=keys, args=args), timeout=5.0)
        return _text(reply[0]), int(reply[1])

    async def load(self, email: str, state: ProfileState, *, period: str, force_seq: int | None = None) -> int:
        """Set counters from `state`; 1 = written, 0 = already loaded, -1 = seq moved (recompute)."""
        k = self.keys.user(email)
        keys = [k.profile, k.period(period), k.credits, k.settled]
        flat: list[str | int] = []
        for name, value in state.profile_fields().items():
            flat += [name, value]
        args: list[str | int] = [
            "if_absent" if force_seq is None else "force",
            force_seq or 0,
            _PERIOD_TTL_S,
            state.period_used,
            state.period_requests,
            ",".join(a.value for a in state.alerts_fired),
            "\n".join(state.credit_keys),
            "\n".join(f"{ms} {rid}" for rid, ms in state.settled_ids),
            *flat,
        ]
        return int(await self._call(lambda: self._load(keys=keys, args=args), timeout=5.0))

    async def update_profile(self, email: str, fields: dict[str, str | int]) -> bool:
        args: list[str | int] = []
        for name, value in fields.items():
            args += [name, value]
        profile = self.keys.user(email).profile
        return bool(await self._call(lambda: self._update(keys=[profile], args=args), timeout=5.0))

    async def counters(self, email: str, period: str) -> StoredCounters | None:
        k = self.keys.user(email)

        async def read() -> tuple[list[Any], dict[Any, Any]]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hmget(
                    k.profile,
                    [
                        "limit",
                        "additional",
                        "reserved",
                        "status",
                        "suspended_until",
                        "suspend_reason",
                        "plan",
                        "warning",
                        "urgent",
                        "seq",
                    ],
                )
                pipe.hgetall(k.period(period))
                profile, period_hash = await pipe.execute()
            return profile, period_hash

        profile, period_hash = await self._call(read, timeout=5.0)
        if profile[0] is None:
            return None
        ph = {_text(a): _text(b) for a, b in period_hash.items()}
        return StoredCounters(
            limit=int(profile[0]),
            additional=int(profile[1] or 0),
            reserved=int(profile[2] or 0),
            used=int(ph.get("used", 0)),
            requests=int(ph.get("requests", 0)),
            status=_text(profile[3] or "active"),
            suspended_until_ms=int(profile[4] or 0),
            suspend_reason=_text(profile[5] or ""),
            plan=_text(profile[6] or ""),
            warning_percent=int(profile[7] or 0),
            urgent_percent=int(profile[8] or 0),
            seq=int(profile[9] or 0),
            alerts_fired=tuple(a for a in _ALERT_KINDS if f"alert:{a.value}" in ph),
        )

    async def forget_user(self, email: str) -> None:
        """Drop every key of a user (tests and operators simulating lost Redis data)."""
        k = self.keys.user(email)

        async def drop() -> None:
            names = [k.profile, k.reservations, k.reservation_expiry, k.settled, k.reverted, k.credits]
            names += [n async for n in self.client.scan_iter(match=k.period_prefix + "*", count=500)]
            await self.client.delete(*names)

        await self._call(drop, timeout=5.0)

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.client.ping))
        except Exception:
            return False

    # --- the ledger streams -------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in self.keys.streams():
            await self._ensure_group(keys=[stream], args=[LEDGER_GROUP])
        self._groups_ready = True

    async def pending_events(self, email: str) -> list[LedgerEvent]:
        """Entries of the user's shard not yet written to the ledger (flushed ones are deleted)."""
        stream = self.keys.user(email).stream

        async def read() -> list[Any]:
            return list(await self.client.xrange(stream, "-", "+") or [])

        entries = await self._call(read, timeout=10.0)
        events = [_event(stream, entry_id, fields) for entry_id, fields in entries]
        return [e for e in events if e.fields.get("email") == email]

    async def read_events(self, consumer: str, count: int, *, claim_idle_ms: int = 30_000) -> list[LedgerEvent]:
        """Entries to write to the ledger: stale ones of dead consumers first, then new ones."""

        async def read_once() -> list[LedgerEvent]:
            await self._ensure_groups()
            streams = self.keys.streams()
            per_stream = max(1, -(-count // len(streams)))  # COUNT applies to each stream
            # 1. entries this consumer took before but did not acknowledge (a failed write)
            out = _entries(
                await self.client.xreadgroup(LEDGER_GROUP, consumer, dict.fromkeys(streams, "0"), per_stream)
            )
            if len(out) >= count:
                return out
            # 2. entries other consumers took and left idle (a crashed proxy or worker)
            async with self.client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xautoclaim(stream, LEDGER_GROUP, consumer, claim_idle_ms, "0-0", count=per_stream)
                claimed = await pipe.execute()
            seen = {(e.stream, e.entry_id) for e in out}
            for stream, reply in zip(streams, claimed, strict=True):
                out += [
                    _event(stream, entry_id, fields)
                    for entry_id, fields in reply[1]
                    if fields and (stream, _text(entry_id)) not in seen
                ]
            if len(out) >= count:
                return out
            # 3. new entries
            out += _entries(
                await self.client.xreadgroup(LEDGER_GROUP, consumer, dict.fromkeys(streams, ">"), per_stream)
            )
            return out

        async def read() -> list[LedgerEvent]:
            try:
                return await read_once()
            except redis_errors.ResponseError:
                if not self._groups_ready:
                    raise
                # NOGROUP: Redis lost its streams and groups (restarted without persistence).
                # Create them again and retry once.
                self._groups_ready = False
                return await read_once()

        return await self._call(read, timeout=10.0)

    async def revert_usage(self, events: list[LedgerEvent], now_ms: int) -> int:
        """Undo usage entries the ledger refused as duplicates; returns how many were undone now."""
        undone = 0
        for event in events:
            f = event.fields
            k = self.keys.user(f["email"])
            keys = [k.profile, k.period(f["period"]), k.reverted]
            args: list[str | int] = [
                f"{event.stream}/{event.entry_id}",
                int(f["monthly"]),
                int(f["additional"]),
                now_ms,
                now_ms - self._retention_ms,
            ]
            undone += int(await self._call(partial(self._revert, keys=keys, args=args), timeout=5.0))
        return undone

    async def ack_events(self, events: list[LedgerEvent]) -> None:
        """Acknowledge and delete entries whose rows are committed to the ledger."""
        if not events:
            return
        by_stream: dict[str, list[str]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event.entry_id)

        async def ack() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xack(stream, LEDGER_GROUP, *ids)
                    pipe.xdel(stream, *ids)
                await pipe.execute()

        await self._call(ack, timeout=10.0)


def _event(stream: str, entry_id: Any, fields: dict[Any, Any]) -> LedgerEvent:
    if isinstance(entry_id, str):  # clients are built with decode_responses=True: no copying needed
        return LedgerEvent(stream, entry_id, fields)
    return LedgerEvent(stream, _text(entry_id), {_text(a): _text(b) for a, b in fields.items()})


def _entries(reply: Any) -> list[LedgerEvent]:
    """Flatten an XREADGROUP reply, skipping entries deleted after they were delivered."""
    out: list[LedgerEvent] = []
    for name, entries in reply or []:
        out += [_event(_text(name), entry_id, fields) for entry_id, fields in entries if fields]
    return out

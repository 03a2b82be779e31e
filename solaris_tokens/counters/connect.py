"""Redis clients: a real server from a URL, or the embedded stand-in (fakeredis) when none is set.

The embedded stand-in is a fakeredis TCP server started inside the first process that needs it
(normally the proxy), so the same Lua scripts run and the CLI of the same working directory can
reach the same data while that process lives. Its address is kept in `state_dir/redis.url`.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.connection import HiredisRespSerializer

from solaris_tokens.settings import Settings

_embedded_lock = threading.Lock()
_embedded_url: str | None = None


class _HiredisPacking:
    """Pack commands with hiredis, as redis-py's synchronous client already does.

    redis-py's asyncio connections always pack in pure Python, one `Encoder.encode` per argument:
    about 55 µs of CPU for one of our script calls (15 arguments), a quarter of a reserve+settle
    pair. hiredis (a dependency of ours) packs the same bytes in C.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class HiredisConnection(_HiredisPacking, Connection):
    """TCP connection packing with hiredis."""


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    """TLS connection packing with hiredis."""


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """Unix-socket connection packing with hiredis."""


_HIREDIS_CLASSES: dict[type, type] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def async_client(url: str, settings: Settings) -> Redis:
    """A client whose pool waits for a free connection instead of failing under load.

    The per-operation deadline (settings.redis_timeout_seconds) is enforced around each store call
    (`RedisCounterStore._call`), so the sockets carry no read timeout of their own: with one, redis-py
    wraps every command in `asyncio.wait_for`, about a fifth of its CPU per call. Connecting and
    waiting for a pooled connection keep a generous backstop.
    """
    backstop = max(2.0, settings.redis_timeout_seconds * 4)
    options = parse_url(url)
    options["connection_class"] = _HIREDIS_CLASSES[options.get("connection_class", Connection)]
    pool = BlockingConnectionPool(
        **options,
        max_connections=settings.redis_max_connections,
        timeout=backstop,
        socket_timeout=None,
        socket_connect_timeout=backstop,
        decode_responses=True,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


def _alive(url: str) -> bool:
    try:
        return bool(SyncRedis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except (redis_errors.RedisError, OSError):
        return False


def embedded_url(settings: Settings) -> str:
    """The address of the embedded stand-in: the running one of this directory, or a new one."""
    global _embedded_url
    with _embedded_lock:
        if _embedded_url is not None:
            return _embedded_url
        marker = settings.state_dir / "redis.url"
        if marker.exists():
            url = marker.read_text().strip()
            if url and _alive(url):
                _embedded_url = url
                return url
        _embedded_url = _start_embedded(marker)
        return _embedded_url


def _start_embedded(marker: Path) -> str:
    from fakeredis import TcpFakeServer
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class ErrorReplyHandler(TCPFakeRequestHandler):  # type: ignore[misc]
        """fakeredis's TCP handler drops the connection after any error reply (the first EVALSHA's
        NOSCRIPT included, so no Lua script ever ran); send the error and keep serving instead."""

        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_response(*args: Any, **kwargs: Any) -> Any:
                try:
                    return read(*args, **kwargs)
                except redis_errors.ResponseError as exc:
                    return exc  # written as a RESP error reply (-NOSCRIPT ..., -ERR ...)

            setattr(self.current_client, "read_response", read_response)  # noqa: B010

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = ErrorReplyHandler
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="solaris-embedded-redis", daemon=True).start()
    url = f"redis://127.0.0.1:{port}/0"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(url + "\n")
    return url


def redis_url(settings: Settings) -> str:
    return settings.redis_url or embedded_url(settings)

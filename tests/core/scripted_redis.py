"""Redis peers for the channel and deadline tests: a scripted RESP server, and a channel to a URL."""

from __future__ import annotations

import asyncio

import hiredis

from solaris_tokens.counters.channel import RedisChannel
from solaris_tokens.counters.connect import async_client
from solaris_tokens.settings import Settings


class ScriptedServer:
    """A tiny RESP server: answers ECHO, AUTH, SELECT; holds replies while `answering` is clear;
    `HANGUP` closes the connection. It records every command it receives."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.answering.set()
        self.connections = 0
        self.commands: list[list[str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = hiredis.Reader(encoding="utf-8")
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    await self.answering.wait()
                    name = command[0].upper()
                    if name == "HANGUP":
                        writer.close()
                        return
                    if name == "ECHO":
                        body = command[1].encode()
                        writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
                    elif name in ("AUTH", "SELECT"):
                        writer.write(b"+OK\r\n")
                    else:
                        writer.write(b"-ERR unknown command\r\n")
                await writer.drain()
        except ConnectionError:
            return


def channel_for(url: str, timeout: float = 2.0) -> RedisChannel:
    channel = RedisChannel.for_client(async_client(url, Settings()), timeout=timeout)
    assert channel is not None
    return channel

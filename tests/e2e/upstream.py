"""A small OpenAI-compatible upstream with fixed, known usage, for end-to-end tests and benchmarks.

Models (the `model` of the request body, as LiteLLM forwards it):
- `fake-ok`: answers REPLY with usage PROMPT_TOKENS / COMPLETION_TOKENS; streams it in chunks,
  ending with the usage chunk when the caller asks for it (`stream_options.include_usage`, which
  LiteLLM's proxy always does);
- `fake-fail`: answers 500;
- `fake-gated`: like `fake-ok`, but holds every request until the gate opens (counts arrivals);
- `fake-slow`: streams SLOW_PARTS chunks 50 ms apart (a client can leave in the middle).

Runs in a thread of the test process (`FakeUpstream`), or as its own process for the benchmarks:
`python -m tests.e2e.upstream --port 9000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
import uuid
from typing import Any

from aiohttp import web

REPLY = "Olá! Sou o modelo de teste."
STREAM_PARTS = ("Olá! ", "Sou o ", "modelo ", "de teste.")
SLOW_PARTS = 40
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.requests: list[dict[str, Any]] = []
        self.arrivals = 0
        self._gate: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        model = str(body.get("model", ""))
        if model.endswith("fake-fail"):
            return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
        if model.endswith("fake-gated"):
            self.arrivals += 1
            assert self._gate is not None
            await self._gate.wait()
        created = int(time.time())
        cid = "chatcmpl-" + uuid.uuid4().hex
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        slow = model.endswith("fake-slow")
        for part in (f"parte {i} " for i in range(SLOW_PARTS)) if slow else STREAM_PARTS:
            await send([{"index": 0, "delta": {"content": part}, "finish_reason": None}])
            if slow:
                await asyncio.sleep(0.05)
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # --- gate (fake-gated) --------------------------------------------------------------------

    def close_gate(self) -> None:
        self._call_soon(lambda: self._gate.clear() if self._gate else None)
        self.arrivals = 0

    def open_gate(self) -> None:
        self._call_soon(lambda: self._gate.set() if self._gate else None)

    def _call_soon(self, fn: Any) -> None:
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    # --- running ------------------------------------------------------------------------------

    async def _serve(self, port: int, ready: threading.Event | None = None) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self.port = port
        if ready is not None:
            ready.set()

    def start(self) -> FakeUpstream:
        """Serve from a daemon thread with its own event loop."""
        ready = threading.Event()
        port = free_port()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve(port, ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    upstream = FakeUpstream()

    async def serve() -> None:
        await upstream._serve(args.port)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

"""Redis goes away and comes back (SPEC F8, X2), with a real proxy and a redis-server of the test's own.

The shared Redis of the machine is never touched: this module starts its own server on a free
port, freezes it (SIGSTOP: a Redis that is slow), kills it (a Redis that is down), and starts an
empty one again (a Redis that lost its data), while the proxy keeps answering.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from solaris_tokens.ledger.models import Rejection, UsageEntry
from solaris_tokens.proxy.rejections import RejectionReason
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.e2e.conftest import eventually, fresh_database, ledger_engine, observer, rows_eventually, solaris_env
from tests.e2e.proxy import ProxyProcess, proxy_config
from tests.e2e.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, FakeUpstream, free_port

pytestmark = pytest.mark.e2e

USED = PROMPT_TOKENS + COMPLETION_TOKENS
QUESTION = [{"role": "user", "content": "Está tudo bem?"}]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class OwnRedis:
    """A throwaway redis-server (no persistence): restarting it loses every key, as a crash would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


@dataclass
class Outage:
    proxy: ProxyProcess
    redis: OwnRedis
    settings: Settings
    engine: Engine


@pytest.fixture(scope="module")
def outage(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    workdir = tmp_path_factory.mktemp("e2e-outage")
    own = OwnRedis(workdir)
    own.start()
    with fresh_database() as database_url:
        settings = Settings(
            key_prefix=f"out{uuid.uuid4().hex[:8]}",
            shards=4,
            redis_url=own.url,
            database_url=database_url,
            state_dir=workdir / "state",
            flush_interval_seconds=0.2,
        )
        # The repository's plain master-key auth this time (no custom_auth).
        proxy = ProxyProcess(workdir, proxy_config(upstream.url), solaris_env(settings))
        engine = ledger_engine(settings)
        try:
            proxy.start()
            yield Outage(proxy, own, settings, engine)
        finally:
            proxy.stop()
            engine.dispose()
            own.kill()


@pytest.fixture
async def rt(outage: Outage) -> AsyncIterator[Runtime]:
    runtime = observer(outage.settings, outage.engine)
    yield runtime
    await runtime.redis.aclose()


async def test_redis_stopped_answers_503_fast_and_requests_flow_again(outage: Outage, rt: Runtime) -> None:
    email = f"resiliente.{uuid.uuid4().hex[:8]}@example.com"
    # The client gives up after 5 s: a proxy that hangs on a dead Redis fails this test.
    async with openai.AsyncOpenAI(
        base_url=outage.proxy.url + "/v1",
        api_key=outage.proxy.master_key,
        default_headers={"X-User-Email": email},
        max_retries=0,
        timeout=5,
    ) as client:
        for _ in range(2):
            await client.chat.completions.create(model="fake-ok", messages=QUESTION)  # type: ignore[arg-type]
        await rows_eventually(outage.engine, 2, UsageEntry)  # in the ledger before Redis goes

        for failure in (outage.redis.freeze, outage.redis.kill):  # slow, then down
            failure()
            started = time.monotonic()
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="fake-ok", messages=QUESTION)  # type: ignore[arg-type]
            print(f"{failure.__name__}: 503 after {time.monotonic() - started:.3f} s")
            response = caught.value.response
            assert response.status_code == 503
            assert response.headers["retry-after"] == "30"
            assert response.json()["error"]["message"] == Settings().maintenance_message

        await rows_eventually(
            outage.engine, 2, Rejection, col(Rejection.reason) == RejectionReason.STORE_UNAVAILABLE.value
        )
        with Session(outage.engine) as s:
            assert {r.email for r in s.exec(select(Rejection)).all()} == {email}

        outage.redis.start()  # back, empty: counters are rebuilt from the ledger on the next request
        await client.chat.completions.create(model="fake-ok", messages=QUESTION)  # type: ignore[arg-type]
        counters = await eventually(lambda: rt.quota.counters(email), until=lambda c: c.used == 3 * USED)
        assert (counters.requests, counters.reserved) == (3, 0)
        await rows_eventually(outage.engine, 3, UsageEntry)  # the flusher found its way back too

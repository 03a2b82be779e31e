"""The request path end to end: a real `litellm` proxy process with the plugin, a fake upstream with
known usage, and the official OpenAI client, on the embedded stores and on the real ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from solaris_tokens.estimate import Estimator
from solaris_tokens.ledger.models import UsageEntry, User
from solaris_tokens.policy import Period
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.e2e import keys
from tests.e2e.conftest import eventually, fresh_database, ledger_engine, observer, rows_eventually, solaris_env
from tests.e2e.proxy import ProxyProcess, proxy_config
from tests.e2e.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, SLOW_PARTS, FakeUpstream
from tests.support import REAL_REDIS_URL, count_rows, drop_redis_keys, need_service, redis_reachable

pytestmark = pytest.mark.e2e

USED = PROMPT_TOKENS + COMPLETION_TOKENS
QUESTION = [{"role": "user", "content": "Quanto é 2 + 2?"}]


@dataclass
class Stack:
    proxy: ProxyProcess
    settings: Settings
    engine: Engine
    upstream: FakeUpstream
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def client(self, email: str | None = None, *, api_key: str | None = None) -> openai.AsyncOpenAI:
        """The official client as LibreChat would use it: the identity header on every request."""
        headers = {"X-User-Email": email} if email else {}
        client = openai.AsyncOpenAI(
            base_url=self.proxy.url + "/v1",
            api_key=api_key or self.proxy.master_key,
            default_headers=headers,
            max_retries=0,
            timeout=60,
        )
        self.clients.append(client)
        return client


@pytest.fixture(scope="module", params=["embedded", "real"])
def stack(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    settings = Settings(
        key_prefix=f"e2e{uuid.uuid4().hex[:8]}",
        shards=4,
        state_dir=workdir / "state",
        sqlite_path=workdir / "ledger.db",
        flush_interval_seconds=0.2,
        trusted_key_aliases=["librechat"],
    )
    with _stores(request.param, settings) as settings:
        # The deadline is not under test here (test_store_outage.py tests it); 200 requests at once
        # saturate this 2-core machine, and a 0.5 s deadline then turns a slow reserve into a 503.
        env = {**solaris_env(settings), "SOLARIS_REDIS_TIMEOUT_SECONDS": "5"}
        proxy = ProxyProcess(workdir, proxy_config(upstream.url, custom_auth=True), env).start()
        engine = ledger_engine(settings)
        try:
            yield Stack(proxy, settings, engine, upstream)
        finally:
            proxy.stop()
            engine.dispose()
            if settings.redis_url:
                drop_redis_keys(settings.key_prefix)


@contextmanager
def _stores(backend: str, settings: Settings) -> Iterator[Settings]:
    """Nothing for the embedded mode; else the real Redis (own key prefix) and a fresh PostgreSQL database."""
    if backend == "embedded":
        yield settings
        return
    ok, detail = redis_reachable()
    need_service("Redis", ok, detail)
    with fresh_database() as url:
        yield settings.model_copy(update={"redis_url": REAL_REDIS_URL, "database_url": url})


@pytest.fixture
async def rt(stack: Stack) -> AsyncIterator[Runtime]:
    """The test's view of the proxy's stores; also closes the test's clients in the test's loop."""
    runtime = observer(stack.settings, stack.engine)
    yield runtime
    await runtime.redis.aclose()
    for client in stack.clients:
        await client.close()
    stack.clients.clear()


def new_email(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


async def used(rt: Runtime, email: str) -> int:
    return (await rt.quota.counters(email)).used


# --- tests ------------------------------------------------------------------------------------


async def test_first_request_creates_user_and_debits_real_usage(stack: Stack, rt: Runtime) -> None:
    email = new_email("maria.silva")
    client = stack.client(email.upper())
    response = await client.chat.completions.create(model="fake-ok", messages=QUESTION)  # type: ignore[arg-type]
    assert response.choices[0].message.content == REPLY
    assert response.usage is not None and response.usage.total_tokens == USED
    assert stack.upstream.requests[-1]["messages"] == QUESTION  # the request passed unchanged
    await eventually(lambda: used(rt, email), until=lambda n: n == USED)

    chunks = [c async for c in await client.chat.completions.create(model="fake-ok", messages=QUESTION, stream=True)]  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY  # streamed through untouched
    await eventually(lambda: used(rt, email), until=lambda n: n == 2 * USED)

    await rows_eventually(stack.engine, 2, UsageEntry, col(UsageEntry.model) == "fake-ok")
    with Session(stack.engine) as s:
        user = s.exec(select(User).where(User.email == email)).one()
        entries = s.exec(select(UsageEntry).where(UsageEntry.user_id == user.id)).all()
    assert user.name.startswith("Maria Silva")
    assert sorted((e.prompt_tokens, e.completion_tokens) for e in entries) == [(12, 30), (12, 30)]


async def test_stream_the_client_left_is_debited_what_it_used(stack: Stack, rt: Runtime) -> None:
    email = new_email("impaciente")
    client = stack.client(email)
    stream = await client.chat.completions.create(model="fake-slow", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the user closes the tab after the first words
    await stream.close()
    counters = await eventually(lambda: rt.quota.counters(email), until=lambda c: c.requests == 1)
    assert counters.reserved == 0
    assert 0 < counters.used < PROMPT_TOKENS + SLOW_PARTS * 10  # what was streamed so far, not the estimate


async def test_shipped_mock_model_answers_and_is_metered(stack: Stack, rt: Runtime) -> None:
    email = new_email("ana")
    client = stack.client(email)
    response = await client.chat.completions.create(model="solaris-mock", messages=QUESTION)  # type: ignore[arg-type]
    assert "IA SOLARIS" in (response.choices[0].message.content or "")
    stream = await client.chat.completions.create(model="solaris-mock", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    assert [c async for c in stream]
    counters = await eventually(lambda: rt.quota.counters(email), until=lambda c: c.requests == 2)
    assert counters.used > 0 and counters.reserved == 0


async def test_exhausted_budget_answers_429_with_envelope_and_spec_object(stack: Stack, rt: Runtime) -> None:
    email = new_email("esgotado")
    await rt.quota.ensure_loaded(email)
    await rt.quota.set_limit(email, USED, actor="e2e")
    client = stack.client(email)
    await client.chat.completions.create(model="fake-ok", messages=QUESTION, max_tokens=10)  # type: ignore[arg-type]
    await eventually(lambda: used(rt, email), until=lambda n: n == USED)

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="fake-ok", messages=QUESTION, max_tokens=10)  # type: ignore[arg-type]
    response = caught.value.response
    assert response.status_code == 429
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == "429"
    assert error["type"] == "rate_limit_error"
    next_reset = Period.of(rt.quota.clock()).end
    assert error["provider_specific_fields"] == {
        "error": "Limite de tokens esgotado",
        "details": {
            "used": USED,
            "limit": USED,
            "additional": 0,
            "next_reset": next_reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "actions": {"buy_tokens": "/api/tokens/purchase", "contact_support": "/api/support/contact"},
    }
    details = error["provider_specific_fields"]["details"]
    assert all(type(details[k]) is int for k in ("used", "limit", "additional"))
    assert error["message"].startswith("Seu limite mensal de tokens foi esgotado: você já usou 42 de 42 tokens")
    assert next_reset.strftime("%d/%m/%Y às 00:00 UTC") in error["message"]
    assert "http://localhost:4000/api/tokens/purchase" in error["message"]
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["x-should-retry"] == "false"
    assert (await rt.quota.counters(email)).reserved == 0


async def test_missing_or_invalid_email_is_401(stack: Stack, rt: Runtime) -> None:
    attempts: list[tuple[openai.AsyncOpenAI, dict[str, Any]]] = [
        (stack.client(None), {}),
        (stack.client("maria@@example.com"), {}),
        (stack.client(None, api_key=keys.UNTRUSTED_KEY), {"user": "maria@pаypal.com"}),  # a Cyrillic а
    ]
    for client, extra in attempts:
        async with client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="fake-ok", messages=QUESTION, **extra)  # type: ignore[arg-type]
        error = caught.value.response.json()["error"]
        assert caught.value.response.status_code == 401
        assert error["message"].startswith("Não foi possível identificar o usuário desta solicitação")
        assert error["provider_specific_fields"]["error"] == "Usuário não identificado"
    assert count_rows(stack.engine, User, col(User.email).like("%example.com%@%")) == 0
    assert count_rows(stack.engine, User, col(User.email).like("%ypal%")) == 0


async def test_header_from_untrusted_key_is_ignored(stack: Stack, rt: Runtime) -> None:
    victim = new_email("victim")
    with pytest.raises(openai.AuthenticationError):
        await stack.client(victim, api_key=keys.UNTRUSTED_KEY).chat.completions.create(
            model="fake-ok",
            messages=QUESTION,  # type: ignore[arg-type]
        )
    before = await _used_or_zero(rt, keys.OWNER_EMAIL)
    await stack.client(victim, api_key=keys.OWNED_KEY).chat.completions.create(model="fake-ok", messages=QUESTION)  # type: ignore[arg-type]
    await eventually(lambda: used(rt, keys.OWNER_EMAIL), until=lambda n: n == before + USED)
    assert count_rows(stack.engine, User, User.email == victim) == 0

    librechat_user = new_email("librechat.user")  # a trusted key's header does name the user
    await stack.client(librechat_user, api_key=keys.LIBRECHAT_KEY).chat.completions.create(
        model="fake-ok",
        messages=QUESTION,  # type: ignore[arg-type]
    )
    await eventually(lambda: used(rt, librechat_user), until=lambda n: n == USED)


async def _used_or_zero(rt: Runtime, email: str) -> int:
    if await asyncio.to_thread(rt.ledger.get_user, email) is None:
        return 0
    return await used(rt, email)


async def test_upstream_500_releases_the_reservation(stack: Stack, rt: Runtime) -> None:
    email = new_email("falha")
    with pytest.raises(openai.InternalServerError):
        await stack.client(email).chat.completions.create(model="fake-fail", messages=QUESTION, max_tokens=50)  # type: ignore[arg-type]
    # The counters exist (the reservation was made), and the failure hooks gave it back.
    counters = await eventually(lambda: rt.quota.counters(email), until=lambda c: c.reserved == 0)
    assert (counters.used, counters.requests) == (0, 0)
    await rt.flusher.drain()
    assert count_rows(stack.engine, UsageEntry, col(UsageEntry.model) == "fake-fail") == 0


async def test_same_litellm_call_id_twice_debits_both(stack: Stack, rt: Runtime) -> None:
    email = new_email("repete")
    call_id = f"client-chosen-{uuid.uuid4().hex}"
    client = stack.client(email)
    for _ in range(2):
        await client.chat.completions.create(
            model="fake-ok",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_headers={"x-litellm-call-id": call_id},
        )
    await eventually(lambda: used(rt, email), until=lambda n: n == 2 * USED)
    await rows_eventually(stack.engine, 2, UsageEntry, UsageEntry.call_id == call_id)


async def test_parallel_requests_on_a_tight_budget_never_overspend(stack: Stack, rt: Runtime) -> None:
    """200 requests at once; the upstream holds the admitted ones until every request is decided, so
    no settle frees room meanwhile: exactly ⌊available / estimate⌋ may pass."""
    email = new_email("corrida")
    body: dict[str, Any] = {"model": "fake-gated", "messages": QUESTION, "max_tokens": 100}
    estimate = Estimator(stack.settings).estimate(body).total
    available = 10 * estimate + estimate // 2
    await rt.quota.ensure_loaded(email)
    await rt.quota.set_limit(email, available, actor="e2e")
    client = stack.client(email)
    stack.upstream.close_gate()
    rejected = 0

    async def one() -> bool:
        nonlocal rejected
        try:
            await client.chat.completions.create(**body)
            return True
        except openai.RateLimitError:
            rejected += 1
            return False

    async def open_when_all_decided() -> None:
        try:
            await eventually(
                lambda: asyncio.sleep(0, stack.upstream.arrivals + rejected), until=lambda n: n >= 200, deadline=90
            )
        finally:
            stack.upstream.open_gate()

    opener = asyncio.create_task(open_when_all_decided())
    results = await asyncio.gather(*(one() for _ in range(200)))
    await opener
    admitted = sum(results)
    assert admitted * estimate <= available
    assert (admitted, rejected) == (10, 190)
    await eventually(lambda: used(rt, email), until=lambda n: n == 10 * USED)
    assert (await rt.quota.counters(email)).reserved == 0

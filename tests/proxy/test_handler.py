"""The LiteLLM callback over the quota core, driven with LiteLLM's own payloads, on both backends."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from litellm.proxy.types_utils.utils import get_instance_fn
from redis.asyncio import BlockingConnectionPool
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from solaris_tokens.domain import UserStatus
from solaris_tokens.ledger.models import Rejection, UsageEntry, User
from solaris_tokens.proxy.bodies import EXHAUSTED_ERROR, QuotaHTTPException
from solaris_tokens.proxy.handler import METERED_CALL_TYPES, SolarisHandler
from solaris_tokens.proxy.rejections import RejectionReason
from solaris_tokens.proxy.service import ProxyService, warm_redis
from solaris_tokens.proxy.ticket import METADATA_KEY
from solaris_tokens.runtime import Runtime, build_runtime
from solaris_tokens.settings import Settings
from tests.proxy import payloads
from tests.proxy.payloads import chat_request, failure_kwargs, master_key, success_kwargs, virtual_key
from tests.support import FakeClock, count_rows, drop_redis_keys, real_redis_settings

MARIA = "maria.silva@example.com"


async def pre_call(handler: SolarisHandler, data: dict[str, Any], key: Any = None) -> dict[str, Any]:
    return await handler.async_pre_call_hook(key or master_key(), None, data, "acompletion")


async def rejected(handler: SolarisHandler, data: dict[str, Any], key: Any = None) -> QuotaHTTPException:
    with pytest.raises(QuotaHTTPException) as caught:
        await pre_call(handler, data, key)
    return caught.value


async def succeed(handler: SolarisHandler, data: dict[str, Any], prompt: int, completion: int, **kw: Any) -> None:
    kwargs = success_kwargs(data, prompt, completion, **kw)
    await handler.async_log_success_event(kwargs, payloads.model_response(prompt, completion), None, None)
    await handler.drain()  # the settle waits for its batch


# --- the flows --------------------------------------------------------------------------------


async def test_first_request_creates_user_and_debits_450(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request("Maria.Silva@Example.com", max_tokens=480)
    await pre_call(handler, data)
    ticket = data["metadata"][METADATA_KEY]
    assert ticket["email"] == MARIA
    assert (await runtime.quota.counters(MARIA)).reserved == ticket["estimate"] > 480

    await succeed(handler, data, 300, 150)
    await runtime.flusher.drain()
    account = await runtime.quota.account(MARIA)
    assert (account.used, account.reserved, account.available) == (450, 0, 999_550)
    assert account.name == "Maria Silva"
    with Session(runtime.engine) as s:
        entry = s.exec(select(UsageEntry)).one()
    assert (entry.prompt_tokens, entry.completion_tokens, entry.model) == (300, 150, payloads.MODEL)
    assert entry.call_id == data["litellm_call_id"]
    assert entry.latency_ms == 420


async def test_streaming_request_is_debited_from_its_final_usage(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA, stream=True)
    await pre_call(handler, data)
    await succeed(handler, data, 12, 345)
    assert (await runtime.quota.counters(MARIA)).used == 357


async def test_stream_the_client_dropped_is_debited_what_it_used(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA, stream=True, max_tokens=2000)
    await pre_call(handler, data)
    await succeed(handler, data, 12, 40, client_disconnected=True)
    counters = await runtime.quota.counters(MARIA)
    assert (counters.used, counters.reserved) == (52, 0)


async def test_exhausted_user_gets_429_with_spec_object(
    handler: SolarisHandler, runtime: Runtime, clock: FakeClock
) -> None:
    """Fase 2, "Esgotamento Total": the exact object of the spec, inside LiteLLM's envelope."""
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1_000, actor="test")
    data = chat_request(MARIA, max_tokens=10)
    await pre_call(handler, data)
    await succeed(handler, data, 600, 400)

    error = await rejected(handler, chat_request(MARIA, max_tokens=10))
    assert error.status_code == 429
    assert error.provider_specific_fields == {
        "error": "Limite de tokens esgotado",
        "details": {"used": 1000, "limit": 1000, "additional": 0, "next_reset": "2026-12-01T00:00:00Z"},
        "actions": {"buy_tokens": "/api/tokens/purchase", "contact_support": "/api/support/contact"},
    }
    details = error.provider_specific_fields["details"]
    assert all(type(details[k]) is int for k in ("used", "limit", "additional"))
    until_reset = datetime(2026, 12, 1, tzinfo=UTC) - clock()
    assert error.headers == {"Retry-After": str(int(until_reset.total_seconds())), "x-should-retry": "false"}
    assert error.message == (
        "Seu limite mensal de tokens foi esgotado: você já usou 1.000 de 1.000 tokens deste mês e não tem "
        "tokens adicionais. Seus tokens mensais serão renovados em 01/12/2026 às 00:00 UTC. Para continuar "
        "agora, compre tokens adicionais em http://localhost:4000/api/tokens/purchase ou fale com o suporte "
        "em http://localhost:4000/api/support/contact."
    )


async def test_estimate_larger_than_what_is_left_is_refused_saying_what_is_left(
    handler: SolarisHandler, runtime: Runtime
) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1_000, actor="test")
    data = chat_request(MARIA, max_tokens=10)
    await pre_call(handler, data)
    await succeed(handler, data, 500, 200)

    error = await rejected(handler, chat_request(MARIA, max_tokens=500))
    assert error.status_code == 429
    assert error.provider_specific_fields["error"] == EXHAUSTED_ERROR
    assert error.provider_specific_fields["details"]["used"] == 700
    assert "restam 300 tokens e ela precisa de cerca de 5" in error.message
    await pre_call(handler, chat_request(MARIA, max_tokens=200))  # a smaller request still fits


async def test_additional_tokens_are_spent_after_the_monthly_allowance(
    handler: SolarisHandler, runtime: Runtime
) -> None:
    from solaris_tokens.domain import CreditKind

    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 100, actor="test")
    await runtime.quota.credit(MARIA, 1_000, CreditKind.BONUS, key="bonus-1", actor="test")
    data = chat_request(MARIA, max_tokens=100)
    await pre_call(handler, data)
    await succeed(handler, data, 50, 100)
    counters = await runtime.quota.counters(MARIA)
    assert (counters.used, counters.additional) == (100, 950)


async def test_suspended_user_gets_403_with_reason_and_until(handler: SolarisHandler, runtime: Runtime) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    until = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    await runtime.quota.change_user(
        MARIA,
        {"status": UserStatus.SUSPENDED.value, "suspended_until": until, "suspend_reason": "uso anômalo"},
        actor="admin@example.com",
        action="user.suspend",
    )
    error = await rejected(handler, chat_request(MARIA))
    assert error.status_code == 403
    assert error.provider_specific_fields == {
        "error": "Conta suspensa",
        "details": {"reason": "uso anômalo", "until": "2026-11-20T15:30:00Z"},
        "actions": {"contact_support": "/api/support/contact"},
    }
    assert "suspensa até 20/11/2026 às 15:30 UTC. Motivo: uso anômalo." in error.message
    assert (await runtime.quota.counters(MARIA)).reserved == 0


async def test_missing_or_invalid_email_is_401_and_creates_nothing(handler: SolarisHandler, runtime: Runtime) -> None:
    missing = await rejected(handler, chat_request(None))
    invalid = await rejected(handler, chat_request("maria@pаypal.com"))  # Cyrillic а
    assert (missing.status_code, invalid.status_code) == (401, 401)
    assert missing.provider_specific_fields["details"] == {"problem": "missing"}
    assert invalid.provider_specific_fields["details"] == {"problem": "invalid"}
    assert "nenhum e-mail foi informado" in missing.message
    assert "não é válido" in invalid.message
    assert count_rows(runtime.engine, User) == 0


async def test_header_from_untrusted_key_is_ignored(handler: SolarisHandler, runtime: Runtime) -> None:
    anonymous = virtual_key("sk-other-app", alias="other-app")
    assert (await rejected(handler, chat_request("victim@example.com"), anonymous)).status_code == 401

    owned = virtual_key("sk-joao", alias="joao", owner_email="joao@example.com")
    data = chat_request("victim@example.com", user="victim@example.com")
    await pre_call(handler, data, owned)
    await succeed(handler, data, 10, 10)
    assert (await runtime.quota.counters("joao@example.com")).used == 20
    assert count_rows(runtime.engine, User, User.email == "victim@example.com") == 0


async def test_trusted_alias_may_name_the_user(runtime: Runtime, service: ProxyService) -> None:
    runtime.settings.trusted_key_aliases = ["librechat"]
    service.gate.identity.__init__(runtime.settings)  # type: ignore[misc]
    handler = SolarisHandler(service=service)
    data = chat_request("ana@example.com")
    await pre_call(handler, data, virtual_key("sk-librechat", alias="librechat"))
    assert data["metadata"][METADATA_KEY]["email"] == "ana@example.com"


async def test_user_field_email_identifies_when_nothing_else_does(handler: SolarisHandler) -> None:
    data = chat_request(None, user="Joao@Example.com")
    await pre_call(handler, data, virtual_key("sk-app", alias="app"))
    assert data["metadata"][METADATA_KEY]["email"] == "joao@example.com"


async def test_client_ticket_is_overwritten_and_forged_tickets_debit_nobody(
    handler: SolarisHandler, runtime: Runtime
) -> None:
    forged = {"email": "victim@example.com", "rid": "r1", "estimate": 1, "reserved": True, "sig": "0" * 64}
    data = chat_request(MARIA, client_metadata={METADATA_KEY: forged})
    await pre_call(handler, data)
    assert data["metadata"][METADATA_KEY]["email"] == MARIA

    # A success event carrying a ticket this process never sealed (e.g. a route without pre-call).
    stray = chat_request(None, client_metadata={METADATA_KEY: forged})
    await succeed(handler, stray, 1000, 1000)
    tampered = chat_request(MARIA)
    await pre_call(handler, tampered)
    tampered["metadata"][METADATA_KEY]["email"] = "victim@example.com"
    await succeed(handler, tampered, 1000, 1000)
    assert count_rows(runtime.engine, User, User.email == "victim@example.com") == 0


async def test_failed_call_releases_its_reservation(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA, max_tokens=100)
    await pre_call(handler, data)
    assert (await runtime.quota.counters(MARIA)).reserved > 100
    error = RuntimeError("upstream 500")
    await handler.async_log_failure_event(failure_kwargs(data, error), None, None, None)
    await handler.async_post_call_failure_hook(data, error, master_key())  # both fire; the second is a no-op
    counters = await runtime.quota.counters(MARIA)
    assert (counters.used, counters.reserved) == (0, 0)


async def test_our_own_rejections_make_the_failure_hooks_no_ops(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(None)
    error = await rejected(handler, data)
    await handler.async_log_failure_event(failure_kwargs(data, error), None, None, None)
    await handler.async_post_call_failure_hook(data, error, master_key())
    assert count_rows(runtime.engine, User) == 0


async def test_same_litellm_call_id_twice_debits_both(handler: SolarisHandler, runtime: Runtime) -> None:
    for _ in range(2):
        data = chat_request(MARIA, call_id="client-chosen-id")
        await pre_call(handler, data)
        await succeed(handler, data, 10, 20)
    assert (await runtime.quota.counters(MARIA)).used == 60


async def test_repeated_success_callback_debits_once(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA)
    await pre_call(handler, data)
    kwargs = success_kwargs(data, 10, 20)
    for _ in range(3):
        await handler.async_log_success_event(copy.deepcopy(kwargs), None, None, None)
        await handler.drain()
    assert (await runtime.quota.counters(MARIA)).used == 30


async def test_settles_wait_for_their_batch_and_a_repeat_inside_one_counts_once(
    handler: SolarisHandler, runtime: Runtime
) -> None:
    first, second = chat_request(MARIA), chat_request(MARIA)
    await pre_call(handler, first)
    await pre_call(handler, second)
    held = (await runtime.quota.counters(MARIA)).reserved
    for kwargs in (success_kwargs(first, 10, 20), success_kwargs(second, 1, 2), success_kwargs(first, 10, 20)):
        await handler.async_log_success_event(kwargs, None, None, None)
    before = await runtime.quota.counters(MARIA)
    assert (before.used, before.reserved) == (0, held)  # queued: the reservations still hold the estimates
    await handler.drain()
    after = await runtime.quota.counters(MARIA)
    assert (after.used, after.reserved, after.requests) == (33, 0, 2)


async def test_usage_from_the_response_when_no_logging_payload(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA)
    await pre_call(handler, data)
    kwargs = success_kwargs(data, 0, 0)
    del kwargs["standard_logging_object"]
    await handler.async_log_success_event(kwargs, payloads.model_response(7, 8), None, None)
    await handler.drain()
    assert (await runtime.quota.counters(MARIA)).used == 15


async def test_success_without_any_usage_debits_the_estimate(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA, max_tokens=50)
    await pre_call(handler, data)
    kwargs = success_kwargs(data, 0, 0)
    del kwargs["standard_logging_object"]
    await handler.async_log_success_event(kwargs, None, None, None)
    await handler.drain()
    assert (await runtime.quota.counters(MARIA)).used == data["metadata"][METADATA_KEY]["estimate"]


@pytest.mark.parametrize("prompt, completion", [(-5, 10), (10, -1), (float("nan"), 3)])
async def test_malformed_usage_debits_the_estimate_not_zero(
    handler: SolarisHandler, runtime: Runtime, prompt: Any, completion: Any
) -> None:
    data = chat_request(MARIA, max_tokens=50)
    await pre_call(handler, data)
    kwargs = success_kwargs(data, 0, 0)
    kwargs["standard_logging_object"]["prompt_tokens"] = prompt
    kwargs["standard_logging_object"]["completion_tokens"] = completion
    await handler.async_log_success_event(kwargs, None, None, None)
    await handler.drain()
    counters = await runtime.quota.counters(MARIA)
    assert counters.used == data["metadata"][METADATA_KEY]["estimate"]
    assert counters.reserved == 0


async def test_absurd_usage_is_refused_and_the_estimate_debited(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA, max_tokens=50)
    await pre_call(handler, data)
    await succeed(handler, data, runtime.settings.max_request_tokens + 1, 0)
    counters = await runtime.quota.counters(MARIA)
    assert counters.used == data["metadata"][METADATA_KEY]["estimate"]
    assert counters.reserved == 0


async def test_calls_that_spend_no_tokens_pass_untouched(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(None)
    before = copy.deepcopy({k: v for k, v in data.items() if k != "litellm_logging_obj"})
    assert "afile_list" not in METERED_CALL_TYPES
    result = await handler.async_pre_call_hook(master_key(), None, data, "afile_list")
    assert result is data
    assert {k: v for k, v in data.items() if k != "litellm_logging_obj"} == before


async def test_responses_route_keeps_the_ticket_in_litellm_metadata(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA)
    data["litellm_metadata"] = data.pop("metadata")
    del data["messages"]
    data["input"] = "Resuma o texto."
    await handler.async_pre_call_hook(master_key(), None, data, "aresponses")
    assert METADATA_KEY in data["litellm_metadata"]
    kwargs = success_kwargs({**data, "metadata": data["litellm_metadata"]}, 5, 5)
    kwargs["litellm_params"]["litellm_metadata"] = kwargs["litellm_params"].pop("metadata")
    await handler.async_log_success_event(kwargs, None, None, None)
    await handler.drain()
    assert (await runtime.quota.counters(MARIA)).used == 10


async def test_parallel_first_requests_never_admit_more_than_available(
    handler: SolarisHandler, runtime: Runtime
) -> None:
    await runtime.quota.ensure_loaded(MARIA)
    requests = [chat_request(MARIA, content="corrida", max_tokens=100) for _ in range(200)]
    estimate = handler._service.gate.estimator.estimate(requests[0]).total  # type: ignore[union-attr]
    await runtime.quota.set_limit(MARIA, 10 * estimate + estimate // 2, actor="test")
    await warm_redis(runtime, 200)  # one connection per concurrent request, opened beforehand

    async def one(data: dict[str, Any]) -> bool:
        try:
            await pre_call(handler, data)
            return True
        except QuotaHTTPException as exc:
            assert exc.status_code == 429
            return False

    admitted = sum(await asyncio.gather(*(one(d) for d in requests)))
    assert admitted == 10
    assert (await runtime.quota.counters(MARIA)).reserved == 10 * estimate


# --- the store is down (F8) -------------------------------------------------------------------


@pytest.fixture
async def outage(settings: Settings, engine: Engine, clock: FakeClock) -> AsyncIterator[tuple[Any, SolarisHandler]]:
    """A handler whose Redis can be switched off (fakeredis' `connected`), over the backend's ledger."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(
        server=server, decode_responses=True, connection_pool_class=BlockingConnectionPool, max_connections=64
    )
    runtime = build_runtime(settings, redis=client, engine=engine, clock=clock)
    service = await ProxyService.start(runtime=runtime, background=False)
    yield server, SolarisHandler(service=service)
    await service.aclose(close_runtime=False)
    await client.aclose()


async def test_store_down_answers_503_and_records_the_rejection(outage: tuple[Any, SolarisHandler]) -> None:
    server, handler = outage
    server.connected = False
    error = await rejected(handler, chat_request(MARIA, max_tokens=10))
    assert error.status_code == 503
    assert error.headers == {"Retry-After": "30"}
    assert error.message == Settings().maintenance_message
    assert error.provider_specific_fields["details"] == {"retry_after": 30}

    service = handler._service
    assert service is not None
    assert await service.gate.recorder.flush() == 1
    with Session(service.runtime.engine) as s:
        rejection = s.exec(select(Rejection)).one()
    assert (rejection.email, rejection.reason, rejection.model) == (
        MARIA,
        RejectionReason.STORE_UNAVAILABLE.value,
        payloads.MODEL,
    )
    assert rejection.estimate > 10

    server.connected = True  # back: requests flow again
    await pre_call(handler, chat_request(MARIA))


async def test_fail_open_admits_without_reservation_and_debits_when_back(
    outage: tuple[Any, SolarisHandler],
) -> None:
    server, handler = outage
    service = handler._service
    assert service is not None
    service.runtime.settings.fail_open = True
    service.gate.retry_delays = (0.05,)  # after succeed()'s drain, which meets Redis still down
    server.connected = False
    data = chat_request(MARIA)
    await pre_call(handler, data)
    assert data["metadata"][METADATA_KEY]["reserved"] is False
    await succeed(handler, data, 10, 20)  # Redis still down: the settle is retried later
    server.connected = True
    await asyncio.gather(*service.gate._retries)
    assert (await service.runtime.quota.counters(MARIA)).used == 30
    await service.gate.recorder.flush()
    assert count_rows(service.runtime.engine, Rejection, col(Rejection.reason) == RejectionReason.FAIL_OPEN.value) == 1


async def test_rejections_wait_for_the_database(outage: tuple[Any, SolarisHandler]) -> None:
    server, handler = outage
    service = handler._service
    assert service is not None
    server.connected = False
    await rejected(handler, chat_request(MARIA))
    recorder = service.gate.recorder
    ledger = recorder.ledger

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("database down")

    recorder.ledger = type("DownLedger", (), {"record_rejection": staticmethod(down)})()  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await recorder.flush()
    assert recorder.pending == 1
    recorder.ledger = ledger
    assert await recorder.flush() == 1
    assert recorder.pending == 0


# --- wiring ---------------------------------------------------------------------------------------


def test_pre_call_hook_is_defined_on_the_class_itself() -> None:
    # LiteLLM calls it only if `async_pre_call_hook` is in vars(type(callback)).
    for hook in ("async_pre_call_hook", "async_log_success_event", "async_log_failure_event"):
        assert hook in vars(SolarisHandler)
    assert "async_post_call_failure_hook" in vars(SolarisHandler)


def test_both_config_paths_resolve_to_the_instance() -> None:
    from solaris_tokens.proxy.handler import handler

    assert get_instance_fn("solaris_tokens.proxy.handler") is handler
    assert get_instance_fn("solaris_tokens.proxy.handler.handler") is handler
    assert isinstance(handler, SolarisHandler)


async def test_lazy_start_builds_the_embedded_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("SOLARIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SOLARIS_SQLITE_PATH", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("SOLARIS_KEY_PREFIX", "lazy" + tmp_path.name[-8:])
    monkeypatch.delenv("SOLARIS_REDIS_URL", raising=False)
    monkeypatch.delenv("SOLARIS_DATABASE_URL", raising=False)
    handler = SolarisHandler()  # in a running loop: starts building at once
    try:
        data = chat_request(MARIA)
        await pre_call(handler, data)
        await succeed(handler, data, 10, 20)
        service = await handler.service()
        assert (await service.runtime.quota.counters(MARIA)).used == 30
        assert len(service.tasks) == 2  # the ledger flusher and the rejection writer run
    finally:
        await handler.aclose()


async def test_ledger_flush_resumes_after_redis_lost_its_data(handler: SolarisHandler, runtime: Runtime) -> None:
    data = chat_request(MARIA)
    await pre_call(handler, data)
    await succeed(handler, data, 10, 20)
    assert await runtime.flusher.drain() > 0
    # Redis restarted empty: counters, streams and the flusher's consumer group are gone.
    names = [k async for k in runtime.redis.scan_iter(match=f"{runtime.settings.key_prefix}:*")]
    await runtime.redis.delete(*names)
    data = chat_request(MARIA)
    await pre_call(handler, data)
    await succeed(handler, data, 1, 2)
    assert await runtime.flusher.drain() > 0
    assert count_rows(runtime.engine, UsageEntry) == 2
    assert (await runtime.quota.counters(MARIA)).used == 33


async def test_flusher_can_be_left_to_the_workers(runtime: Runtime) -> None:
    runtime.settings.redis_warm_connections = 0
    runtime.settings.proxy_flush_ledger = False
    service = await ProxyService.start(runtime=runtime)
    try:
        assert [t.get_name() for t in service.tasks] == ["solaris-rejections"]
    finally:
        await service.aclose(close_runtime=False)
    runtime.settings.proxy_flush_ledger = True
    service = await ProxyService.start(runtime=runtime)
    try:
        assert sorted(t.get_name() for t in service.tasks) == ["solaris-ledger-flusher", "solaris-rejections"]
    finally:
        await service.aclose(close_runtime=False)


async def test_proxy_delivers_emails_when_no_worker_runs(runtime: Runtime, tmp_path: Any) -> None:
    """Embedded mode (scripts/serve): the 80% alert is written as an .eml file by the proxy itself."""
    runtime.settings.redis_warm_connections = 0
    runtime.settings.proxy_deliver_emails = True
    runtime.settings.email_delivery_interval_seconds = 0.05
    runtime.settings.flush_interval_seconds = 0.05
    runtime.settings.email_dir = tmp_path / "mail"
    await runtime.quota.ensure_loaded(MARIA)
    await runtime.quota.set_limit(MARIA, 1000, actor="test")
    service = await ProxyService.start(runtime=runtime)
    try:
        assert "solaris-email-delivery" in [t.get_name() for t in service.tasks]
        handler = SolarisHandler(service=service)
        data = chat_request(MARIA, max_tokens=10)
        await pre_call(handler, data)
        await succeed(handler, data, 800, 10)
        for _ in range(200):  # bounded wait for the background tasks (no timing is asserted)
            files = list((tmp_path / "mail").glob("*.eml"))
            if files:
                break
            await asyncio.sleep(0.05)
        assert len(files) == 1
        assert "80% dos seus tokens foram utilizados" in files[0].read_text()
    finally:
        await service.aclose(close_runtime=False)


async def script_loads(redis: Any) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_script|load", {}).get("calls", 0))


@pytest.mark.real
async def test_the_service_loads_the_store_scripts_at_start_not_in_the_first_request(
    real_url: str, tmp_path: Any
) -> None:
    """Loading them under the first request's deadline made a cold proxy's first burst answer 503."""
    settings = real_redis_settings(tmp_path, "tstart", redis_warm_connections=0)
    runtime = await asyncio.to_thread(build_runtime, settings)
    try:
        before = await script_loads(runtime.redis)
        service = await ProxyService.start(runtime=runtime, background=False)
        at_start = await script_loads(runtime.redis)
        handler = SolarisHandler(service=service)
        data = chat_request(MARIA, max_tokens=10)
        await pre_call(handler, data)
        await succeed(handler, data, 5, 5)
        assert at_start > before
        assert await script_loads(runtime.redis) == at_start  # the request ran on EVALSHA alone
        assert (await runtime.quota.counters(MARIA)).used == 10
        await service.aclose(close_runtime=False)
    finally:
        await runtime.aclose()
        drop_redis_keys(settings.key_prefix)

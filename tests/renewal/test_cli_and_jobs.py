"""`solaris-tokens renewal run` and `solaris-tokens report monthly` (CliRunner), and the Celery beat entries."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.schedules import crontab
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from solaris_tokens.cli import common
from solaris_tokens.cli.app import app
from solaris_tokens.jobs.celery_app import TASK_MODULES, beat_schedule, make_app
from solaris_tokens.renewal import RenewalNotDue
from solaris_tokens.report import REPORT_EMAIL
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.renewal.helpers import ledger_usage, outbox, spend, summaries
from tests.support import FakeClock

AFTER_GRACE = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)


@pytest.fixture
def cli(
    runtime: Runtime,
    backend: str,
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Point the CLI at this test's ledger database, Redis key prefix and clock.

    Embedded backend: the CLI reaches the embedded TCP stand-in, not the test's in-process fakeredis
    (the tests drain the streams first, so the CLI only needs SQL), and the stand-in drops a
    connection after any error reply (BUSYGROUP from a second run creating its stream groups), so
    each invocation there gets a key prefix of its own.
    """
    url = engine.url.render_as_string(hide_password=False)

    def factory() -> Settings:
        update: dict[str, object] = {"database_url": url}
        if backend == "embedded":
            update["key_prefix"] = f"cli{uuid.uuid4().hex[:8]}"
        return settings.model_copy(update=update)

    monkeypatch.setattr(common, "settings_factory", factory)
    monkeypatch.setattr(common, "clock", clock)


async def invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def seed(runtime: Runtime, clock: FakeClock) -> None:
    for i in range(3):
        await spend(runtime, clock, f"user{i}@x.com", 1_000 * (i + 1), model="gpt-4o" if i else "gpt-4o-mini")
    await runtime.flusher.drain()
    clock.set(AFTER_GRACE)


@pytest.mark.usefixtures("cli")
async def test_renewal_run_renews_once_and_reports(runtime: Runtime, clock: FakeClock) -> None:
    await seed(runtime, clock)

    first = await invoke("renewal", "run", "--month", "2026-11")
    assert first.exit_code == 0, first.output
    assert "renewal 2026-11: 3 active users, 3 renewed now (3 emails queued), 0 already renewed" in first.stdout
    assert "renewing users" in first.stderr and "3/3" in first.stderr

    again = await invoke("renewal", "run", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {
        "period": "2026-11",
        "users": 3,
        "renewed": 0,
        "emails": 0,
        "already_renewed": 3,
    }
    assert len(summaries(runtime, "2026-11")) == 3
    assert len(outbox(runtime, "renewal")) == 3


@pytest.mark.usefixtures("cli")
async def test_renewal_run_before_the_grace_period_says_when(runtime: Runtime, clock: FakeClock) -> None:
    await seed(runtime, clock)
    clock.set(datetime(2026, 12, 1, 0, 0, 10, tzinfo=UTC))
    early = await invoke("renewal", "run")
    assert early.exit_code == 1
    assert "the renewal of 2026-11 can run from 2026-12-01T00:01:00Z" in early.stderr
    bad = await invoke("renewal", "run", "--month", "2026-13")
    assert bad.exit_code == 1
    assert "YYYY-MM" in bad.stderr
    assert summaries(runtime, "2026-11") == {}


@pytest.mark.usefixtures("cli")
async def test_report_monthly_prints_text_json_and_csv(runtime: Runtime, clock: FakeClock) -> None:
    await seed(runtime, clock)
    tokens, _monthly, _additional, requests = ledger_usage(runtime, "2026-11")

    as_json = await invoke("report", "monthly", "--month", "2026-11", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert (data["totals"]["tokens"], data["totals"]["requests"]) == (tokens, requests) == (6_000, 3)
    assert {m["name"]: m["tokens"] for m in data["models"]} == {"gpt-4o": 5_000, "gpt-4o-mini": 1_000}

    as_csv = await invoke("report", "monthly", "--csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted((r["email"], int(r["tokens"])) for r in rows) == [
        ("user0@x.com", 1_000),
        ("user1@x.com", 2_000),
        ("user2@x.com", 3_000),
    ]

    as_text = await invoke("report", "monthly")
    assert as_text.exit_code == 0, as_text.output
    assert "Monthly report 2026-11" in as_text.stdout and "6,000" in as_text.stdout

    both = await invoke("report", "monthly", "--json", "--csv")
    assert both.exit_code == 2


@pytest.mark.usefixtures("cli")
async def test_report_monthly_send_queues_one_email_per_admin(
    runtime: Runtime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(runtime, clock)
    factory = common.settings_factory

    def with_admins() -> Settings:
        return factory().model_copy(update={"admin_emails": ["boss@x.com"]})

    monkeypatch.setattr(common, "settings_factory", with_admins)
    for _ in range(2):
        sent = await invoke("report", "monthly", "--send")
        assert sent.exit_code == 0, sent.output
    assert [(m.recipient, m.dedupe_key) for m in outbox(runtime, REPORT_EMAIL)] == [("boss@x.com", "2026-11")]


def test_beat_runs_the_renewal_at_midnight_utc_on_the_first_then_the_report() -> None:
    settings = Settings()
    schedule = beat_schedule(settings)
    renewal, report = schedule["monthly-renewal"], schedule["monthly-report"]
    assert renewal["task"] == "solaris.renewal.run"
    assert renewal["schedule"] == crontab(minute=0, hour=0, day_of_month=1)
    assert report["task"] == "solaris.report.monthly"
    assert report["schedule"] == crontab(minute=30, hour=0, day_of_month=1)
    assert "expires" not in renewal.get("options", {})  # a late run is still due
    assert "solaris_tokens.jobs.renewal" in TASK_MODULES
    celery = make_app(settings)
    assert celery.conf.timezone == "UTC" and celery.conf.enable_utc


def test_renewal_task_renews_a_past_month_and_fails_fast_on_a_future_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Celery task body, called as the worker calls it (not eager), on an embedded setup of its own."""
    from solaris_tokens.jobs import renewal as tasks

    monkeypatch.setenv("SOLARIS_SQLITE_PATH", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("SOLARIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SOLARIS_KEY_PREFIX", f"task{uuid.uuid4().hex[:8]}")
    assert tasks.run_renewal.name == "solaris.renewal.run"
    assert tasks.run_renewal.run(month="2020-01") == {
        "period": "2020-01",
        "users": 0,
        "renewed": 0,
        "emails": 0,
        "already_renewed": 0,
    }
    with pytest.raises(RenewalNotDue):  # decades away: an error, not a retry parked in the broker
        tasks.run_renewal.run(month="2099-01")
    monkeypatch.setenv("SOLARIS_KEY_PREFIX", f"task{uuid.uuid4().hex[:8]}")  # see `cli`: the embedded stand-in
    assert tasks.send_report.run(month="2020-01") == {"period": "2020-01", "emailed": 0, "tokens": 0}

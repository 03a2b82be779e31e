"""The delivery task in a REAL Celery worker process (not eager mode), and the app's broker choice.

Embedded backend: `celery -A celery_worker worker -B` exactly as documented, with no broker
configured (the SQLite broker of embedded mode) and the beat schedule driving delivery.
Real backend: a worker on its own redis-server broker and the PostgreSQL ledger; the test enqueues
the task itself. Both wait (bounded polling) for the outbox row to be sent over real SMTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from solaris_tokens.jobs.celery_app import EMBEDDED_BROKER_FILE, broker_url, make_app
from solaris_tokens.notify.outbox import OutboxStatus
from solaris_tokens.runtime import Runtime
from solaris_tokens.settings import Settings
from tests.notify.helpers import SmtpServer, free_port, outbox_rows
from tests.support import FakeClock, need_service

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 120


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLARIS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


class Process:
    """A child process of this test, stopped (by its own pid / process group) at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test only, as the Celery broker (the shared Redis is left alone)."""
    binary = shutil.which("redis-server")
    need_service("redis-server binary", binary is not None, "not on PATH")
    assert binary is not None
    port = free_port()
    server = Process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        clean_env(),
        tmp_path / "redis.log",
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)  # waiting for the server to listen, not for wall-clock time
        yield url
    finally:
        client.close()
        server.stop()


def wait_until_sent(runtime: Runtime, worker: Process) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        rows = outbox_rows(runtime)
        if rows and all(r.status == OutboxStatus.SENT for r in rows):
            return
        assert worker.alive(), worker.output()
        time.sleep(0.2)
    pytest.fail(f"the worker did not send the email; rows: {outbox_rows(runtime)}\n{worker.output()}")


def wait_for_log(worker: Process, marker: str, *, count: int) -> list[str]:
    """The worker's first `count` log lines about the delivery task that contain `marker`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        lines = [
            line
            for line in worker.log.read_text(errors="replace").splitlines()
            if "solaris.email.deliver[" in line and marker in line
        ]
        if len(lines) >= count:
            return lines[:count]
        assert worker.alive(), worker.output()
        time.sleep(0.2)
    pytest.fail(f"the worker logged fewer than {count} '{marker}' lines\n{worker.output()}")


def enqueue(runtime: Runtime, clock: FakeClock) -> None:
    # Due long ago, so the worker's real clock finds it due whatever today's date is.
    clock.set(datetime(2020, 1, 31, 12, 0, tzinfo=UTC))
    user, _ = runtime.ledger.ensure_user("maria.silva@x.com")
    runtime.ledger.enqueue_email(
        recipient="maria.silva@x.com",
        kind="warning",
        dedupe_key="2020-01",
        payload={"used": 800_000, "limit": 1_000_000, "additional": 0, "percent": 80, "period": "2020-01"},
        user_id=user.id,
    )


def smtp_env(smtp: SmtpServer) -> dict[str, str]:
    return {
        "SOLARIS_SMTP_HOST": "127.0.0.1",
        "SOLARIS_SMTP_PORT": str(smtp.port),
        "SOLARIS_SMTP_STARTTLS": "false",
    }


def worker_args(*extra: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "--concurrency=1", "-l", "info", *extra]


@pytest.mark.parametrize("backend", ["embedded"])
async def test_documented_worker_command_delivers_with_beat_and_the_embedded_broker(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    enqueue(runtime, clock)
    s = runtime.settings
    env = clean_env(
        SOLARIS_SQLITE_PATH=str(s.sqlite_path),
        SOLARIS_STATE_DIR=str(s.state_dir),
        SOLARIS_EMAIL_DELIVERY_INTERVAL_SECONDS="1",
        **smtp_env(smtp),
    )
    worker = Process(worker_args("-B", "-s", str(tmp_path / "beat-schedule")), env, tmp_path / "worker.log")
    try:
        wait_until_sent(runtime, worker)
    finally:
        worker.stop()
    assert (s.sqlite_path.parent / EMBEDDED_BROKER_FILE).exists()  # the embedded broker was used
    [mail] = smtp.inbox.received
    assert mail.message["Subject"] == "⚠️ 80% dos seus tokens foram utilizados"
    assert "Você já utilizou 800.000 dos seus 1.000.000 tokens mensais." in mail.text


@pytest.mark.parametrize("backend", ["real"])
async def test_delivery_task_enqueued_on_redis_runs_in_a_real_worker(
    runtime: Runtime, clock: FakeClock, smtp: SmtpServer, own_redis: str, tmp_path: Path
) -> None:
    enqueue(runtime, clock)
    database_url = runtime.engine.url.render_as_string(hide_password=False)
    env = clean_env(SOLARIS_CELERY_BROKER_URL=own_redis, SOLARIS_DATABASE_URL=database_url, **smtp_env(smtp))
    worker = Process(worker_args(), env, tmp_path / "worker.log")
    app = make_app(Settings(celery_broker_url=own_redis))
    try:
        app.send_task("solaris.email.deliver")
        wait_until_sent(runtime, worker)
        app.send_task("solaris.email.deliver")  # a second run finds nothing left to send
        # Stop only once it has finished: an empty queue means taken, not done, and stopping the
        # worker mid-task interrupted its database connection (a flaky failure seen in CI).
        done = wait_for_log(worker, "succeeded", count=2)
        assert "{'sent': 0, 'retried': 0, 'failed': 0}" in done[1]
    finally:
        app.close()
        worker.stop()
    assert "solaris.email.deliver" in worker.output()
    assert len(smtp.inbox.received) == 1
    [row] = outbox_rows(runtime)
    assert row.attempts == 1


def test_broker_comes_from_settings_and_embedded_mode_needs_no_server(tmp_path: Path) -> None:
    assert broker_url(Settings(celery_broker_url="redis://broker:6379/3", redis_url="redis://r/0")) == (
        "redis://broker:6379/3"
    )
    assert broker_url(Settings(redis_url="redis://r:6379/0")) == "redis://r:6379/0"
    embedded = broker_url(Settings(sqlite_path=tmp_path / "ledger.db"))
    assert embedded == f"sqla+sqlite:///{tmp_path / EMBEDDED_BROKER_FILE}"
    schedule = make_app(Settings(sqlite_path=tmp_path / "l.db")).conf.beat_schedule
    assert schedule["deliver-emails"]["task"] == "solaris.email.deliver"


def test_importing_the_worker_module_starts_nothing(tmp_path: Path) -> None:
    """Before: importing celery_app started the embedded Redis stand-in (a thread and a marker file)."""
    probe = (
        "import threading, celery_worker; "
        "print(celery_worker.app.conf.broker_url); "
        "print(sorted(t.name for t in threading.enumerate()))"
    )
    env = clean_env(SOLARIS_STATE_DIR=str(tmp_path / "state"), SOLARIS_SQLITE_PATH=str(tmp_path / "l.db"))
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    broker, threads = out.stdout.strip().splitlines()
    assert broker.startswith("sqla+sqlite:///")
    assert threads == "['MainThread']"
    assert not (tmp_path / "state").exists()

"""Monthly renewal benchmark (issue 6) on the real Redis and PostgreSQL of this machine.

Seeds a fresh database in bulk with COPY (not through the request path): N active users, three
November requests each plus one in October, a purchase credit for one user in ten, warning alerts
for one in twenty. Then, with the clock at 2026-12-01 00:05 UTC:

1. the renewal of November: wall time, users/s and rows/s (summaries + audit events + outbox
   emails), the peak resident memory added while it runs (it works in batches: the figure must not
   grow with N), and a check that every user has exactly one summary, one event and one email;
2. the same renewal again (what a second beat or a re-run by hand costs: nothing is written);
3. the admins' monthly report of the same month over the same users.

Bounded: the whole run has a deadline (--deadline, default 600 s) and the database and Redis keys
it creates are dropped at the end. Goal: renewal of 100,000 users in <= 60 s.

Usage: .venv/bin/python bench/bench_renewal.py [--users 100000] [--batch 1000] [--deadline 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from solaris_tokens.counters.connect import async_client
from solaris_tokens.ledger.database import make_engine, upgrade
from solaris_tokens.policy import Period
from solaris_tokens.renewal import RenewalJob
from solaris_tokens.report import ReportBuilder
from solaris_tokens.runtime import build_runtime
from solaris_tokens.settings import Settings

REDIS_URL = os.environ.get("SOLARIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = os.environ.get("SOLARIS_BENCH_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
NOVEMBER = Period(2026, 11)
NOW = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
REQUESTS_PER_USER = 3
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")


def seed(dsn: str, users: int) -> dict[str, int]:
    """Bulk-load the ledger with COPY; returns row counts."""
    created = datetime(2026, 9, 1, tzinfo=UTC)
    counts = {"users": users, "usage_entries": 0, "credit_entries": 0, "outbox": 0}
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY users (email, name, plan, status, suspend_reason, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(1, users + 1):
                copy.write_row(
                    (
                        f"user{i}@bench.x",
                        f"User {i}",
                        "power" if i % 10 == 0 else "basic",
                        "active",
                        "",
                        created,
                        created,
                    )
                )
        with cur.copy(
            "COPY usage_entries (reservation_id, user_id, call_id, model, prompt_tokens, completion_tokens,"
            " monthly_tokens, additional_tokens, period, outcome, settled_at) FROM STDIN"
        ) as copy:
            for i in range(1, users + 1):
                for k in range(REQUESTS_PER_USER):
                    prompt, completion = 200 + (i * 7 + k) % 900, 100 + (i * 13 + k) % 400
                    at = datetime(2026, 11, 1 + (i + 9 * k) % 30, (i + k) % 24, tzinfo=UTC)
                    copy.write_row(
                        (
                            f"n{i}-{k}",
                            i,
                            f"c{i}-{k}",
                            MODELS[(i + k) % 3],
                            prompt,
                            completion,
                            prompt + completion,
                            0,
                            "2026-11",
                            "settled",
                            at,
                        )
                    )
                copy.write_row(
                    (
                        f"o{i}",
                        i,
                        f"o{i}",
                        MODELS[i % 3],
                        300,
                        150,
                        450,
                        0,
                        "2026-10",
                        "settled",
                        datetime(2026, 10, 1 + i % 31, tzinfo=UTC),
                    )
                )
                counts["usage_entries"] += REQUESTS_PER_USER + 1
        with cur.copy(
            "COPY credit_entries (user_id, kind, amount, idempotency_key, actor, reason, created_at) FROM STDIN"
        ) as copy:
            for i in range(10, users + 1, 10):
                copy.write_row((i, "purchase", 500_000, f"p{i}", "admin", "bench", datetime(2026, 11, 5, tzinfo=UTC)))
                counts["credit_entries"] += 1
        with cur.copy(
            "COPY outbox (user_id, recipient, kind, dedupe_key, payload, status, attempts, next_attempt_at,"
            " last_error, created_at) FROM STDIN"
        ) as copy:
            for i in range(20, users + 1, 20):
                at = datetime(2026, 11, 20, tzinfo=UTC)
                copy.write_row((i, f"user{i}@bench.x", "warning", "2026-11", "{}", "sent", 1, at, "", at))
                counts["outbox"] += 1
        conn.commit()
        conn.execute("ANALYZE")
    return counts


class PeakRss:
    """Samples this process's resident memory in a thread; `peak - start` is what a phase added."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


async def run(users: int, batch: int) -> None:
    db = f"solaris_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    prefix = f"benchr{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=REDIS_URL, database_url=dsn, key_prefix=prefix, renewal_batch_size=batch)
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        started = time.perf_counter()
        seeded = seed(dsn, users)
        print(
            f"seeded with COPY in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{n:,} {t}" for t, n in seeded.items())
        )

        rt = build_runtime(settings, engine=engine, migrate=False, clock=lambda: NOW)
        try:
            job = RenewalJob(rt)
            with PeakRss() as memory:
                started = time.perf_counter()
                result = await job.run(NOVEMBER)
                elapsed = time.perf_counter() - started
            summaries = count(dsn, "SELECT count(*) FROM period_summaries WHERE period = '2026-11'")
            emails = count(dsn, "SELECT count(*) FROM outbox WHERE kind = 'renewal' AND dedupe_key = '2026-12'")
            events = count(dsn, "SELECT count(*) FROM audit_log WHERE action = 'renewal'")
            assert result.renewed == result.emails == users, result
            assert summaries == emails == events == users, (summaries, emails, events)
            mismatched = count(
                dsn,
                "SELECT count(*) FROM period_summaries s JOIN (SELECT user_id, sum(monthly_tokens) AS used,"
                " count(*) AS n FROM usage_entries WHERE period = '2026-11' GROUP BY user_id) u USING (user_id)"
                " WHERE s.used <> u.used OR s.requests <> u.n",
            )
            assert mismatched == 0, mismatched
            rows = summaries + emails + events
            print(f"\nrenewal of {users:,} users (batches of {batch:,}): {elapsed:.2f} s wall")
            print(f"  {users / elapsed:10,.0f} users/s")
            print(
                f"  {rows / elapsed:10,.0f} rows/s   ({summaries:,} summaries + {events:,} events + {emails:,} emails)"
            )
            print(f"  {memory.added_mib:10.1f} MiB peak resident memory added while it ran")
            print(f"  goal <= 60 s: {'met' if elapsed <= 60 else 'MISSED'}")

            started = time.perf_counter()
            again = await job.run(NOVEMBER)
            print(
                f"\nsame renewal again: {time.perf_counter() - started:.2f} s, {again.renewed} written "
                f"({again.already_renewed:,} already renewed)"
            )
            assert again.renewed == 0

            builder = ReportBuilder(engine, rt.ledger, settings)
            with PeakRss() as memory:
                started = time.perf_counter()
                report = await asyncio.to_thread(builder.build, NOVEMBER, NOW + timedelta(minutes=25))
                csv_text = report.to_csv()
                elapsed = time.perf_counter() - started
            ledger_tokens = count(
                dsn, "SELECT sum(prompt_tokens + completion_tokens) FROM usage_entries WHERE period = '2026-11'"
            )
            assert report.totals.tokens == ledger_tokens, (report.totals.tokens, ledger_tokens)
            print(
                f"\nmonthly report of {len(report.users):,} users: {elapsed:.2f} s"
                f" (CSV {len(csv_text) / 2**20:.1f} MiB, {memory.added_mib:.0f} MiB peak added);"
                f" totals equal the ledger ({ledger_tokens:,} tokens)"
            )
        finally:
            redis = async_client(REDIS_URL, settings)
            keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
            await rt.aclose()
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--deadline", type=float, default=600.0, help="Abort the whole run after this many seconds.")
    args = parser.parse_args()
    async with asyncio.timeout(args.deadline):
        await run(args.users, args.batch)


if __name__ == "__main__":
    asyncio.run(main())

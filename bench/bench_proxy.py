"""End to end: the same LiteLLM proxy with and without the solaris-tokens callback.

Two proxies run side by side against one fake OpenAI-compatible upstream (its own process, fixed
usage): A with the callback (real Redis, fresh PostgreSQL ledger — or SQLite when PostgreSQL is
not reachable), B without. Runs are interleaved A B A B … (the order flips every round) because two
identical proxies differ by ±10% from one round to the next on a shared 2-core machine; every
figure is a median over the rounds.

Per round and proxy:
- throughput at concurrency 20 (requests / wall second);
- proxy CPU per request, from the process's own accounting (/proc/<pid>/stat utime + stime);
- latency at concurrency 1 (p50, p99).

    .venv/bin/python bench/bench_proxy.py [--rounds 7] [--requests 1000] [--sequential 100]
                                          [--flusher proxy|worker|worker-live] [--noop] [--no-pin]
                                          [--variant NAME ...] (see bench/variant_spec.py)
                                          [--plugin-env NAME=VALUE ...] [--toggled-only]
                                          [--no-twice] [--reverse-start] [--fresh]
                                          [--gc-stats] [--no-gc] [--perf [--perf-events EVENT,...]]
                                          [--concurrent [--window-seconds 20]] [--without-plugin]

`--flusher worker` runs the plugin's proxy with SOLARIS_PROXY_FLUSH_LEDGER=false and drains the
ledger streams from this script between measurement windows, as Celery beat does on the worker's
machine in production; its cost per entry is printed apart. `--flusher worker-live` drains every
second during the windows instead: on this 2-core machine that work (and PostgreSQL's) then
competes with the load generator and the proxies.
`--noop` adds a third proxy whose callback does nothing, to show LiteLLM's own callback cost.
`--variant NAME` (repeatable) adds a proxy running only part of the plugin
(bench/variant_callbacks.py: imported, preloaded, started, ping, ping-nowait, admit, admit-ping, full,
toggled), to trace a difference to a part; `--variant plugin` / `plugin-module` add the full plugin
again in another process (a control);
`--plugin-env NAME=VALUE` adds the full plugin with one setting changed. `--toggled-only` runs one
proxy alone, the plugin's hooks working and idle in alternating windows (`x-bench-idle`): the
plugin's per-request share with no difference between processes in it. Next to the median CPU
ratio, the 95% bootstrap interval over rounds and the ratio of means are printed: on this machine
one process's speed moves by ±20% from window to window, so read them over ≥ 16 short rounds
(`--requests 300`).
The first proxy started has measured slower than identical proxies started after it, so by
default (`--twice`) each configuration runs in two processes started A B B A (with, without,
without-2, with-2) and the ratios compare the means of the pairs, round by round;
`--reverse-start` starts them in reverse order. `--fresh` starts new processes every round
instead (alternating which starts first, each warmed up before it is measured): whatever a
process's start gives it then varies across rounds rather than favouring one configuration.
`--gc-stats` loads `bench/gc_probe.py` in every proxy and reports the garbage collector's CPU per
request beside the total (and the CPU ratio without it); `--no-gc` turns the collector off in
every proxy, to compare the rest without GC's noise (a full collection of LiteLLM's heap costs ≈ 0.3 s).
`--perf` counts every proxy's instructions and cycles (user and kernel mode) per request over each
window with `perf stat -p`, and prints their ratios like the CPU ratio's: instructions retired
barely move with the machine's noise (±0.1% between windows where CPU time moves by ±20%), so
they tell a process doing more work per request from the same work running slower.
`--perf-events dTLB-load-misses,iTLB-load-misses,...` counts more events the same way (to find
what makes the same instructions take more cycles).
`--concurrent` loads every proxy of a round at once (concurrency 20 each) on the same CPU and
reads each one's CPU per request over one common window: whatever the machine does meanwhile
falls on all of them alike (with --fresh and 4–5 proxies, per-round CPU ratios stayed within
±1% where the interleaved windows moved by ±20%). The scheduler splits the CPU evenly, so the
throughput ratio there mirrors the CPU ratio; c=1 latency is still measured one proxy at a time.
Every window also reports the proxy's busy share and, interleaved, Redis reads per request.
`--pin` (the default on a machine with two or more CPUs) runs the proxies on the last CPU and
this script, its load, the fake upstream and the worker flusher on the others, so a proxy's CPU
time and throughput are not disturbed by the processes that drive it; the threads of a local
Redis and PostgreSQL are moved to the other CPUs too for the run, and put back afterwards (in
production they are other machines; if the script is killed, `taskset -a -pc 0-<last> <pid>` puts
them back). `--no-pin` leaves everything to the scheduler.

Goals (issue 3): throughput ratio ≥ 0.95, CPU ratio ≤ 1.05, added p50 ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.variant_spec import IDLE_HEADER, VARIANTS  # noqa: E402
from solaris_tokens.runtime import build_runtime  # noqa: E402
from solaris_tokens.settings import Settings  # noqa: E402
from tests.e2e.conftest import fresh_database, solaris_env  # noqa: E402
from tests.e2e.proxy import ProxyProcess, proxy_config  # noqa: E402
from tests.e2e.upstream import free_port  # noqa: E402
from tests.support import REAL_REDIS_URL, drop_redis_keys, postgres_reachable, real_redis_settings  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_SITE = REPO / "bench" / "proxy_site"  # its sitecustomize: GC probe, preloaded modules
NOOP_CALLBACK = "bench.noop_callback.handler"
VARIANT_CALLBACK = "bench.variant_callbacks.handler"
TOGGLED, TOGGLED_IDLE = "toggled", "toggled, idle"  # one process, its hooks' work on / off (x-bench-idle)
# Controls: the full plugin again in another process, registered as `with` is (the instance path,
# started once the probe's 401 answered) or as README documents it (the module path, no probe).
CONTROLS: dict[str, bool | str] = {"plugin": True, "plugin-module": "solaris_tokens.proxy.handler"}
USERS = [f"bench{i}@example.com" for i in range(50)]
BODY = {
    "model": "fake-ok",
    "messages": [
        {"role": "system", "content": "Você é a IA SOLARIS, uma assistente prestativa."},
        {"role": "user", "content": "Resuma em uma frase o que é um proxy de LLM."},
    ],
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (the litellm proxy runs uvicorn in its own process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Runs:
    throughput: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)  # status codes of non-200 answers
    # share of the c=20 window the proxy spent on a CPU, and the share the other CPUs were busy
    # (the load generator, the upstream, Redis, PostgreSQL): which side limits the throughput
    busy: list[float] = field(default_factory=list)
    others_busy: list[float] = field(default_factory=list)
    # reads Redis made per request in the c=20 window (≈ the proxy's writes to it: the round trips)
    redis_reads: list[float] = field(default_factory=list)
    gc_ms: list[float] = field(default_factory=list)  # with --gc-stats: collector CPU per request
    # with --perf: hardware counters per request (thousands), user and kernel mode, from `perf stat`
    counters: dict[str, list[float]] = field(default_factory=dict)


async def chat(
    client: httpx.AsyncClient, url: str, key: str, i: int, extra_headers: dict[str, str] | None = None
) -> httpx.Response:
    """The benchmark's request number `i` (users taken in turn)."""
    headers = {"Authorization": f"Bearer {key}", "X-User-Email": USERS[i % len(USERS)], **(extra_headers or {})}
    return await client.post(url + "/v1/chat/completions", json=BODY, headers=headers)


async def load(
    client: httpx.AsyncClient,
    url: str,
    key: str,
    total: int,
    concurrency: int,
    errors: list[int] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> list[float]:
    """`total` requests with `concurrency` in flight; returns each answered request's latency in seconds.

    Non-200 answers are counted in `errors` (status codes) and reported, not retried."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            response = await chat(client, url, key, i, extra_headers)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            elif errors is not None:
                errors.append(response.status_code)
            else:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def cpu_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks so far of these CPUs, from /proc/stat (idle and iowait are not busy)."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in values[:8]]
            all_ticks = sum(ticks)
            total += all_ticks
            busy += all_ticks - ticks[3] - ticks[4]
    return busy, total


def redis_reads() -> int:
    """Reads the real Redis has made so far (INFO stats): only one proxy is loaded at a time, so a
    window's difference is that proxy's writes to Redis."""
    client = redis.Redis.from_url(REAL_REDIS_URL)
    try:
        return int(client.info("stats")["total_reads_processed"])
    finally:
        client.close()


def load_client() -> httpx.AsyncClient:
    """The load generator's client: enough pooled connections for concurrency 20."""
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))


async def warm_up(proxy: ProxyProcess, requests: int) -> None:
    """A fresh proxy's first requests pay for lazy imports and cold caches: not measured."""
    async with load_client() as client:
        await load(client, proxy.url, proxy.master_key, requests, 20)


def gc_seconds(proxy: ProxyProcess, directory: Path) -> float:
    """CPU seconds the proxy's collector has spent so far, as its probe (bench/gc_probe.py) writes
    them on SIGUSR2."""
    path = directory / f"gc-{proxy.pid}.json"
    path.unlink(missing_ok=True)
    os.kill(proxy.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proxy.url}: no GC figures (is bench/proxy_site on its PYTHONPATH?)")
        time.sleep(0.02)
    return float(sum(json.loads(path.read_text())["cpu_seconds"]))


PERF_EVENTS = ("instructions:u", "cycles:u", "instructions:k", "cycles:k")


@dataclass(frozen=True)
class PerfSpec:
    """`--perf`: where `perf stat` writes, and what it counts (PERF_EVENTS + `--perf-events`)."""

    directory: Path
    events: tuple[str, ...] = PERF_EVENTS


@contextmanager
def perf_counters(pid: int, spec: PerfSpec, requests: int, into: dict[str, list[float]]) -> Iterator[None]:
    """Count the proxy's instructions and cycles (all its threads) with `perf stat` over a window.

    Instructions retired barely move with what else the machine runs, unlike CPU time (±20% from
    one window to the next here): an instruction ratio tells whether a process does more work per
    request, a cycle ratio at the same instruction count that the same work ran slower.
    """
    output = spec.directory / f"perf-{pid}.csv"
    events = ",".join(spec.events)
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", str(output)])
    time.sleep(0.2)  # perf attaches to every thread of the process before the window starts
    try:
        yield
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(10)
    counted: dict[str, float] = {}
    for line in output.read_text().splitlines():
        cells = line.split(",")
        if len(cells) > 2 and cells[2] in spec.events:
            if not cells[0].isdigit():
                raise RuntimeError(f"perf stat could not count {cells[2]} in process {pid}: {line}")
            counted[cells[2]] = int(cells[0]) / requests / 1000
    for event in spec.events:
        into.setdefault(event, []).append(counted[event])


async def one_run(
    proxy: ProxyProcess,
    runs: Runs,
    requests: int,
    sequential: int,
    gc_dir: Path | None = None,
    headers: dict[str, str] | None = None,
    perf: PerfSpec | None = None,
) -> None:
    async with load_client() as client:
        await load(client, proxy.url, proxy.master_key, len(USERS), 5)  # warm connections; users provisioned
        gc0 = gc_seconds(proxy, gc_dir) if gc_dir else 0.0
        with ExitStack() as counting:
            if perf:
                counting.enter_context(perf_counters(proxy.pid, perf, requests, runs.counters))
            others = set(os.sched_getaffinity(0))  # with --pin: every CPU but the proxies'
            calibrating = redis_reads()
            reads0 = redis_reads()
            own_reads = reads0 - calibrating  # what one INFO call itself adds
            cpu0, wall0, jiffies0 = cpu_seconds(proxy.pid), time.perf_counter(), cpu_jiffies(others)
            await load(client, proxy.url, proxy.master_key, requests, 20, runs.errors, headers)
            wall = time.perf_counter() - wall0
            window_cpu, jiffies = cpu_seconds(proxy.pid) - cpu0, cpu_jiffies(others)
            await asyncio.sleep(0.5)  # let the success callbacks queued behind the responses run
            runs.redis_reads.append((redis_reads() - reads0 - own_reads) / requests)
            cpu = cpu_seconds(proxy.pid) - cpu0
        if gc_dir:
            runs.gc_ms.append((gc_seconds(proxy, gc_dir) - gc0) / requests * 1000)
        latencies = sorted(await load(client, proxy.url, proxy.master_key, sequential, 1, runs.errors, headers))
    runs.throughput.append(requests / wall)
    runs.busy.append(window_cpu / wall)
    runs.others_busy.append((jiffies[0] - jiffies0[0]) / max(1, jiffies[1] - jiffies0[1]))
    runs.cpu_ms.append(cpu / requests * 1000)
    record_latencies(runs, latencies)


def record_latencies(runs: Runs, latencies: list[float]) -> None:
    """p50 and p99 (ms) of a window's sorted c=1 latencies (seconds)."""
    runs.p50_ms.append(statistics.median(latencies) * 1000)
    runs.p99_ms.append(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)


async def load_until(
    client: httpx.AsyncClient, proxy: ProxyProcess, stop: asyncio.Event, answered: list[int], errors: list[int]
) -> None:
    """Concurrency-20 load on one proxy until `stop`; counts 200 answers in `answered[0]`."""
    sent = iter(range(1 << 62))

    async def worker() -> None:
        while not stop.is_set():
            response = await chat(client, proxy.url, proxy.master_key, next(sent))
            if response.status_code == 200:
                answered[0] += 1
            else:
                errors.append(response.status_code)

    await asyncio.gather(*(worker() for _ in range(20)))


async def concurrent_window(proxies: list[tuple[ProxyProcess, Runs]], seconds: float, ramp: float = 2.0) -> None:
    """`--concurrent`: load every proxy at once, each at concurrency 20, on the same CPU.

    The proxies then share that CPU over the same seconds, so whatever the machine does meanwhile
    (its speed here moves by ±20% from one window to the next) falls on all of them alike, and
    the CPU per request of each is read over one common window (after a ramp, before any load
    stops). Throughput here is each proxy's share of the CPU, so its ratio mirrors the CPU ratio.
    """
    stop = asyncio.Event()
    answered = [[0] for _ in proxies]
    async with load_client() as client:
        for proxy, _ in proxies:  # warm connections; users provisioned
            await load(client, proxy.url, proxy.master_key, len(USERS), 5)
        loads = [
            asyncio.ensure_future(load_until(client, proxy, stop, count, runs.errors))
            for (proxy, runs), count in zip(proxies, answered, strict=True)
        ]
        await asyncio.sleep(ramp)
        counts0 = [count[0] for count in answered]
        cpu0, wall0 = [cpu_seconds(proxy.pid) for proxy, _ in proxies], time.perf_counter()
        await asyncio.sleep(seconds)
        counts = [count[0] for count in answered]
        cpu, wall = [cpu_seconds(proxy.pid) for proxy, _ in proxies], time.perf_counter()
        stop.set()
        await asyncio.gather(*loads)
    for (_, runs), c0, c1, t0, t1 in zip(proxies, counts0, counts, cpu0, cpu, strict=True):
        done = max(1, c1 - c0)
        runs.throughput.append(done / (wall - wall0))
        runs.cpu_ms.append((t1 - t0) / done * 1000)
        runs.busy.append((t1 - t0) / (wall - wall0))
        runs.others_busy.append(float("nan"))
        runs.redis_reads.append(float("nan"))  # every proxy at once: not told apart


async def latency_run(proxy: ProxyProcess, runs: Runs, sequential: int) -> None:
    """`--concurrent`: the c=1 latency, one proxy at a time (a latency under shared CPU means little)."""
    async with load_client() as client:
        await load(client, proxy.url, proxy.master_key, 5, 1)
        latencies = sorted(await load(client, proxy.url, proxy.master_key, sequential, 1, runs.errors))
    record_latencies(runs, latencies)


@contextmanager
def live_worker_flusher(settings: Settings) -> Iterator[None]:
    """`--flusher worker-live`: drain the ledger streams every second from a thread of this script,
    during the measurements too (on this 2-core machine, that work competes with the load and the proxy)."""
    stop = threading.Event()

    def run() -> None:
        async def loop() -> None:
            runtime = build_runtime(settings)
            try:
                while not stop.is_set():
                    await runtime.flusher.drain()
                    await asyncio.sleep(1.0)
            finally:
                await runtime.aclose()

        asyncio.run(loop())

    thread = threading.Thread(target=run, name="bench-worker-flusher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


class BetweenWindowsFlusher:
    """`--flusher worker`: what Celery beat's `solaris.ledger.flush` does on the worker's machine,
    run here between measurement windows so its work (and PostgreSQL's) is not charged to either
    proxy on a machine they share; its own cost is measured and reported instead."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime = build_runtime(settings)
        self.entries = 0
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0

    def drain(self) -> None:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        self.entries += self.loop.run_until_complete(self.runtime.flusher.drain())
        self.cpu_seconds += time.process_time() - cpu0
        self.wall_seconds += time.perf_counter() - wall0

    def close(self) -> None:
        self.loop.run_until_complete(self.runtime.aclose())
        self.loop.close()


SERVERS = ("redis-server", "postgres")


def pin_local_servers(cpus: set[int]) -> dict[int, set[int]]:
    """Move every thread of the local Redis and PostgreSQL servers to `cpus` (so their work never
    lands on the proxies' CPU); returns the previous affinities for `restore_affinities`."""
    previous: dict[int, set[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() not in SERVERS:
                continue
            for task in (proc / "task").iterdir():
                tid = int(task.name)
                before = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cpus)
                previous[tid] = before
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to move
    return previous


def restore_affinities(previous: dict[int, set[int]]) -> None:
    for tid, cpus in previous.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue


def median(values: list[float]) -> float:
    return statistics.median(values)


def figures(runs: Runs, name: str) -> list[float]:
    """One figure per window: a field of `Runs`, or a `perf stat` event's count per request."""
    return runs.counters[name] if name in runs.counters else list(getattr(runs, name))


def per_round(group: list[Runs], attr: str) -> list[float]:
    """One figure per round for a configuration: the mean over its processes."""
    series = [figures(runs, attr) for runs in group]
    return [statistics.fmean(values) for values in zip(*series, strict=True)]


def bootstrap_interval(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of the median of `values` (seeded: reruns print the same)."""
    rng = random.Random(0)
    medians = sorted(median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]


def cpu_spread(a: list[Runs], b: list[Runs], attr: str = "cpu_ms") -> str:
    """How far the CPU ratio can be trusted: the 95% interval of its median over rounds, and the
    ratio of the mean CPU per request (per-round figures are skewed; means weigh every request)."""
    ratios = [x / y for x, y in zip(per_round(a, attr), per_round(b, attr), strict=True)]
    low, high = bootstrap_interval(ratios)
    means = statistics.fmean(per_round(a, attr)) / statistics.fmean(per_round(b, attr))
    return f"(95% interval {low:.3f}–{high:.3f} over {len(ratios)} rounds; ratio of means {means:.3f})"


def compare(a: list[Runs], b: list[Runs]) -> tuple[float, float, float, float]:
    """Medians over rounds of a ÷ b: throughput ratio, CPU ratio, added p50 and p99 (ms)."""

    def paired(attr: str, op: Callable[[float, float], float]) -> float:
        return median([op(x, y) for x, y in zip(per_round(a, attr), per_round(b, attr), strict=True)])

    return (
        paired("throughput", operator.truediv),
        paired("cpu_ms", operator.truediv),
        paired("p50_ms", operator.sub),
        paired("p99_ms", operator.sub),
    )


def counter_ratios(runs: dict[str, Runs], a: list[Runs], b: list[Runs], events: tuple[str, ...]) -> None:
    """`--perf`: instructions and cycles per request, with ÷ without, every other proxy ÷ without,
    and the toggled process's working ÷ idle windows."""
    pairs: list[tuple[str, list[Runs], list[Runs]]] = [("with ÷ without", a, b)] if a and b else []
    pairs += [(f"{name} ÷ without", [r], b) for name, r in runs.items() if b and all(r is not o for o in a + b)]
    if TOGGLED in runs:
        pairs.append((f"{TOGGLED} working ÷ idle", [runs[TOGGLED]], [runs[TOGGLED_IDLE]]))
    for label, x, y in pairs:
        for event in events:
            if not all(per_round(y, event)):  # e.g. an event this PMU counts as 0 in a VM
                print(f"{label}, {event:15s} no ratio: the baseline counted 0 in a window")
                continue
            ratio = median([p / q for p, q in zip(per_round(x, event), per_round(y, event), strict=True)])
            print(f"{label}, {event:15s} {ratio:.3f} {cpu_spread(x, y, event)}")


def perf_events(args: argparse.Namespace) -> tuple[str, ...]:
    return (*PERF_EVENTS, *args.perf_events)


def with_setting(setting: str) -> str:
    """The name of the proxy `--plugin-env NAME=VALUE` adds."""
    return f"with {setting}"


def report(args: argparse.Namespace, runs: dict[str, Runs], between: BetweenWindowsFlusher | None, ledger: str) -> None:
    """The summary after the rounds: medians per configuration, then the ratios against `without`."""
    a = [r for name, r in runs.items() if name in ("with", "with-2")]
    b = [r for name, r in runs.items() if name in ("without", "without-2")]
    print()
    print(f"{args.rounds} interleaved rounds; ledger: {ledger}; medians over rounds")
    widths = {name: max(16, len(name) + 2) for name in runs}  # --plugin-env names are long
    print(f"{'':28s}" + "".join(f"{name:>{widths[name]}s}" for name in runs))
    for label, attr, decimals in (
        ("throughput, c=20 (req/s)", "throughput", 1),
        ("proxy CPU per request (ms)", "cpu_ms", 2),
        ("latency p50, c=1 (ms)", "p50_ms", 2),
        ("latency p99, c=1 (ms)", "p99_ms", 2),
        ("proxy busy, c=20 (share)", "busy", 3),
        ("other CPUs busy, c=20", "others_busy", 3),
        ("Redis reads per request", "redis_reads", 2),
        *([("GC CPU per request (ms)", "gc_ms", 3)] if args.gc_stats else []),
        *([(f"{event} per request (k)", event, 1) for event in perf_events(args)] if args.perf else []),
    ):
        row = (f"{median(figures(r, attr)):{widths[name]}.{decimals}f}" for name, r in runs.items())
        print(f"{label:28s}" + "".join(row))
    for name, r in runs.items():
        if r.errors:
            print(f"{name}: {len(r.errors)} non-200 answers: {sorted(set(r.errors))}")
    if between is not None and between.entries:
        print(
            f"worker flush, between windows: {between.entries} ledger entries, "
            f"{between.cpu_seconds / between.entries * 1e6:.0f} µs CPU per entry in this script "
            f"({between.entries / between.wall_seconds:,.0f} entries/s), not charged to the proxy"
        )
    if a and b:
        tp_ratio, cpu_ratio, added_p50, added_p99 = compare(a, b)
        print(f"throughput ratio (with ÷ without) {tp_ratio:.3f}   (goal ≥ 0.95)")
        print(f"CPU ratio (with ÷ without)        {cpu_ratio:.3f}   (goal ≤ 1.05)  {cpu_spread(a, b)}")
        if args.gc_stats:
            a_rest = [c - g for c, g in zip(per_round(a, "cpu_ms"), per_round(a, "gc_ms"), strict=True)]
            b_rest = [c - g for c, g in zip(per_round(b, "cpu_ms"), per_round(b, "gc_ms"), strict=True)]
            added_gc = median([x - y for x, y in zip(per_round(a, "gc_ms"), per_round(b, "gc_ms"), strict=True)])
            rest_ratio = median([x / y for x, y in zip(a_rest, b_rest, strict=True)])
            print(f"  of which GC: {added_gc:+.3f} ms per request; CPU ratio without GC time {rest_ratio:.3f}")
        print(f"added latency p50 {added_p50:+.2f} ms (goal ≤ 1 ms), p99 {added_p99:+.2f} ms")
    if args.perf:
        counter_ratios(runs, a, b, perf_events(args))
    main_pair = ("with", "with-2", "without", "without-2", TOGGLED, TOGGLED_IDLE)
    for name, other in runs.items():  # variants, the no-op callback, --plugin-env proxies
        if name in main_pair or not b:
            continue
        tp, cpu, p50, _ = compare([other], b)
        print(
            f"{name} ÷ without: throughput ratio {tp:.3f}, CPU ratio {cpu:.3f} "
            f"{cpu_spread([other], b)}, added p50 {p50:+.2f} ms"
        )
    if TOGGLED in runs:
        working, idle = [runs[TOGGLED]], [runs[TOGGLED_IDLE]]
        tp, cpu, p50, p99 = compare(working, idle)
        print(
            f"{TOGGLED} (one process, hooks working ÷ idle): throughput ratio {tp:.3f}, CPU ratio {cpu:.3f} "
            f"{cpu_spread(working, idle)}, added p50 {p50:+.2f} ms, p99 {p99:+.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="requests per throughput run (concurrency 20); ~1,000 spans about one full garbage "
        "collection of LiteLLM's heap (≈ 0.3 s), so a round does not hinge on whether one fell in it",
    )
    parser.add_argument("--sequential", type=int, default=100, help="requests per latency run (concurrency 1)")
    parser.add_argument(
        "--noop", action="store_true", help="add a third proxy whose callback does nothing (LiteLLM's own share)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=[*VARIANTS, *CONTROLS],
        default=[],
        help="add a proxy running only part of the plugin (bench/variant_callbacks.py); repeatable",
    )
    parser.add_argument(
        "--flusher",
        choices=["proxy", "worker", "worker-live"],
        default="proxy",
        help="where the ledger flusher runs: in the proxy (default settings), or in a worker "
        "(SOLARIS_PROXY_FLUSH_LEDGER=false) played by this script between windows (worker) or "
        "every second during them (worker-live)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="proxies on the last CPU, everything this script starts on the others",
    )
    parser.add_argument(
        "--twice",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each configuration in two processes started A B B A, ratios from their means "
        "(the first proxy started measures slower, whatever it runs); --no-twice: one each",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="load bench/gc_probe.py in every proxy and report its garbage-collection CPU per request "
        "(a full collection of LiteLLM's heap costs ≈ 0.3 s and comes every ~1,000 requests: use "
        "--requests 5000 or more for a figure that does not hinge on where they fall)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="turn the garbage collector off in every proxy (takes GC out of the comparison; memory grows)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start new proxy processes every round (in alternating order, warmed up first), so "
        "what a process's start gives it (memory layout, start slot) varies across rounds instead "
        "of favouring one configuration for the whole run; implies --no-twice",
    )
    parser.add_argument(
        "--reverse-start",
        action="store_true",
        help="start the proxies in reverse order (the first one started measured slower, whatever it ran)",
    )
    parser.add_argument(
        "--plugin-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a proxy running the whole plugin with this setting changed (e.g. "
        "SOLARIS_REDIS_WARM_CONNECTIONS=8), to compare a setting side by side; repeatable",
    )
    parser.add_argument(
        "--toggled-only",
        action="store_true",
        help="run only the `toggled` proxy: one process, the plugin's hooks working and idle in "
        "alternating windows (one pair per round); no difference between processes enters the "
        "comparison, so many short rounds give a tight interval",
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="count each proxy's instructions and cycles per request over every window with `perf "
        "stat` (instructions barely move with the machine's noise: they tell more work from slower work)",
    )
    parser.add_argument(
        "--perf-events",
        type=lambda text: [event for event in text.split(",") if event],
        default=[],
        metavar="EVENT,...",
        help="with --perf, count these `perf stat` events too (e.g. dTLB-load-misses,iTLB-load-misses,"
        "cache-misses); more events than the CPU has counters are multiplexed, and scaled by perf",
    )
    parser.add_argument(
        "--without-plugin",
        action="store_true",
        help="leave the full plugin's proxy out: `without` and the --variant proxies only (with "
        "--concurrent, the number of processes sharing the CPU changes what a difference costs); "
        "--plugin-env settings then apply to the variants' service",
    )
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="measure throughput and CPU with every proxy loaded at once on the same CPU, over one "
        "common window of --window-seconds (the machine's drift then falls on all of them alike); "
        "the c=1 latency is still measured one proxy at a time",
    )
    parser.add_argument("--window-seconds", type=float, default=20.0, help="with --concurrent: window length")
    args = parser.parse_args()
    if args.without_plugin and (args.toggled_only or not args.variant):
        parser.error("--without-plugin compares --variant proxies with `without` (not with --toggled-only)")
    if args.concurrent and (args.toggled_only or args.perf or args.gc_stats):
        parser.error("--concurrent does not combine with --toggled-only, --perf or --gc-stats")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if any("=" not in setting for setting in args.plugin_env):
        parser.error("--plugin-env takes NAME=VALUE")
    if args.toggled_only and (args.noop or args.variant or args.plugin_env):
        parser.error("--toggled-only runs the toggled proxy alone")
    proxy_cpus: set[int] | None = None
    moved: dict[int, set[int]] = {}
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        proxy_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by the upstream and the flusher thread
        moved = pin_local_servers(set(cpus[:-1]))
        print(f"proxies on CPU {cpus[-1]}; this script, the upstream and {len(moved)} Redis/PostgreSQL threads off it")

    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.upstream", "--port", str(upstream_port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    with ExitStack() as stack:
        stack.callback(restore_affinities, moved)
        stack.callback(upstream.wait, 10)
        stack.callback(upstream.terminate)
        settings = real_redis_settings(workdir, "bench")
        stack.callback(drop_redis_keys, settings.key_prefix)
        if postgres_reachable()[0]:
            settings.database_url = stack.enter_context(fresh_database())
        env = solaris_env(settings)
        gc_dir = workdir if args.gc_stats or args.no_gc else None
        site_path = {"PYTHONPATH": f"{PROXY_SITE}{os.pathsep}{REPO}"}
        if gc_dir:
            env |= {**site_path, "BENCH_GC_DIR": str(gc_dir)}
            env |= {"BENCH_GC_DISABLE": "1"} if args.no_gc else {}
        plugin_env = env
        between: BetweenWindowsFlusher | None = None
        if args.flusher != "proxy":
            plugin_env = {**env, "SOLARIS_PROXY_FLUSH_LEDGER": "false"}
        if args.without_plugin:  # --plugin-env then sets up the variants' service
            plugin_env = {**plugin_env, **dict(setting.partition("=")[::2] for setting in args.plugin_env)}
        if args.flusher == "worker-live":
            stack.enter_context(live_worker_flusher(settings))
        elif args.flusher == "worker":
            between = BetweenWindowsFlusher(settings)
            stack.callback(between.close)
        configs: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            ("with", proxy_config(upstream_url, shipped_models=False), plugin_env),
            ("without", proxy_config(upstream_url, callback=False, shipped_models=False), env),
        ]
        if args.toggled_only:
            configs = []
            args.variant = [TOGGLED]
        elif args.without_plugin:  # `without` and the variants only: which part brings a difference
            configs = configs[1:]
        if args.twice and not args.fresh and not args.toggled_only and not args.without_plugin:
            # started A B B A: a start-order effect falls on both alike
            configs += [("without-2", configs[1][1], env), ("with-2", configs[0][1], plugin_env)]
        if args.noop:
            noop_config = proxy_config(upstream_url, callback=NOOP_CALLBACK, shipped_models=False)
            configs.append(("no-op callback", noop_config, env))
        for variant in args.variant:
            callback = CONTROLS.get(variant, VARIANT_CALLBACK)
            config = proxy_config(upstream_url, callback=callback, shipped_models=False)
            variant_env = {**plugin_env, "SOLARIS_BENCH_VARIANT": variant}
            if variant == "preloaded":
                variant_env |= {**site_path, "BENCH_PRELOAD": "1"}
            configs.append((variant, config, variant_env))
        for setting in [] if args.without_plugin else args.plugin_env:
            name, _, value = setting.partition("=")
            configs.append((with_setting(setting), configs[0][1], {**plugin_env, name: value}))
        runs = {name: Runs() for name, _, _ in configs}
        if TOGGLED in runs:
            runs[TOGGLED_IDLE] = Runs()

        def start_all(tag: str, reverse: bool) -> list[tuple[ProxyProcess, Runs, str]]:
            started = []
            for name, config, proxy_env in configs[::-1] if reverse else configs:
                proxy = ProxyProcess(workdir / f"{name}{tag}", config, proxy_env, cpus=proxy_cpus)
                stack.callback(proxy.stop)
                proxy.start()
                started.append((proxy, runs[name], name))
            return started[::-1] if reverse else started

        if not args.fresh:
            proxies = start_all("", args.reverse_start)
        for round_no in range(args.rounds):
            if args.fresh:  # new processes every round, started in alternating order
                proxies = start_all(f"-{round_no + 1}", reverse=round_no % 2 == 1)
                for proxy, _, _ in proxies:
                    asyncio.run(warm_up(proxy, args.requests // 5))
            order = proxies if round_no % 2 == 0 else proxies[::-1]
            if args.concurrent:
                asyncio.run(concurrent_window([(proxy, r) for proxy, r, _ in order], args.window_seconds))
                if between is not None:
                    between.drain()
                for proxy, r, _ in order:
                    asyncio.run(latency_run(proxy, r, args.sequential))
            for proxy, r, name in [] if args.concurrent else order:  # interleaved: one proxy at a time
                windows: list[tuple[Runs, dict[str, str] | None]] = [(r, None)]
                if name == TOGGLED:  # the same process, its hooks idle: both windows, in alternating order
                    windows.append((runs[TOGGLED_IDLE], {IDLE_HEADER: "1"}))
                    windows = windows if round_no % 2 == 0 else windows[::-1]
                for window, headers in windows:
                    perf = PerfSpec(workdir, perf_events(args)) if args.perf else None
                    asyncio.run(one_run(proxy, window, args.requests, args.sequential, gc_dir, headers, perf))
                    if between is not None:
                        between.drain()
            print(
                f"round {round_no + 1}: "
                + " | ".join(
                    f"{name} {r.throughput[-1]:6.1f} req/s {r.cpu_ms[-1]:5.2f} ms CPU p50 {r.p50_ms[-1]:5.2f} ms"
                    f" busy {r.busy[-1]:.2f}/{r.others_busy[-1]:.2f}"
                    + (f" {r.counters['instructions:u'][-1]:6.0f}k instr" if r.counters else "")
                    for name, r in runs.items()
                ),
                flush=True,
            )
            if args.fresh:
                for proxy, _, _ in proxies:
                    proxy.stop()
        ledger = ("PostgreSQL" if settings.database_url else "SQLite") + f", flusher in the {args.flusher}"
        ledger += f"; proxies pinned to CPU {sorted(proxy_cpus)}" if proxy_cpus else "; no CPU pinning"
        report(args, runs, between, ledger)


if __name__ == "__main__":
    main()

"""The batching of settles: when a batch runs, and that a shutting-down loop still settles it."""

from __future__ import annotations

import asyncio

from solaris_tokens.proxy.settle_queue import SettleQueue


class Recorder:
    """A settle function that notes which items ran together (one loop turn = one batch)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.done = asyncio.Event()
        self._turn: list[int] | None = None

    async def settle(self, item: int) -> None:
        if self._turn is None:
            self._turn = []
            self.batches.append(self._turn)
            asyncio.get_running_loop().call_soon(self._end_turn)
        self._turn.append(item)
        self.done.set()

    def _end_turn(self) -> None:
        self._turn = None


async def test_items_of_one_window_run_together_after_it() -> None:
    recorder = Recorder()
    queue: SettleQueue[int] = SettleQueue(recorder.settle, window=0.01, limit=100)
    for item in range(5):
        queue.put(item)
    assert recorder.batches == [] and len(queue) == 5  # nothing runs inside the hook
    await asyncio.wait_for(recorder.done.wait(), timeout=10)
    await queue.drain()
    assert recorder.batches == [[0, 1, 2, 3, 4]]


async def test_a_full_batch_runs_without_waiting_for_the_window() -> None:
    recorder = Recorder()
    queue: SettleQueue[int] = SettleQueue(recorder.settle, window=3600, limit=3)
    for item in range(4):
        queue.put(item)
    await asyncio.wait_for(recorder.done.wait(), timeout=10)
    assert recorder.batches == [[0, 1, 2]] and len(queue) == 1
    await queue.aclose()  # the rest now, not in an hour
    assert recorder.batches == [[0, 1, 2], [3]]


async def test_a_failing_settle_does_not_stop_the_others() -> None:
    settled: list[int] = []

    async def settle(item: int) -> None:
        if item == 1:
            raise RuntimeError("bug")
        settled.append(item)

    queue: SettleQueue[int] = SettleQueue(settle, window=3600, limit=100)
    for item in range(3):
        queue.put(item)
    await queue.drain()
    assert settled == [0, 2]


def test_a_loop_shutting_down_settles_what_waits_and_reruns_what_it_cut_off() -> None:
    """asyncio.run (as uvicorn runs the proxy) cancels every task when the server returns."""
    settled: list[int] = []
    attempts: dict[int, int] = {}

    async def settle(item: int) -> None:
        attempts[item] = attempts.get(item, 0) + 1
        if item == 0 and attempts[item] == 1:
            await asyncio.sleep(3600)  # in flight when the loop is told to stop
        settled.append(item)

    async def server() -> None:
        hanging: SettleQueue[int] = SettleQueue(settle, window=3600, limit=1)
        hanging.put(0)  # a full batch: starts at once, then hangs
        waiting: SettleQueue[int] = SettleQueue(settle, window=3600, limit=100)
        waiting.put(1)  # these wait for a window that never ends
        waiting.put(2)
        await asyncio.sleep(0)

    asyncio.run(server())
    assert sorted(settled) == [0, 1, 2]
    assert attempts == {0: 2, 1: 1, 2: 1}

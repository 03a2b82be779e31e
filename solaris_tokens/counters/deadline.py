"""Deadlines that time the store, not the proxy's own event loop.

A deadline is there to tell a slow or unreachable Redis (503). When the proxy's loop is busy past
a deadline (a burst of cold requests on a loaded CPU), the deadline's timer and Redis's reply come
due in the same loop turn, and the timer wins: uvloop handles due timers before it reads the
sockets, and on either loop a task cancelled in the turn its reply was read gets the
cancellation, not the reply. A call that Redis answered in time then fails as if Redis had not
(`tests/core/test_deadlines.py` shows it on both loops).

So a deadline that passes first lets the loop poll its sockets once more, then decides: two
`call_soon` hops reach past the next poll on both loops (uvloop runs the ready queue before
polling and defers callbacks added meanwhile to its next turn). A store that really did not
answer still fails, a turn or two later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


def after_next_poll(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run `callback` once the loop has polled its sockets at least once from now."""
    loop.call_soon(loop.call_soon, callback)


@asynccontextmanager
async def store_deadline(seconds: float) -> AsyncIterator[None]:
    """`asyncio.timeout(seconds)`, except that an expired deadline waits for one more socket poll
    before it cancels the block (a reply already received is then taken, not discarded)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timeout:
        inside = True

        def expire() -> None:
            if inside:
                timeout.reschedule(loop.time())  # cancels the block now, raising TimeoutError at its exit

        timer = loop.call_at(loop.time() + seconds, after_next_poll, loop, expire)
        try:
            yield
        finally:
            inside = False
            timer.cancel()

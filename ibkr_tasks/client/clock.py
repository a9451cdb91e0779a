"""Injectable time for the client: a monotonic clock and an async sleep, plus a virtual clock for tests.

Every component that waits (rate limiter, retry backoff, token refresh, keep-alive) takes ``clock``
and ``sleep`` so tests can run hours of pacing in milliseconds with :class:`FakeClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class FakeClock:
    """Virtual time for asyncio tests: ``sleep`` returns when virtual time reaches its deadline.

    Time only moves when every task of the event loop is blocked: a helper task then jumps the clock
    to the earliest pending deadline and wakes the sleepers due at that instant. So concurrent sleepers
    see consistent time and a test of a 5-minute pacing schedule takes milliseconds.

    Use ``clock`` as the clock (``clock()`` returns the current virtual time) and ``clock.sleep`` as
    the sleep function.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (wakes nothing; for synchronous tests)."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), fut))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sleepers:
            # Let every runnable task run until all are blocked (the loop's ready queue is empty).
            for _ in range(10_000):
                await asyncio.sleep(0)
                ready = getattr(loop, "_ready", None)
                if ready is not None and len(ready) == 0:
                    break
            # Drop sleepers whose task was cancelled.
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                return
            deadline = self._sleepers[0][0]
            self.now = max(self.now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)

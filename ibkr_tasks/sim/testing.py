"""Helpers for testing flows against the simulator in-process (used by this project's tests too).

Example::

    app = create_app(Scenario.demo(), **fake_time())
    async with sim_client(app) as client:
        await client.post("/v1/api/iserver/auth/status")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from ibkr_tasks.sim.asgi import SimApp

# A fixed Wednesday afternoon (US market open) used when a test wants byte-identical payloads.
DEFAULT_START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


class FakeTime:
    """A controllable wall clock, monotonic clock and sleep: ``sleep`` advances time instantly."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self.start = start
        self.elapsed = 0.0
        self.slept: list[float] = []

    def wall(self) -> datetime:
        from datetime import timedelta

        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.elapsed += seconds

    def tick(self, seconds: float) -> None:
        """Let wall/monotonic time pass without the simulator doing anything."""
        self.elapsed += seconds

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`ibkr_tasks.sim.create_app`."""
        return {"wall_clock": self.wall, "monotonic": self.monotonic, "sleep": self.sleep}


@asynccontextmanager
async def sim_client(app: SimApp, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to ``app`` in-process, base URL ``http://sim``."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", **kwargs) as client:
        yield client

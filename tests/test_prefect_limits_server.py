"""Pacing on a Prefect server's global concurrency limits: created idempotently, used when present."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.ratelimit import get_limiter, reset_limiters
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.prefect_limits import PrefectBackend, configure_rate_limits, create_limits
from ibkr_tasks.sim import Scenario, create_app

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


def test_limits_are_used_once_created_and_required_when_asked() -> None:
    reset_limiters()
    settings = IBKRSettings(api_url="http://sim-gcl/v1/api", access_token="gateway", username="gcl-test")

    async def scenario() -> tuple[str, str, float, int]:
        # before the limits exist: auto stays local, "prefect" refuses with the commands to run
        auto_before = await configure_rate_limits(settings, "auto")
        with pytest.raises(ConfigurationError, match="prefect gcl create"):
            await configure_rate_limits(settings, "prefect")
        specs = await create_limits(settings)
        assert await create_limits(settings) == specs  # idempotent
        auto_after = await configure_rate_limits(settings, "auto")
        assert isinstance(get_limiter(settings).backend, PrefectBackend)
        app = create_app(Scenario(seed=9, accounts=1, quirks={"rate_limits": True}))
        async with IBKRClient.from_settings(settings, http_transport=httpx.ASGITransport(app=app)) as client:
            await client.ensure_session()
            started = time.monotonic()
            # three tickles: IBKR allows 1 per second, so the server-side limit spaces them
            for _ in range(3):
                await client.transport.tickle()
            elapsed = time.monotonic() - started
        violations = app.state.sim.limiter.violations
        return auto_before, auto_after, elapsed, violations

    try:
        before, after, elapsed, violations = asyncio.run(scenario())
    finally:
        reset_limiters()
    assert (before, after) == ("local", "prefect")
    assert elapsed >= 1.9  # 3 requests at <= 1/s need two full intervals
    assert violations == 0

"""Pacing on a Prefect server's global concurrency limits: created idempotently, used when present."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.ratelimit import get_limiter, reset_limiters
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.prefect_limits import PrefectBackend, backend_kind, create_limits, pacing_limiter
from ibkr_tasks.sim import Scenario, create_app

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


def test_limits_are_used_once_created_and_required_when_asked() -> None:
    reset_limiters()
    settings = IBKRSettings(api_url="http://sim-gcl/v1/api", access_token="gateway", username="gcl-test")

    async def scenario() -> tuple[str, str, float, int]:
        # before the limits exist: auto stays local, "prefect" refuses with the commands to run
        auto_before = backend_kind(await pacing_limiter(settings, "auto"))
        with pytest.raises(ConfigurationError, match="prefect gcl create"):
            await pacing_limiter(settings, "prefect")
        specs = await create_limits(settings)
        assert await create_limits(settings) == specs  # idempotent
        limiter = await pacing_limiter(settings, "auto")
        auto_after = backend_kind(limiter)
        assert isinstance(limiter.backend, PrefectBackend)
        # the choice is the limiter handed out: the process's in-process limiter is untouched
        assert backend_kind(get_limiter(settings)) == "local"
        assert await pacing_limiter(settings, "auto") is limiter  # one Prefect-backed limiter per login
        app = create_app(Scenario(seed=9, accounts=1, quirks={"rate_limits": True}))
        async with IBKRClient.from_settings(
            settings, limiter=limiter, http_transport=httpx.ASGITransport(app=app)
        ) as client:
            await client.ensure_session()
            started = time.monotonic()
            # three tickles: IBKR allows 1 per second, so the server-side limit spaces them
            assert isinstance(client.transport, Transport)
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

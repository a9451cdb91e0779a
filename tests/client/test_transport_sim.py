"""The transport against the gateway simulator (in-process, virtual time): the simulator enforces IBKR's
exact limits and puts violators in the penalty box, and injects session faults at run time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import CompetingSession
from ibkr_tasks.sim import create_app
from ibkr_tasks.sim.scenario import Scenario

START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


class Sim:
    def __init__(self, clock: FakeClock) -> None:
        origin = clock()
        self.app = create_app(
            Scenario.demo(),
            wall_clock=lambda: START + timedelta(seconds=clock() - origin),
            monotonic=clock,
            sleep=clock.sleep,
        )
        self.control = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://sim")

    async def stats(self) -> dict[str, Any]:
        return (await self.control.get("/sim/stats")).json()

    async def fault(self, **body: Any) -> None:
        (await self.control.post("/sim/faults", json=body)).raise_for_status()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Sim]:
    s = Sim(clock)
    yield s
    await s.control.aclose()


@pytest.fixture
async def transport(sim: Sim, clock: FakeClock) -> AsyncIterator[Transport]:
    settings = IBKRSettings(api_url="http://sim/v1/api", access_token="placeholder")
    async with Transport(
        settings, http_transport=httpx.ASGITransport(app=sim.app), clock=clock, sleep=clock.sleep
    ) as t:
        yield t


async def test_concurrent_mixed_load_never_violates_the_simulators_limits(
    sim: Sim, transport: Transport
) -> None:
    await transport.ensure_session()
    accounts = await transport.ensure_portfolio_accounts()
    account = accounts[0]["id"]
    await asyncio.gather(
        *(
            transport.request("GET", "/iserver/marketdata/snapshot", params={"conids": "265598"})
            for _ in range(50)
        ),
        *(transport.request("GET", "/iserver/account/trades") for _ in range(3)),
        *(transport.request("GET", "/iserver/account/orders") for _ in range(2)),
        *(transport.request("GET", f"/portfolio/{account}/positions/0") for _ in range(10)),
        *(transport.request("POST", "/tickle") for _ in range(5)),
    )
    stats = await sim.stats()
    assert stats["rate_limit_violations"] == 0, stats["rate_limit_violations_by_endpoint"]
    assert stats["responses_429"] == 0
    assert stats["penalty_box"]["entered"] == 0
    assert stats["requests"]["GET /iserver/marketdata/snapshot"] == 50


async def test_expired_session_is_recovered_transparently(sim: Sim, transport: Transport) -> None:
    await transport.ensure_session()
    await sim.fault(expire_session=True)
    rows = await transport.request("GET", "/iserver/account/trades")
    assert isinstance(rows, list)
    stats = await sim.stats()
    assert stats["statuses"].get("401", 0) >= 1  # the fault really bit, and was recovered from
    assert stats["session"]["authenticated"] is True


async def test_dropped_bridge_is_reopened(sim: Sim, transport: Transport) -> None:
    await transport.ensure_session()
    await sim.fault(drop_bridge=True)
    body = await transport.request("GET", "/iserver/account/orders")
    assert isinstance(body, dict)
    stats = await sim.stats()
    assert stats["statuses"].get("400", 0) >= 1
    assert stats["session"]["brokerage"] is True


async def test_competing_session_needs_permission_to_take_over(sim: Sim, transport: Transport) -> None:
    await sim.fault(competing=True)
    with pytest.raises(CompetingSession):
        await transport.ensure_session()
    status = await transport.ensure_session(allow_competing=True)
    assert status.get("competing") is False
    assert (await sim.stats())["session"]["competing"] is False


async def test_transient_5xx_on_get_is_retried(sim: Sim, transport: Transport) -> None:
    await transport.ensure_session()
    await sim.fault(fail_next_requests=2)
    accounts = await transport.request("GET", "/portfolio/accounts")
    assert accounts
    assert (await sim.stats())["faults_5xx"] == 2

"""The pacing scale (``IBKR_PACING_SCALE``, the simulator's ``pacing_scale``): tests and simulators only.

Client and simulator shorten the same periods by the same rule, so at one scale they keep the relation
they have at IBKR's own limits (no 429), a client at IBKR's limits is always safe against a scaled
simulator, and a scaled client against a simulator at IBKR's limits is caught: the simulator really
enforces whatever scale it runs at. Virtual time throughout.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.ratelimit import (
    ENDPOINT_RULES,
    GATEWAY_GLOBAL,
    HOSTED_GLOBAL,
    RateLimiter,
    scaled_period,
)
from ibkr_tasks.client.settings import IBKRSettings, pacing_scale_from_env
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.sim import create_app
from ibkr_tasks.sim.limits import ENDPOINT_LIMITS, scaled_window
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.testing import FakeTime, sim_client

BASE = "http://sim/v1/api"
TRADES = "/iserver/account/trades"


def test_scale_is_one_by_default_and_must_be_in_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IBKR_PACING_SCALE", raising=False)
    assert IBKRSettings().pacing_scale == 1.0 and pacing_scale_from_env() == 1.0
    assert RateLimiter.for_settings(IBKRSettings()).scale == 1.0
    for bad in ("0", "-0.5", "1.5", "fast"):
        monkeypatch.setenv("IBKR_PACING_SCALE", bad)
        with pytest.raises(ConfigurationError, match="pacing_scale"):
            IBKRSettings()
        with pytest.raises(ConfigurationError, match="pacing_scale"):
            pacing_scale_from_env()
        with pytest.raises(ValueError, match="IBKR_PACING_SCALE"):
            create_app(Scenario(accounts=1))  # the simulator refuses it too
    with pytest.raises(ValueError):
        Quirks(pacing_scale=0)
    with pytest.raises(ValueError):
        Quirks(pacing_scale=2)


def test_slow_periods_shrink_to_no_less_than_a_second_fast_ones_stay() -> None:
    limiter = RateLimiter.for_settings(IBKRSettings(api_url=BASE, pacing_scale=0.2), store=None)
    periods = {r.limit.name: r.limit.per for r in limiter.rules if r.limit}
    assert periods["trades"] == periods["portfolio_accounts"] == 1.0  # 5 s at a fifth
    assert periods["sso_validate"] == 12.0 and periods["pa"] == 180.0
    assert periods["snapshot"] == periods["tickle"] == 1.0  # 1 s windows are never shortened
    assert limiter.global_limit == GATEWAY_GLOBAL
    assert scaled_period(5.0, 0.01) == 1.0 and scaled_period(5.0, 0.5) == 2.5
    # the simulator follows the very same rule, window by window
    for per, scale in itertools.product(
        {r.limit.per for r in ENDPOINT_RULES if r.limit}, (0.01, 0.2, 0.5, 1)
    ):
        assert scaled_window(per, scale) == scaled_period(per, scale)
    assert {scaled_window(w, 0.2) for _, w in ENDPOINT_LIMITS.values()} <= {1.0, 12.0}


async def test_a_scaled_limiter_paces_in_scaled_units() -> None:
    clock = FakeClock(start=1_000.0)
    limiter = RateLimiter(GATEWAY_GLOBAL, clock=clock, sleep=clock.sleep, scale=0.2)
    sent: list[float] = []

    async def one() -> None:
        async with limiter.slot("GET", TRADES):
            sent.append(clock())

    await asyncio.gather(*(one() for _ in range(4)))
    gaps = [b - a for a, b in itertools.pairwise(sorted(sent))]
    # 1 per 5 s at a fifth: 1.04 s with the 4 % margin, on the grid of the global spacing (0.104 s)
    assert all(1.04 - 1e-6 <= gap < 1.04 + 0.105 for gap in gaps), gaps


async def test_spacing_holds_on_wall_clock_sized_instants() -> None:
    """On instants like a wall clock's (~1.7e9 s), ``earlier + spacing`` is rounded to 2.4e-7 s: the
    limiter must still see it as spaced (it once looped forever re-reserving the same instant)."""
    clock = FakeClock(start=1_750_000_000.0)
    limiter = RateLimiter(HOSTED_GLOBAL, clock=clock, sleep=clock.sleep, scale=0.2)
    sent: list[float] = []

    async def one() -> None:
        async with limiter.slot("GET", "/portfolio/accounts"):
            sent.append(clock())

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(3))), timeout=5)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(1.04 - 1e-6 <= gap < 1.04 + 0.021 for gap in gaps), gaps  # grid: 50 req/s hosted


async def test_a_scaled_simulator_enforces_its_scaled_windows_and_penalty_box() -> None:
    fake = FakeTime()
    quirks = Quirks(rate_limits=True, penalty_box_seconds=30, pacing_scale=0.2)
    app = create_app(Scenario(accounts=1, positions_per_account=2, quirks=quirks), **fake.kwargs())
    async with sim_client(app) as c:
        assert (await c.get(f"/v1/api{TRADES}")).status_code == 200
        fake.tick(1.01)  # the 5 s window is 1 s at a fifth
        assert (await c.get(f"/v1/api{TRADES}")).status_code == 200
        fake.tick(0.9)
        assert (await c.get(f"/v1/api{TRADES}")).status_code == 429  # inside the scaled window
        box = (await c.get("/sim/stats")).json()["penalty_box"]
        assert box["penalty_seconds"] == 6.0 and box["pacing_scale"] == 0.2
        fake.tick(5.9)
        assert (await c.post("/v1/api/iserver/auth/status")).status_code == 429  # 30 s box, a fifth of it
        fake.tick(0.2)
        assert (await c.post("/v1/api/iserver/auth/status")).status_code == 200
    assert app.sim.limiter.violations == 1


def test_a_simulator_follows_the_environment_unless_its_scenario_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IBKR_PACING_SCALE", "0.5")
    assert create_app(Scenario(accounts=1)).sim.limiter.scale == 0.5
    assert create_app(Scenario(accounts=1, quirks=Quirks(pacing_scale=1.0))).sim.limiter.scale == 1.0
    monkeypatch.delenv("IBKR_PACING_SCALE")
    assert create_app(Scenario(accounts=1)).sim.limiter.scale == 1.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000.0)


START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


async def _mixed_load(
    clock: FakeClock, *, client: float, simulator: float
) -> tuple[dict[str, Any], list[BaseException]]:
    """The same concurrent mix of slow and fast requests as test_transport_sim, client and simulator
    each at their own scale; the simulator's stats after it, and the requests that failed."""
    origin = clock()
    scenario = Scenario.demo()
    quirks = scenario.quirks.model_copy(update={"pacing_scale": simulator, "penalty_box_seconds": 0})
    app = create_app(
        scenario.model_copy(update={"quirks": quirks}),
        wall_clock=lambda: START + timedelta(seconds=clock() - origin),
        monotonic=clock,
        sleep=clock.sleep,
    )
    settings = IBKRSettings(api_url=BASE, access_token="placeholder", pacing_scale=client)
    async with Transport(
        settings, http_transport=httpx.ASGITransport(app=app), clock=clock, sleep=clock.sleep
    ) as t:
        await t.ensure_session()
        account = (await t.ensure_portfolio_accounts())[0]["id"]
        # a scaled client against a simulator at IBKR's limits gets 429s (RateLimited): counted below
        results = await asyncio.gather(
            *(
                t.request("GET", "/iserver/marketdata/snapshot", params={"conids": "265598"})
                for _ in range(20)
            ),
            *(t.request("GET", TRADES) for _ in range(3)),
            *(t.request("GET", "/iserver/account/orders") for _ in range(2)),
            *(t.request("GET", f"/portfolio/{account}/positions/0") for _ in range(5)),
            *(t.request("POST", "/tickle") for _ in range(3)),
            return_exceptions=True,
        )
    async with _control(app) as control:
        stats = (await control.get("/sim/stats")).json()
    return stats, [r for r in results if isinstance(r, BaseException)]


@asynccontextmanager
async def _control(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as c:
        yield c


@pytest.mark.parametrize(("client", "simulator"), [(0.2, 0.2), (0.5, 0.5), (1.0, 0.2), (1.0, 1.0)])
async def test_a_client_no_faster_than_the_simulator_never_trips_it(
    clock: FakeClock, client: float, simulator: float
) -> None:
    stats, errors = await _mixed_load(clock, client=client, simulator=simulator)
    assert errors == []
    assert stats["rate_limit_violations"] == 0, stats["rate_limit_violations_by_endpoint"]
    assert stats["responses_429"] == 0


async def test_a_client_faster_than_the_simulator_is_caught(clock: FakeClock) -> None:
    stats, errors = await _mixed_load(clock, client=0.2, simulator=1.0)
    assert stats["rate_limit_violations"] > 0 and errors
    assert set(stats["rate_limit_violations_by_endpoint"]) <= {
        TRADES,
        "/iserver/account/orders",
    }, stats["rate_limit_violations_by_endpoint"]

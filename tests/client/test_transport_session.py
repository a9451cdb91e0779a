"""Session lifecycle of the transport: 401 / no bridge recovery, preflights, competing sessions, keep-alive."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport, needs_iserver_preflight, needs_portfolio_preflight
from ibkr_tasks.errors import CompetingSession, NoBridge, NotAuthenticated, PreflightRequired

BASE = "https://localhost:5000/v1/api"
TOKEN = "gateway-placeholder-token-0001"
AUTH_OK = {"authenticated": True, "competing": False, "connected": True, "message": ""}


def make(clock: FakeClock, **kwargs: object) -> Transport:
    settings = IBKRSettings(api_url=BASE, access_token=TOKEN, account_id="DU1234567")
    return Transport(settings, clock=clock, sleep=clock.sleep, jitter=lambda: 0.5, **kwargs)  # type: ignore[arg-type]


def paths(router: respx.MockRouter) -> list[str]:
    """Method and path (relative to the API base) of every request the mock saw, in order."""
    return [f"{c.request.method} {c.request.url.path.removeprefix('/v1/api')}" for c in router.calls]


@pytest.fixture
def router():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.post("/iserver/auth/ssodh/init").respond(200, json=AUTH_OK)
        mock.get("/iserver/accounts").respond(
            200, json={"accounts": ["DU1234567"], "selectedAccount": "DU1234567"}
        )
        mock.get("/portfolio/accounts").respond(200, json=[{"id": "DU1234567", "accountId": "DU1234567"}])
        yield mock


async def test_401_reopens_the_brokerage_session_then_retries(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/portfolio/accounts").mock(
        side_effect=[httpx.Response(401, json={"error": "not authenticated"}), httpx.Response(200, json=[])]
    )
    async with make(clock) as t:
        assert await t.request("GET", "/portfolio/accounts") == []
    assert paths(router) == [
        "GET /portfolio/accounts",
        "POST /iserver/auth/ssodh/init",
        "GET /portfolio/accounts",
    ]
    init = next(c for c in router.calls if c.request.url.path.endswith("ssodh/init"))
    assert json.loads(init.request.content) == {"publish": True, "compete": True}


async def test_second_401_raises_not_authenticated_that_says_where_to_log_in(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/portfolio/accounts").respond(401, json={"error": "not authenticated", "statusCode": 401})
    async with make(clock) as t:
        with pytest.raises(NotAuthenticated) as err:
            await t.request("GET", "/portfolio/accounts")
    assert "Log in to the Client Portal Gateway at https://localhost:5000" in str(err.value)
    assert err.value.status_code == 401
    # Exactly one re-init and one retry; no loop.
    assert paths(router) == [
        "GET /portfolio/accounts",
        "POST /iserver/auth/ssodh/init",
        "GET /portfolio/accounts",
    ]


async def test_no_bridge_opens_the_brokerage_session_then_retries(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/accounts").mock(
        side_effect=[
            httpx.Response(400, json={"error": "Bad Request: no bridge", "statusCode": 400}),
            httpx.Response(200, json={"accounts": ["DU1234567"]}),
        ]
    )
    async with make(clock) as t:
        body = await t.ensure_iserver_accounts()
    assert body == {"accounts": ["DU1234567"]}
    assert paths(router) == [
        "GET /iserver/accounts",
        "POST /iserver/auth/ssodh/init",
        "GET /iserver/accounts",
    ]


async def test_persistent_no_bridge_raises_no_bridge(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get("/iserver/accounts").respond(400, json={"error": "Bad Request: no bridge", "statusCode": 400})
    async with make(clock) as t:
        with pytest.raises(NoBridge):
            await t.ensure_iserver_accounts()
    assert paths(router).count("POST /iserver/auth/ssodh/init") == 1


async def test_iserver_accounts_preflight_comes_before_first_trades_and_orders_calls(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/trades").respond(200, json=[])
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": False})
    async with make(clock) as t:
        await t.request("GET", "/iserver/account/trades", params={"days": 1})
        await t.request("GET", "/iserver/account/orders")
        await t.request("GET", "/iserver/account/trades")
    assert paths(router) == [
        "GET /iserver/accounts",
        "GET /iserver/account/trades",
        "GET /iserver/account/orders",
        "GET /iserver/account/trades",
    ]


async def test_preflight_is_repeated_after_the_session_is_reopened(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/trades").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(401, json={"error": "not authenticated"}),
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[]),
        ]
    )
    async with make(clock) as t:
        await t.request("GET", "/iserver/account/trades")
        await t.request("GET", "/iserver/account/trades")  # 401 -> init -> preflight -> retry
        await t.request("GET", "/iserver/account/trades")  # preflight cached for the new session
    assert paths(router) == [
        "GET /iserver/accounts",
        "GET /iserver/account/trades",
        "GET /iserver/account/trades",
        "POST /iserver/auth/ssodh/init",
        "GET /iserver/accounts",  # the new brokerage session needs the preflight before the retry
        "GET /iserver/account/trades",
        "GET /iserver/account/trades",
    ]


async def test_please_query_accounts_first_calls_accounts_then_retries(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/trades").mock(
        side_effect=[
            httpx.Response(500, json={"error": "Please query /accounts first"}),
            httpx.Response(200, json=[{"execution_id": "x.01"}]),
        ]
    )
    async with make(clock) as t:
        t._iserver_generation = (
            t._generation
        )  # pretend the preflight was made, so IBKR's hint is what drives it
        t._iserver_accounts = {"accounts": []}
        rows = await t.request("GET", "/iserver/account/trades")
    assert rows == [{"execution_id": "x.01"}]
    assert paths(router) == [
        "GET /iserver/account/trades",
        "GET /iserver/accounts",
        "GET /iserver/account/trades",
    ]


async def test_accounts_first_twice_raises_preflight_required(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/trades").respond(500, json={"error": "Please query /accounts first"})
    async with make(clock) as t:
        with pytest.raises(PreflightRequired):
            await t.request("GET", "/iserver/account/trades")
    # No 5xx retries wasted on it: preflight, call, accounts again, call.
    assert paths(router).count("GET /iserver/account/trades") == 2


async def test_portfolio_accounts_preflight_before_account_endpoints(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/portfolio/DU1234567/positions/0").respond(200, json=[])
    router.get("/portfolio/DU1234567/summary").respond(200, json={})
    async with make(clock) as t:
        await t.request("GET", "/portfolio/DU1234567/positions/0")
        await t.request("GET", "/portfolio/DU1234567/summary")
    assert paths(router) == [
        "GET /portfolio/accounts",
        "GET /portfolio/DU1234567/positions/0",
        "GET /portfolio/DU1234567/summary",
    ]


@pytest.mark.parametrize(
    ("path", "iserver", "portfolio"),
    [
        ("/iserver/account/trades", True, False),
        ("/iserver/account/orders", True, False),
        ("/iserver/account/DU1234567/orders", True, False),
        ("/iserver/account/DUO873728/order/12345", True, False),
        ("/iserver/account/order/status/12345", True, False),
        ("/iserver/reply/abc-123", True, False),
        ("/iserver/marketdata/snapshot", True, False),
        ("/iserver/accounts", False, False),
        ("/iserver/account/pnl/partitioned", False, False),
        ("/iserver/secdef/search", False, False),
        ("/portfolio/accounts", False, False),
        ("/portfolio/subaccounts", False, False),
        ("/portfolio/DU1234567/positions/0", False, True),
        ("/portfolio2/DU1234567/positions", False, True),
        ("/tickle", False, False),
    ],
)
def test_which_paths_need_a_preflight(path: str, iserver: bool, portfolio: bool) -> None:
    assert needs_iserver_preflight(path) is iserver
    assert needs_portfolio_preflight(path) is portfolio


async def test_ensure_session_opens_a_missing_brokerage_session(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post("/iserver/auth/status").respond(
        200, json={"authenticated": False, "competing": False, "connected": False}
    )
    async with make(clock) as t:
        status = await t.ensure_session()
    assert status["authenticated"] is True
    assert paths(router) == [
        "POST /iserver/auth/status",
        "POST /iserver/auth/ssodh/init",
        "GET /iserver/accounts",
    ]


async def test_ensure_session_leaves_a_healthy_session_alone(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post("/iserver/auth/status").respond(200, json=AUTH_OK)
    async with make(clock) as t:
        await t.ensure_session()
        await t.ensure_session()
    assert paths(router) == [
        "POST /iserver/auth/status",
        "GET /iserver/accounts",
        "POST /iserver/auth/status",
    ]


async def test_competing_session_is_a_typed_error(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post("/iserver/auth/status").respond(
        200, json={"authenticated": True, "competing": True, "connected": True}
    )
    async with make(clock) as t:
        with pytest.raises(CompetingSession, match="allow_competing=True"):
            await t.ensure_session()
    assert "POST /iserver/auth/ssodh/init" not in paths(router)


async def test_allow_competing_takes_the_session_over(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post("/iserver/auth/status").respond(
        200, json={"authenticated": True, "competing": True, "connected": True}
    )
    async with make(clock) as t:
        status = await t.ensure_session(allow_competing=True)
    assert status["competing"] is False
    assert paths(router) == [
        "POST /iserver/auth/status",
        "POST /iserver/auth/ssodh/init",
        "GET /iserver/accounts",
    ]


async def test_session_that_never_opens_raises_not_authenticated(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post("/iserver/auth/status").respond(200, json={"authenticated": False, "connected": False})
    router.post("/iserver/auth/ssodh/init").respond(200, json={"authenticated": False, "connected": False})
    async with make(clock) as t:
        with pytest.raises(NotAuthenticated, match="Log in to the Client Portal Gateway"):
            await t.ensure_session()


async def test_error_bodies_with_http_200_are_returned_as_is(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/secdef/search").respond(200, json={"error": "No symbol found"})
    async with make(clock) as t:
        assert await t.request("GET", "/iserver/secdef/search", params={"symbol": "ZZZZ"}) == {
            "error": "No symbol found"
        }


async def test_keep_alive_tickles_on_its_interval(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post("/tickle").respond(200, json={"session": "abc", "iserver": {"authStatus": AUTH_OK}})
    async with make(clock) as t:
        async with t.keep_alive(interval=60):
            await clock.sleep(185)
    assert paths(router) == ["POST /tickle"] * 3


async def test_keep_alive_reopens_a_lost_session(router: respx.MockRouter, clock: FakeClock) -> None:
    lost = {"session": "abc", "iserver": {"authStatus": {"authenticated": False, "connected": False}}}
    router.post("/tickle").respond(200, json=lost)
    async with make(clock) as t:
        async with t.keep_alive(interval=60):
            await clock.sleep(61)
    assert paths(router) == ["POST /tickle", "POST /iserver/auth/ssodh/init"]

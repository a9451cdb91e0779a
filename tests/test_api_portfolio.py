"""Accounts, positions paging and the portfolio summary over the real Transport (respx)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from test_api_support import ACCT, BASE, OTHER, make_client, payload, requests_to

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.errors import AccountMismatch, APIError
from ibkr_tasks.models import parse_positions


def position_rows(count: int, *, start: int = 0, account: str = ACCT) -> list[dict[str, Any]]:
    return [
        {
            "acctId": account,
            "conid": 1000 + i,
            "contractDesc": f"SYM{i}",
            "position": 1.0 + i,
            "mktPrice": 10.5,
            "mktValue": 10.5 * (1 + i),
            "currency": "USD",
            "avgCost": 9.0,
            "avgPrice": 9.0,
            "multiplier": None if i % 2 else 0.0,
            "strike": "0" if i % 2 else 0.0,
            "assetClass": "STK",
            "baseMktValue": None,
            "pageSize": 100,
        }
        for i in range(start, start + count)
    ]


def serve_pages(router: respx.MockRouter, rows: list[dict[str, Any]], account: str = ACCT) -> respx.Route:
    def page(request: httpx.Request, page_id: str) -> httpx.Response:
        n = int(page_id)
        return httpx.Response(200, json=rows[n * 100 : (n + 1) * 100])

    return router.get(url__regex=rf"{BASE}/portfolio/{account}/positions/(?P<page_id>\d+)$").mock(
        side_effect=page
    )


async def test_positions_with_230_rows_take_3_calls_and_stop(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = serve_pages(router, position_rows(230))
    result = await make_client(clock).positions(ACCT)
    assert len(result.items) == 230
    assert result.rejected == []
    assert route.call_count == 3
    assert [c.request.url.path.rsplit("/", 1)[-1] for c in route.calls] == ["0", "1", "2"]
    assert result.items[229].position == Decimal("230.0")


async def test_positions_exactly_200_rows_stop_at_the_empty_page(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = serve_pages(router, position_rows(200))
    result = await make_client(clock).positions(ACCT)
    assert len(result.items) == 200
    assert route.call_count == 3  # page 2 is [] (HTTP 200) and ends the walk


async def test_positions_empty_account_is_one_call(router: respx.MockRouter, clock: FakeClock) -> None:
    route = serve_pages(router, [])
    result = await make_client(clock).positions(ACCT)
    assert result.items == [] and route.call_count == 1


async def test_positions_invalidate_comes_first(router: respx.MockRouter, clock: FakeClock) -> None:
    invalidate = router.post(f"/portfolio/{ACCT}/positions/invalidate").respond(
        200, json={"message": "success"}
    )
    serve_pages(router, position_rows(3))
    await make_client(clock).positions(ACCT, invalidate=True)
    assert invalidate.call_count == 1
    paths = [c.request.url.path.removeprefix("/v1/api") for c in router.calls]
    assert paths.index(f"/portfolio/{ACCT}/positions/invalidate") < paths.index(
        f"/portfolio/{ACCT}/positions/0"
    )
    assert paths[0] == "/portfolio/accounts"  # the portfolio pre-flight precedes everything


async def test_positions_row_of_another_account_raises_account_mismatch(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    serve_pages(router, position_rows(2) + position_rows(1, start=50, account=OTHER))
    with pytest.raises(AccountMismatch, match=OTHER):
        await make_client(clock).positions(ACCT)


async def test_positions_unparseable_row_is_rejected_others_kept(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    rows = position_rows(3)
    rows[1]["position"] = "garbage"
    serve_pages(router, rows)
    result = await make_client(clock).positions(ACCT)
    assert [p.conid for p in result.items] == [1000, 1002]
    assert result.rejected[0].raw["position"] == "garbage"


async def test_positions_server_ignoring_page_index_is_an_error(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    full = position_rows(100)
    router.get(url__regex=rf"{BASE}/portfolio/{ACCT}/positions/\d+$").respond(200, json=full)
    with pytest.raises(APIError, match="repeats"):
        await make_client(clock).positions(ACCT)


async def test_positions_parse_matches_model_parser(router: respx.MockRouter, clock: FakeClock) -> None:
    rows = position_rows(5)
    serve_pages(router, rows)
    result = await make_client(clock).positions(ACCT)
    assert result.items == parse_positions(rows, ACCT).items


async def test_list_accounts_joins_portfolio_and_iserver(router: respx.MockRouter, clock: FakeClock) -> None:
    accounts = await make_client(clock).list_accounts()
    assert [a.account_id for a in accounts] == [ACCT, OTHER]
    assert all(a.is_paper and a.tradable and a.currency == "USD" for a in accounts)


async def test_list_accounts_with_real_iserver_payload() -> None:
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/iserver/accounts").respond(200, json=payload("iserver_accounts_ibkr-conduit.json"))
        router.get("/portfolio/accounts").respond(
            200, json=[{"id": "U1234567", "accountId": "U1234567", "currency": "USD", "faclient": False}]
        )
        (account,) = await make_client(clock).list_accounts()
    assert account.account_id == "U1234567"
    assert not account.is_paper  # a U... id is live whatever the sanitised fixture's isPaper says
    assert account.tradable and account.alias == "U1234567"


async def test_portfolio_summary_is_decimal_and_skips_null_entries(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    def entry(amount: Any, *, null: bool = False) -> dict[str, Any]:
        return {
            "amount": amount,
            "currency": "USD",
            "isNull": null,
            "timestamp": 1701198108000,
            "value": None,
        }

    router.get(f"/portfolio/{ACCT}/summary").respond(
        200,
        json={
            "netliquidation": entry(1034222.25),
            "totalcashvalue": entry(985376.94),
            "accruedcash-c": entry(0.0, null=True),
            "availablefunds": entry(None),
        },
    )
    summary = await make_client(clock).portfolio_summary(ACCT)
    assert summary == {"netliquidation": Decimal("1034222.25"), "totalcashvalue": Decimal("985376.94")}
    assert len(requests_to(router, "GET", "/portfolio/accounts")) == 1


async def test_from_settings_builds_a_working_client_on_the_real_transport(router: respx.MockRouter) -> None:
    from ibkr_tasks.client.api import IBKRClient
    from ibkr_tasks.client.prompts import PromptPolicy
    from ibkr_tasks.client.settings import IBKRSettings

    clock = FakeClock()
    policy = PromptPolicy.allowing(["o1"])
    settings = IBKRSettings(api_url=BASE, access_token="gateway-placeholder-token-0001")
    async with IBKRClient.from_settings(settings, policy=policy, clock=clock, sleep=clock.sleep) as client:
        assert client.orders.policy is policy
        accounts = await client.list_accounts()
    assert [a.account_id for a in accounts] == [ACCT, OTHER]
    sent = requests_to(router, "GET", "/portfolio/accounts")[0]
    assert sent.headers["Authorization"] == "Bearer gateway-placeholder-token-0001"

"""Snapshots (pre-flight, chunking, typed values), polling, and contract lookups."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from test_api_support import ACCT, make_client, payload

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.errors import ParseError
from ibkr_tasks.models import OrderRequest, OrderSide, Side

SNAPSHOT = "/iserver/marketdata/snapshot"


def values(conid: int) -> dict[str, Any]:
    return {
        "conid": conid,
        "conidEx": str(conid),
        "31": "C168.42",
        "84": "168.41",
        "88": "1,300",
        "87": "1.2M",
    }


async def test_preflight_first_call_has_no_values_so_it_is_called_again(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get(SNAPSHOT)
    route.side_effect = [
        httpx.Response(200, json=[{"conid": 265598, "conidEx": "265598"}]),
        httpx.Response(200, json=[values(265598)]),
    ]
    (snap,) = await make_client(clock).snapshot([265598], fields=["31", "84", "88", "87"])
    assert route.call_count == 2
    assert snap.has_data
    assert snap.last == Decimal("168.42") and snap.last_is_prior_close
    assert snap.bid_size == Decimal(1300)
    assert snap.volume == Decimal(1_200_000)
    assert route.calls[0].request.url.params["fields"] == "31,84,88,87"


async def test_real_snapshot_payload(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get(SNAPSHOT).respond(
        200, json=payload("iserver_marketdata_snapshot_tax-loss-direct-indexing.json")
    )
    snaps = await make_client(clock).snapshot([123, 456, 4027, 265598], fields=["31", "7635"])
    assert [s.mark for s in snaps] == [
        Decimal("131.43"),
        Decimal("13.85"),
        Decimal("178.30"),
        Decimal("155.97"),
    ]


async def test_snapshot_chunks_100_conids_and_50_fields(router: respx.MockRouter, clock: FakeClock) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        conids = [int(c) for c in request.url.params["conids"].split(",")]
        fields = request.url.params["fields"].split(",")
        return httpx.Response(200, json=[{"conid": c, **dict.fromkeys(fields, "1")} for c in conids])

    route = router.get(SNAPSHOT).mock(side_effect=answer)
    conids = list(range(1, 251))
    fields = [str(f) for f in range(7000, 7060)]
    snaps = await make_client(clock).snapshot(conids, fields=fields)
    assert [s.conid for s in snaps] == conids
    sizes = [
        (len(c.request.url.params["conids"].split(",")), len(c.request.url.params["fields"].split(",")))
        for c in route.calls
    ]
    assert all(n <= 100 and f <= 50 for n, f in sizes)
    assert route.call_count == 6  # 3 conid chunks x 2 field chunks
    assert all(set(fields) <= set(s.raw) for s in snaps)


async def test_snapshot_gives_up_after_three_calls_with_empty_snapshot(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get(SNAPSHOT).respond(200, json=[{"conid": 1, "conidEx": "1"}])
    (snap,) = await make_client(clock).snapshot([1], fields=["31"])
    assert route.call_count == 3
    assert not snap.has_data and snap.last is None


async def test_poll_snapshots_yields_count_times_at_the_interval(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get(SNAPSHOT).respond(200, json=[values(265598)])
    client = make_client(clock)
    seen: list[float] = []
    async for snaps in client.poll_snapshots([265598], interval=5.0, count=3, fields=["31"]):
        seen.append(clock())
        assert snaps[0].last == Decimal("168.42")
    assert len(seen) == 3
    # Ticks are scheduled from the start (no drift): the first one also paid the pre-flight/pacing.
    assert round(seen[2] - seen[1], 3) == 5.0
    assert 4.5 < seen[1] - seen[0] <= 5.0


async def test_poll_snapshots_stops_after_duration(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get(SNAPSHOT).respond(200, json=[values(1)])
    ticks = [
        s async for s in make_client(clock).poll_snapshots([1], interval=5.0, duration=12.0, fields=["31"])
    ]
    assert len(ticks) == 3  # t = 0, 5, 10


async def test_contract_info_is_cached_and_search_conids_are_ints(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    info = router["contract_info"].respond(
        200,
        json={
            "con_id": 265598,
            "symbol": "AAPL",
            "instrument_type": "STK",
            "multiplier": None,
            "currency": "USD",
        },
    )
    router.get("/iserver/secdef/search").respond(
        200,
        json=[
            {
                "conid": "265598",
                "companyName": "APPLE INC",
                "symbol": "AAPL",
                "description": "NASDAQ",
                "sections": [{"secType": "STK"}, {"secType": "OPT", "months": "APR26"}],
            }
        ],
    )
    client = make_client(clock)
    first = await client.contract_info(265598)
    second = await client.contract_info("265598")
    assert first == second and info.call_count == 1
    assert first.multiplier is None and first.sec_type == "STK"
    (hit,) = await client.search("AAPL", sec_type="STK")
    assert hit.conid == 265598 and hit.sec_types == ["STK", "OPT"]


async def test_yes_no_order_resolves_event_contract_pair(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get("/forecast/contract/details").respond(
        200, json={"conid_yes": 722489372, "conid_no": 722489376, "exchange": "FORECASTX", "symbol": "FF"}
    )
    orders = router.post(f"/iserver/account/{ACCT}/orders").respond(
        200, json=[{"order_id": "77", "order_status": "Submitted"}]
    )
    order = OrderRequest(market_id="722489372", order_side=OrderSide.BUY, side=Side.NO, size=5, price="0.40")
    result = await make_client(clock).place_order(ACCT, order, coid="ev-1")
    assert result.order_id == "77"
    assert json.loads(orders.calls[0].request.content)["orders"][0]["conid"] == 722489376


async def test_event_pair_missing_fails_instead_of_guessing(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/forecast/contract/details").respond(200, json={"question": "?"})
    order = OrderRequest(market_id="5", order_side=OrderSide.BUY, side=Side.YES, size=1, price="0.5")
    with pytest.raises(ParseError, match="conid_yes"):
        await make_client(clock).place_order(ACCT, order, coid="ev-2")
    assert not any(c.request.method == "POST" for c in router.calls)


async def test_availability_marker_alone_does_not_count_as_data(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get(SNAPSHOT)
    route.side_effect = [
        httpx.Response(200, json=[{"conid": 7, "conidEx": "7", "6509": "RpB", "6119": "q0"}]),
        httpx.Response(200, json=[{"conid": 7, "conidEx": "7", "6509": "RpB", "31": "10.5"}]),
    ]
    (snap,) = await make_client(clock).snapshot([7], fields=["31", "6509"])
    assert route.call_count == 2
    assert snap.last == Decimal("10.5") and snap.availability == "RpB"


async def test_secdef_info_multiplier_string_and_event_contract(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get("/iserver/secdef/info").respond(
        200,
        json=[
            {
                "conid": 713921696,
                "symbol": "FF",
                "secType": "OPT",
                "exchange": "FORECASTX",
                "right": "C",
                "strike": 3.125,
                "currency": "USD",
                "maturityDate": "20240917",
                "multiplier": "1",
                "tradingClass": "FF",
            },
            {"conid": 5, "symbol": "ES", "secType": "FOP", "right": "P", "strike": 5000, "multiplier": "50"},
        ],
    )
    client = make_client(clock)
    ff, es = await client.secdef_info(
        658663572, sec_type="OPT", month="SEP24", exchange="FORECASTX", right="C"
    )
    assert ff.is_event_contract and ff.multiplier == Decimal(1) and ff.strike == Decimal("3.125")
    assert es.multiplier == Decimal(50) and not es.is_event_contract
    params = route.calls[0].request.url.params
    assert params["conid"] == "658663572" and params["sectype"] == "OPT" and params["month"] == "SEP24"
    assert (await client.contract_info(713921696)).multiplier == Decimal(1)  # served from the cache
    assert router["contract_info"].call_count == 0

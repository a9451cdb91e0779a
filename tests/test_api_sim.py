"""IBKRClient end to end against the in-process gateway simulator (real Transport, virtual time).

These check the client against the simulator's ground truth (``/sim/truth``): every position and
execution the broker reports arrives typed and attributed to the right account, and order placement
survives prompt chains and a dropped response without placing anything twice.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import UnknownPrompt
from ibkr_tasks.models import OrderRequest, OrderSide, OrderType
from ibkr_tasks.sim import Quirks, Scenario, create_app
from ibkr_tasks.sim.app import PROMPTS


class Sim:
    def __init__(self, scenario: Scenario, clock: FakeClock, *, served: bool = False) -> None:
        self.app = create_app(scenario, monotonic=clock, sleep=clock.sleep, served=served)
        self.control = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://sim/sim"
        )
        settings = IBKRSettings(api_url="http://sim/v1/api")
        transport = Transport(
            settings,
            http_transport=httpx.ASGITransport(app=self.app),
            clock=clock,
            sleep=clock.sleep,
            jitter=lambda: 0.5,
        )
        self.client = IBKRClient(transport, sleep=clock.sleep, clock=clock)

    async def truth(self, account_id: str) -> dict[str, Any]:
        return (await self.control.get(f"/truth/{account_id}")).json()

    async def trading_accounts(self) -> list[str]:
        rows = (await self.control.get("/accounts")).json()
        return [r["account_id"] for r in rows if r["account_id"].startswith("DU")]


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Sim]:
    scenario = Scenario.demo()
    scenario.quirks = Quirks.model_validate(
        {**scenario.quirks.model_dump(), "prompt_chain_min": 2, "prompt_chain_max": 2}
    )
    s = Sim(scenario, clock)
    await s.client.ensure_session()
    yield s
    await s.client.aclose()
    await s.control.aclose()


async def test_positions_match_the_simulator_truth(sim: Sim) -> None:
    for acct in await sim.trading_accounts():
        result = await sim.client.positions(acct)
        truth = await sim.truth(acct)
        assert result.rejected == []
        got = {p.conid: (p.position, p.multiplier) for p in result.items if p.position != 0}
        want = {
            t["conid"]: (Decimal(t["position"]), Decimal(t["multiplier"]))
            for t in truth["positions"]
            if Decimal(t["position"]) != 0
        }
        assert got == want


async def test_fills_match_truth_in_one_call_for_all_accounts(sim: Sim) -> None:
    accounts = await sim.trading_accounts()
    fills = await sim.client.fills(accounts, days=3)
    stats = (await sim.control.get("/stats")).json()
    assert stats["requests"].get("GET /iserver/account/trades") == 1
    for acct in accounts:
        truth = {e["execution_id"]: e for e in (await sim.truth(acct))["executions"]}
        result = fills[acct]
        assert result.items, f"no fills parsed for {acct}"
        for fill in result.items:
            expected = truth[fill.execution_id]  # a KeyError would mean another account's fill
            assert fill.account_id == acct
            assert fill.multiplier == Decimal(expected["multiplier"]), fill.execution_id
            assert fill.quantity == Decimal(expected["size"])
            assert fill.price == Decimal(expected["price"])
            assert fill.side == expected["side"]
            if fill.commission is None:  # pending: absent from the payload, never invented as 0
                assert fill.raw.get("commission") in (None, "")
            else:
                assert fill.commission == Decimal(expected["commission"])
                assert fill.commission_currency == expected["commission_currency"]
            assert fill.trade_time.isoformat() == expected["trade_time"]


async def test_order_through_a_two_prompt_chain_then_duplicate_coid(sim: Sim) -> None:
    acct = (await sim.trading_accounts())[0]
    conid = next(p["conid"] for p in (await sim.truth(acct))["positions"] if p["sec_type"] == "STK")
    order = OrderRequest(market_id=str(conid), order_side=OrderSide.BUY, size=1, order_type=OrderType.MARKET)
    policy = PromptPolicy.allowing(PROMPTS)  # the simulator draws from every prompt it knows
    result = await sim.client.place_order(acct, order, coid="sim-dup-1", policy=policy)
    assert len(result.prompts) == 2 and all(p.confirmed for p in result.prompts)
    truth_orders = {o["cOID"]: o for o in (await sim.truth(acct))["orders"]}
    assert truth_orders["sim-dup-1"]["order_id"] == result.order_id
    assert result.order_id not in {p.reply_id for p in result.prompts}

    again = await sim.client.place_order(acct, order, coid="sim-dup-1", policy=policy)
    assert again.existing and again.order_id == result.order_id
    assert [o["cOID"] for o in (await sim.truth(acct))["orders"]].count("sim-dup-1") == 1


async def test_dropped_order_response_is_found_by_coid_not_resent(sim: Sim) -> None:
    acct = (await sim.trading_accounts())[0]
    conid = next(p["conid"] for p in (await sim.truth(acct))["positions"] if p["sec_type"] == "STK")
    await sim.control.post(
        "/faults",
        json={"drop_next_order_response": 1, "quirks": {"prompt_chain_max": 0, "prompt_chain_min": 0}},
    )
    order = OrderRequest(market_id=str(conid), order_side=OrderSide.BUY, size=1, order_type=OrderType.MARKET)
    result = await sim.client.place_order(acct, order, coid="sim-lost-1")
    assert result.existing
    orders = [o for o in (await sim.truth(acct))["orders"] if o["cOID"] == "sim-lost-1"]
    assert len(orders) == 1 and orders[0]["order_id"] == result.order_id


async def test_default_policy_confirms_what_a_small_order_is_asked_and_refuses_a_size_warning(
    sim: Sim,
) -> None:
    """The shipped policy answers every prompt a one-share market order can get (no market data,
    market-order risk) and refuses the size-limit warning of a large one, transmitting nothing."""
    await sim.control.post("/faults", json={"quirks": {"prompt_chain_min": 5, "prompt_chain_max": 5}})
    acct = (await sim.trading_accounts())[0]
    conid = next(p["conid"] for p in (await sim.truth(acct))["positions"] if p["sec_type"] == "STK")
    small = OrderRequest(market_id=str(conid), order_side=OrderSide.BUY, size=1, order_type=OrderType.MARKET)
    result = await sim.client.place_order(acct, small, coid="sim-policy-small")
    assert sorted(mid for p in result.prompts for mid in p.message_ids) == ["o10151", "o354"]
    large = OrderRequest(
        market_id=str(conid), order_side=OrderSide.BUY, size=600, order_type=OrderType.MARKET
    )
    with pytest.raises(UnknownPrompt) as info:
        await sim.client.place_order(acct, large, coid="sim-policy-large")
    assert "o383" in info.value.message_ids and "size exceeds the Size Limit of 500" in info.value.text
    assert not PromptPolicy.default().allows(info.value.message_ids)
    placed = [o["cOID"] for o in (await sim.truth(acct))["orders"]]
    assert "sim-policy-small" in placed and "sim-policy-large" not in placed  # declined: not transmitted


async def test_cancel_all_only_touches_one_account(sim: Sim) -> None:
    first, second = (await sim.trading_accounts())[:2]
    await sim.control.post("/faults", json={"quirks": {"prompt_chain_max": 0, "prompt_chain_min": 0}})
    for acct, coid in ((first, "keep-a"), (second, "keep-b")):
        conid = next(p["conid"] for p in (await sim.truth(acct))["positions"] if p["sec_type"] == "STK")
        far_below = OrderRequest(market_id=str(conid), order_side=OrderSide.BUY, size=1, price="0.01")
        await sim.client.place_order(acct, far_below, coid=coid)
    results = await sim.client.cancel_all(first)
    assert results and all(r.accepted for r in results)
    status = {o["cOID"]: o["status"] for acct in (first, second) for o in (await sim.truth(acct))["orders"]}
    assert status["keep-b"] in {"Submitted", "PreSubmitted"}
    assert status["keep-a"] in {"Cancelled", "PendingCancel"}


async def test_snapshot_preflight_against_simulator(sim: Sim) -> None:
    acct = (await sim.trading_accounts())[0]
    conids = [p["conid"] for p in (await sim.truth(acct))["positions"]][:3]
    snaps = await sim.client.snapshot(conids, fields=["31", "84", "86"])
    assert [s.conid for s in snaps] == conids
    assert all(s.has_data and s.last is not None for s in snaps)


async def test_future_order_is_accepted_with_manual_indicator(sim: Sim) -> None:
    await sim.control.post("/faults", json={"quirks": {"prompt_chain_max": 0, "prompt_chain_min": 0}})
    # The future comes from the simulator's catalogue (E-mini ES), not from whatever the scenario's
    # opening book happens to hold: this test never depends on the holdings the scenario draws.
    futures = sim.app.sim.book.catalog.futures
    assert futures, "the simulator's catalogue lists no future"
    future = futures[0]
    acct = (await sim.trading_accounts())[0]
    order = OrderRequest(
        market_id=str(future.conid), order_side=OrderSide.BUY, size=1, order_type=OrderType.MARKET
    )
    result = await sim.client.place_order(acct, order, coid="sim-fut-1")
    assert result.order_id and not result.existing
    assert result.request["manualIndicator"] is False
    (sent,) = [o for o in (await sim.truth(acct))["orders"] if o["cOID"] == "sim-fut-1"]
    assert sent["conid"] == future.conid and sent["status"] == "Filled"


async def test_served_simulator_504_after_accepting_the_order_resolves_by_coid(clock: FakeClock) -> None:
    """Over a socket the simulator answers a dropped order response with 504 after accepting it."""
    scenario = Scenario.demo()
    scenario.quirks = Quirks.model_validate({**scenario.quirks.model_dump(), "prompt_chain_max": 0})
    s = Sim(scenario, clock, served=True)
    try:
        await s.client.ensure_session()
        acct = (await s.trading_accounts())[0]
        conid = next(p["conid"] for p in (await s.truth(acct))["positions"] if p["sec_type"] == "STK")
        await s.control.post("/faults", json={"drop_next_order_response": 1})
        order = OrderRequest(
            market_id=str(conid), order_side=OrderSide.BUY, size=1, order_type=OrderType.MARKET
        )
        result = await s.client.place_order(acct, order, coid="sim-504-1")
        assert result.existing
        placed = [o for o in (await s.truth(acct))["orders"] if o["cOID"] == "sim-504-1"]
        assert len(placed) == 1 and placed[0]["order_id"] == result.order_id
    finally:
        await s.client.aclose()
        await s.control.aclose()


async def many_conids(clock: FakeClock) -> Sim:
    """A login whose trades of two days hold a few hundred distinct instruments."""
    scenario = Scenario(
        seed=3, accounts=2, positions_per_account=300, fills_per_account_per_day=200, history_days=2
    )
    scenario.quirks = Quirks(rate_limits=True, penalty_box_seconds=60)
    s = Sim(scenario, clock)
    await s.client.ensure_session()
    return s


def assert_contract_facts(s: Sim, fills: Any, accounts: list[str]) -> set[int]:
    """Every fill carries its instrument's currency and multiplier; returns the distinct conids."""
    catalog = s.app.state.sim.book.catalog
    conids = set()
    for acct in accounts:
        assert fills[acct].items and not fills[acct].rejected
        for fill in fills[acct].items:
            inst = catalog.get(fill.conid)
            assert (fill.currency, fill.commission_currency) == (inst.currency, inst.currency), fill.conid
            assert fill.multiplier == inst.multiplier, fill.conid
            conids.add(fill.conid)
    return conids


async def test_contract_info_of_hundreds_of_conids_costs_one_bulk_request_per_200(clock: FakeClock) -> None:
    s = await many_conids(clock)
    try:
        accounts = await s.trading_accounts()
        fills = await s.client.fills(accounts, days=2)
        conids = assert_contract_facts(s, fills, accounts)
        stats = (await s.control.get("/stats")).json()
        assert len(conids) > 200  # more than one bulk request's worth
        assert stats["requests"]["GET /trsrv/secdef"] == math.ceil(len(conids) / 200)
        assert stats["requests"].get("GET /iserver/contract/{conid}/info", 0) == 0
        assert stats["rate_limit_violations"] == 0
        await s.client.fills(accounts, days=2)  # known now: nothing is asked again
        again = (await s.control.get("/stats")).json()["requests"]
        assert again["GET /trsrv/secdef"] == stats["requests"]["GET /trsrv/secdef"]
    finally:
        await s.client.aclose()
        await s.control.aclose()


async def test_conids_the_bulk_answer_leaves_out_are_asked_one_by_one(clock: FakeClock) -> None:
    s = await many_conids(clock)
    try:
        accounts = await s.trading_accounts()
        traded = {
            int(r["conid"])
            for r in await s.client.transport.request("GET", "/iserver/account/trades", params={"days": 2})
        }
        omitted = sorted(traded & {637533641, 195014116, 14204, *list(traded)[:3]})  # future, CAD, EUR, ...
        assert (await s.control.post("/faults", json={"secdef_omit": omitted})).status_code == 200
        fills = await s.client.fills(accounts, days=2)
        assert_contract_facts(s, fills, accounts)
        requests = (await s.control.get("/stats")).json()["requests"]
        assert requests["GET /iserver/contract/{conid}/info"] == len(omitted)
        assert requests["GET /trsrv/secdef"] == math.ceil(len(traded) / 200)
    finally:
        await s.client.aclose()
        await s.control.aclose()


async def test_trsrv_stocks_maps_symbols_to_conids(sim: Sim) -> None:
    answer = await sim.client.transport.request("GET", "/trsrv/stocks", params={"symbols": "AAPL,SHOP,NOPE"})
    assert answer["NOPE"] == []
    (aapl,) = answer["AAPL"]
    assert aapl["assetClass"] == "STK" and aapl["name"] == "APPLE INC" and "chineseName" in aapl
    assert aapl["contracts"] == [{"conid": 265598, "exchange": "NASDAQ", "isUS": True}]
    assert answer["SHOP"][0]["contracts"] == [{"conid": 195014116, "exchange": "TSE", "isUS": False}]

"""Every simulated endpoint answers with the keys and JSON types of IBKR's real captured payloads.

The captures are in ``tests/fixtures/ibkr`` (provenance in its PROVENANCE.md); a missing one fails.
A key present in a real payload must be present in the simulator's answer with the same JSON
type (``null`` in a capture says nothing about the type and matches anything).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import payload

from ibkr_tasks.sim import Scenario, create_app
from ibkr_tasks.sim.testing import FakeTime, sim_client


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


def assert_shape(captured: Any, simulated: Any, where: str = "$") -> None:
    """``simulated`` has every key of ``captured`` with the same JSON type, recursively."""
    if captured is None:
        return
    assert _kind(simulated) == _kind(captured), (
        f"{where}: real {_kind(captured)}, simulated {_kind(simulated)}"
    )
    if isinstance(captured, dict):
        missing = sorted(set(captured) - set(simulated))
        assert not missing, f"{where}: keys missing from the simulator's answer: {missing}"
        for key, value in captured.items():
            assert_shape(value, simulated[key], f"{where}.{key}")
    elif isinstance(captured, list) and captured and simulated:
        for element in simulated:
            assert_shape(captured[0], element, f"{where}[]")


def test_assert_shape_catches_a_wrong_type_and_a_missing_key() -> None:
    with pytest.raises(AssertionError, match="real str, simulated float"):
        assert_shape({"price": "1.0"}, {"price": 1.0})
    with pytest.raises(AssertionError, match="missing"):
        assert_shape({"a": 1, "b": 2}, {"a": 1})
    with pytest.raises(AssertionError, match="real int, simulated bool"):
        assert_shape({"n": 1}, {"n": True})


@pytest.fixture
def app() -> Any:
    return create_app(Scenario(seed=3, accounts=2, positions_per_account=15), **FakeTime().kwargs())


async def test_auth_status_and_tickle(app: Any) -> None:
    async with sim_client(app) as c:
        status = (await c.post("/v1/api/iserver/auth/status")).json()
        assert_shape(payload("iserver_auth_status_ibind.json"), status)
        assert status["authenticated"] is True
        for method in ("GET", "POST"):
            tickle = (await c.request(method, "/v1/api/tickle")).json()
            assert_shape(payload("tickle_ibind.json"), tickle)
            assert "collission" in tickle  # IBKR's spelling


async def test_iserver_accounts(app: Any) -> None:
    captured = payload("iserver_accounts_ibkr-conduit.json")
    async with sim_client(app) as c:
        got = (await c.get("/v1/api/iserver/accounts")).json()
    acct = got["accounts"][0]
    assert_shape(captured["acctProps"]["U1234567"], got["acctProps"][acct], "$.acctProps.<acct>")
    assert got["aliases"][acct] == acct
    rest_real = {k: v for k, v in captured.items() if k not in ("acctProps", "aliases")}
    assert_shape(rest_real, got)
    assert got["accounts"] == list(app.sim.book.accounts)


async def test_trades_rows(app: Any) -> None:
    captured = payload("iserver_account_trades_tax-loss-direct-indexing.json")
    async with sim_client(app) as c:
        rows = (await c.get("/v1/api/iserver/account/trades", params={"days": 3})).json()
    stock_rows = [r for r in rows if r["sec_type"] == "STK" and "order_ref" in r]
    assert stock_rows, "expected stock fills placed with a cOID in three days of history"
    for row in stock_rows:
        assert_shape(captured[0], row, "$[trade]")
    for row in rows:  # derivatives lack listing_exchange (as at IBKR) but share the rest
        assert_shape(
            {k: v for k, v in captured[1].items() if k not in ("order_ref", "listing_exchange")}, row
        )
        assert isinstance(row["trade_time_r"], int) and row["trade_time_r"] > 2**31  # ms, beyond int32
        assert len(row["trade_time"]) == 17 and row["trade_time"][8] == "-"
        assert isinstance(row["order_id"], int)


async def test_positions_page_and_portfolio2(app: Any) -> None:
    acct = next(a for a in app.sim.book.accounts)
    async with sim_client(app) as c:
        page = (await c.get(f"/v1/api/portfolio/{acct}/positions/0")).json()
        p2 = (await c.get(f"/v1/api/portfolio2/{acct}/positions")).json()
        truth = (await c.get(f"/sim/truth/{acct}")).json()
    # /portfolio/{id}/positions/{page}: no capture file; the field list in docs/ibkr-api.md#positions.
    documented = (
        "acctId conid contractDesc position mktPrice mktValue currency avgCost avgPrice realizedPnl unrealizedPnl "
        "exchs expiry putOrCall multiplier strike exerciseStyle conExchMap assetClass undConid model baseMktValue "
        "baseMktPrice baseAvgCost baseAvgPrice baseRealizedPnl baseUnrealizedPnl incrementRules displayRule time "
        "chineseName allExchanges listingExchange countryCode name lastTradingDay group sector sectorGroup ticker "
        "type hasOptions fullName isUS isEventContract pageSize"
    ).split()
    assert len(page) == len(truth["positions"]) > 15  # opening book plus what the history bought
    for row in page:
        assert not set(documented) - set(row)
        assert isinstance(row["conid"], int) and isinstance(row["position"], float)
        assert row["pageSize"] == 100
    assert_shape(payload("portfolio2_positions_ibkr-conduit.json"), p2)
    assert all(isinstance(r["conid"], str) for r in p2)  # portfolio2 conids are strings


async def test_ledger_and_summary(app: Any) -> None:
    captured = payload("portfolio_ledger_ibind.json")
    acct = next(a for a in app.sim.book.accounts)
    async with sim_client(app) as c:
        led = (await c.get(f"/v1/api/portfolio/{acct}/ledger")).json()
        summ = (await c.get(f"/v1/api/portfolio/{acct}/summary")).json()
    assert_shape(captured["BASE"], led["BASE"], "$.BASE")
    assert_shape(captured["USD"], led["USD"], "$.USD")
    assert {"netliquidation", "totalcashvalue", "buyingpower", "availablefunds", "excessliquidity"} <= set(
        summ
    )
    for value in summ.values():
        assert set(value) == {"amount", "currency", "isNull", "timestamp", "value", "severity"}


async def test_order_ack_reply_prompt_and_status() -> None:
    scenario = Scenario(seed=5, accounts=1, quirks={"prompt_chain_min": 1, "prompt_chain_max": 1})
    app = create_app(scenario, **FakeTime().kwargs())
    acct = next(iter(app.sim.book.accounts))
    ticket = {
        "conid": 265598,
        "side": "BUY",
        "orderType": "LMT",
        "price": 1.00,
        "quantity": 3,
        "cOID": "shape-1",
    }
    async with sim_client(app) as c:
        prompt = (await c.post(f"/v1/api/iserver/account/{acct}/orders", json={"orders": [ticket]})).json()
        assert_shape(
            payload("iserver_account_orders_POST_reply-question_tax-loss-direct-indexing.json"), prompt
        )
        ack = (await c.post(f"/v1/api/iserver/reply/{prompt[0]['id']}", json={"confirmed": True})).json()
        assert_shape(payload("iserver_account_orders_POST_success_tax-loss-direct-indexing.json"), ack)
        assert ack[0]["order_id"].isdigit() and ack[0]["local_order_id"] == "shape-1"
        status = (await c.get(f"/v1/api/iserver/account/order/status/{ack[0]['order_id']}")).json()
    assert_shape(payload("iserver_account_order_status_easyib.json"), status)
    assert status["order_status"] == "Submitted"  # a limit far below the market rests


async def test_snapshot_after_preflight(app: Any) -> None:
    captured = payload("iserver_marketdata_snapshot_tax-loss-direct-indexing.json")
    async with sim_client(app) as c:
        url = "/v1/api/iserver/marketdata/snapshot"
        first = (await c.get(url, params={"conids": "265598,756733", "fields": "31,7635"})).json()
        assert first == [{"conid": 265598, "conidEx": "265598"}, {"conid": 756733, "conidEx": "756733"}]
        second = (await c.get(url, params={"conids": "265598,756733"})).json()
    assert_shape(captured, second)  # fields need not be repeated after the first request


async def test_contract_endpoints() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    async with sim_client(app) as c:
        search = (await c.get("/v1/api/iserver/secdef/search", params={"symbol": "AAPL"})).json()
        assert search[0]["conid"] == "265598" and {"secType": "STK"} in search[0]["sections"]
        info = (await c.get("/v1/api/iserver/contract/265598/info")).json()
        assert info["con_id"] == 265598 and info["multiplier"] is None  # snake_case, null for stocks
        opts = (await c.get("/v1/api/iserver/secdef/info", params={"conid": 265598, "sectype": "OPT"})).json()
        assert opts and all(o["multiplier"] == "100" for o in opts)  # a STRING here
        trsrv = (await c.get("/v1/api/trsrv/secdef", params={"conids": "265598,637533641"})).json()
        assert [d["multiplier"] for d in trsrv["secdef"]] == [0.0, 50.0]
        ff = (await c.get("/v1/api/iserver/secdef/search", params={"symbol": "FF"})).json()
        assert ff[0]["companyHeader"].endswith("FORECASTX") and {"secType": "EC"} in ff[0]["sections"]
        details = (await c.get("/v1/api/forecast/contract/details", params={"conid": 713921700})).json()
        assert (details["conid_yes"], details["conid_no"], details["side"]) == (713921696, 713921700, "N")
        yes = (await c.get("/v1/api/iserver/contract/713921696/info")).json()
        assert (yes["exchange"], yes["multiplier"], yes["instrument_type"]) == ("FORECASTX", "1", "OPT")


async def test_session_endpoints() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    async with sim_client(app) as c:
        init = await c.post("/v1/api/iserver/auth/ssodh/init", json={"publish": True, "compete": True})
        assert init.status_code == 200 and init.json()["authenticated"] is True
        bad = await c.post("/v1/api/iserver/auth/ssodh/init", json={"compete": True})
        assert bad.status_code == 500  # publish must be true
        assert (await c.post("/v1/api/logout")).json() == {"status": True}
        assert (await c.get("/v1/api/portfolio/accounts")).status_code == 401

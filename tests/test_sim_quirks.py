"""Each IBKR quirk the simulator reproduces, switched on alone, behaves as documented."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest
from conftest import payload

from ibkr_tasks.sim import Scenario, create_app
from ibkr_tasks.sim.app import PROMPTS
from ibkr_tasks.sim.testing import FakeTime, sim_client

API = "/v1/api"


def make(fake: FakeTime | None = None, **scenario: Any) -> Any:
    scenario.setdefault("accounts", 2)
    scenario.setdefault("positions_per_account", 10)
    return create_app(Scenario.model_validate(scenario), **(fake or FakeTime()).kwargs())


def first_account(app: Any) -> str:
    return app.sim.book.trading_accounts()[0].account_id


async def init(c: httpx.AsyncClient, compete: bool = True) -> httpx.Response:
    return await c.post(f"{API}/iserver/auth/ssodh/init", json={"publish": True, "compete": compete})


# ----------------------------------------------------------------------------------- session
async def test_session_expires_after_n_requests_until_ssodh_init() -> None:
    app = make(quirks={"session_expiry_requests": 3})
    async with sim_client(app) as c:
        for _ in range(3):
            assert (await c.get(f"{API}/portfolio/accounts")).status_code == 200
        expired = await c.get(f"{API}/portfolio/accounts")
        assert expired.status_code == 401 and expired.json()["error"] == "not authenticated"
        assert (await c.post(f"{API}/iserver/auth/status")).status_code == 401
        assert (await init(c)).status_code == 200
        assert (await c.get(f"{API}/portfolio/accounts")).status_code == 200
    assert app.sim.session.expiries == 1


async def test_session_expires_after_seconds_until_ssodh_init() -> None:
    fake = FakeTime()
    app = make(fake, quirks={"session_expiry_seconds": 300})
    async with sim_client(app) as c:
        assert (await c.get(f"{API}/iserver/accounts")).status_code == 200
        fake.tick(299)
        assert (await c.get(f"{API}/tickle")).json()["ssoExpires"] == 1000
        fake.tick(2)
        assert (await c.get(f"{API}/iserver/accounts")).status_code == 401
        await init(c)
        assert (await c.get(f"{API}/iserver/accounts")).status_code == 200


async def test_no_bridge_until_ssodh_init() -> None:
    app = make(quirks={"require_ssodh_init": True})
    async with sim_client(app) as c:
        status = (await c.post(f"{API}/iserver/auth/status")).json()
        assert (status["authenticated"], status["connected"]) == (False, True)
        refused = await c.get(f"{API}/iserver/accounts")
        assert refused.status_code == 400
        assert refused.json() == {"error": "Bad Request: no bridge", "statusCode": 400}
        assert (await c.get(f"{API}/portfolio/accounts")).status_code == 200  # read-only session works
        await init(c)
        assert (await c.get(f"{API}/iserver/accounts")).status_code == 200


async def test_accounts_preflight_required() -> None:
    app = make(quirks={"require_accounts_preflight": True})
    acct = first_account(app)
    async with sim_client(app) as c:
        refused = await c.get(f"{API}/iserver/account/trades")
        assert refused.status_code == 500 and refused.json()["error"] == "Please query /accounts first"
        assert (await c.get(f"{API}/iserver/account/orders")).status_code == 500
        assert (await c.get(f"{API}/portfolio/{acct}/positions/0")).status_code == 500
        await c.get(f"{API}/iserver/accounts")
        await c.get(f"{API}/portfolio/accounts")
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 200
        assert (await c.get(f"{API}/portfolio/{acct}/positions/0")).status_code == 200
        await init(c)  # a new brokerage session needs the preflight again
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 500


async def test_competing_session() -> None:
    app = make(quirks={"competing_session": True})
    async with sim_client(app) as c:
        status = (await c.post(f"{API}/iserver/auth/status")).json()
        assert status["competing"] is True
        assert (await c.get(f"{API}/iserver/accounts")).json() == {}
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 400
        refused = (await init(c, compete=False)).json()
        assert refused["competing"] is True and refused["authenticated"] is False
        taken = (await init(c, compete=True)).json()
        assert (taken["competing"], taken["authenticated"]) == (False, True)
        assert (await c.get(f"{API}/iserver/accounts")).json()["accounts"]
        # and at run time
        await c.post("/sim/faults", json={"competing": True})
        assert (await c.get(f"{API}/tickle")).json()["iserver"]["authStatus"]["competing"] is True


# ----------------------------------------------------------------------------------- pacing
# IBKR's own limits (pacing_scale 1, not the suite's IBKR_PACING_SCALE); scaled ones: tests/client/test_pacing_scale.py
async def test_rate_limits_per_endpoint_and_penalty_box() -> None:
    fake = FakeTime()
    app = make(fake, quirks={"rate_limits": True, "penalty_box_seconds": 30, "pacing_scale": 1.0})
    async with sim_client(app) as c:
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 200
        fake.tick(1)
        limited = await c.get(f"{API}/iserver/account/trades")  # 1 req / 5 s
        assert limited.status_code == 429
        assert (await c.get(f"{API}/iserver/accounts")).status_code == 429  # penalty box: everything
        stats = (await c.get("/sim/stats")).json()
        assert stats["rate_limit_violations"] == 1
        assert stats["rate_limit_violations_by_endpoint"] == {"/iserver/account/trades": 1}
        assert stats["responses_429"] == 2 and stats["penalty_box"]["active"] is True
        assert stats["penalty_box"]["requests_while_boxed"] == 1
        # API requests (not /sim control calls) mark the first and the last arrival
        assert stats["first_request_at"] < stats["last_request_at"]
        fake.tick(30)
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 200
        assert (await c.get("/sim/stats")).json()["penalty_box"]["active"] is False


async def test_rate_limits_global_ten_per_second() -> None:
    fake = FakeTime()
    app = make(fake, quirks={"rate_limits": True, "penalty_box_seconds": 0, "pacing_scale": 1.0})
    async with sim_client(app) as c:
        codes = [(await c.post(f"{API}/iserver/auth/status")).status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]
        fake.tick(1.01)
        assert (await c.post(f"{API}/iserver/auth/status")).status_code == 200
    assert app.sim.limiter.violations_by_endpoint == {"global": 1}


async def test_a_client_pacing_itself_never_trips_the_limits() -> None:
    fake = FakeTime()
    app = make(fake, quirks={"rate_limits": True, "pacing_scale": 1.0})
    async with sim_client(app) as c:
        for _ in range(5):
            assert (await c.get(f"{API}/iserver/account/trades")).status_code == 200
            fake.tick(5)
    stats = app.sim.limiter
    assert stats.violations == 0 and stats.requests_while_boxed == 0


# ----------------------------------------------------------------------------------- faults
async def test_random_5xx_at_the_configured_ratio() -> None:
    app = make(quirks={"error_rate_5xx": 0.3})
    async with sim_client(app) as c:
        codes = Counter([(await c.post(f"{API}/iserver/auth/status")).status_code for _ in range(200)])
    assert set(codes) == {200, 500, 503}
    assert 30 <= codes[500] + codes[503] <= 90
    assert app.sim.stats.faults_5xx == codes[500] + codes[503]


async def test_latency_and_slow_responses() -> None:
    fake = FakeTime()
    app = make(fake, latency_ms=20, quirks={"slow_ratio": 1.0, "slow_ms": 2000})
    async with sim_client(app) as c:
        await c.post(f"{API}/iserver/auth/status")
    assert fake.slept == [pytest.approx(2.02)]


async def test_dropped_order_response_in_process_is_a_read_timeout_but_the_order_exists() -> None:
    app = make(quirks={"drop_order_response": 1.0})
    acct = first_account(app)
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 5, "cOID": "lost-1"}
    async with sim_client(app) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(f"{API}/iserver/account/{acct}/orders", json={"orders": [ticket]})
        await c.get(f"{API}/iserver/account/orders")  # preflight
        orders = (await c.get(f"{API}/iserver/account/orders")).json()["orders"]
        assert [o["order_ref"] for o in orders] == ["lost-1"]
        again = (await c.post(f"{API}/iserver/account/{acct}/orders", json={"orders": [ticket]})).json()
        assert again == {"error": "Order couldn't be submitted: Local order ID=lost-1 is already registered."}
        truth = (await c.get(f"/sim/truth/{acct}")).json()
    assert [o["cOID"] for o in truth["orders"]] == ["lost-1"]
    assert sum(1 for e in truth["executions"] if e["order_ref"] == "lost-1") >= 1
    assert app.sim.stats.dropped_order_responses == 1


async def test_drop_next_order_response_switched_at_run_time() -> None:
    app = make()
    acct = first_account(app)
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}
    async with sim_client(app) as c:
        await c.post("/sim/faults", json={"drop_next_order_response": 1})
        with pytest.raises(httpx.ReadTimeout):
            await c.post(f"{API}/iserver/account/{acct}/orders", json={"orders": [ticket]})
        ok = await c.post(f"{API}/iserver/account/{acct}/orders", json={"orders": [ticket]})
        assert ok.json()[0]["order_status"] == "Filled"


# ----------------------------------------------------------------------------------- fills
async def trades(c: httpx.AsyncClient, days: int = 7) -> list[dict[str, Any]]:
    r = await c.get(f"{API}/iserver/account/trades", params={"days": days})
    assert r.status_code == 200
    return r.json()


async def test_late_commissions_absent_first_then_present() -> None:
    app = make(history_days=2, quirks={"late_commissions": 1.0})
    acct = first_account(app)
    async with sim_client(app) as c:
        truth_before = (await c.get(f"/sim/truth/{acct}")).json()
        first = [r for r in await trades(c) if r["side"] in "BS"]
        second = [r for r in await trades(c) if r["side"] in "BS"]
        truth_after = (await c.get(f"/sim/truth/{acct}")).json()
    assert first and all("commission" not in r for r in first)
    assert all("commission" in r for r in second)
    assert all(e["commission"] is None for e in truth_before["executions"] if e["side"] in "BS")
    by_id = {r["execution_id"]: r["commission"] for r in second}
    for e in truth_after["executions"]:
        if e["side"] in "BS":
            assert float(e["commission"]) == float(by_id[e["execution_id"]])


async def test_changed_commission_after_first_shown() -> None:
    app = make(quirks={"changed_commission": 1.0})
    async with sim_client(app) as c:
        first = {r["execution_id"]: r["commission"] for r in await trades(c) if r["side"] in "BS"}
        second = {r["execution_id"]: r["commission"] for r in await trades(c) if r["side"] in "BS"}
        third = {r["execution_id"]: r["commission"] for r in await trades(c) if r["side"] in "BS"}
    assert first.keys() == second.keys()
    assert all(float(second[k]) > float(first[k]) for k in first)
    assert third == second  # changed once, then stable


async def test_corrections_dot_01_then_dot_02() -> None:
    app = make(quirks={"corrections": 1.0})
    acct = first_account(app)
    async with sim_client(app) as c:
        first = {r["execution_id"]: r for r in await trades(c)}
        second = {r["execution_id"]: r for r in await trades(c)}
        truth = (await c.get(f"/sim/truth/{acct}")).json()
    originals = [i for i, r in first.items() if r["side"] in "BS"]
    assert originals and all(i.endswith(".01") for i in originals)
    assert not any(i.endswith(".02") for i in first)
    for i in originals:
        fix = second[i[:-2] + "02"]
        assert fix["size"] == first[i]["size"] and fix["price"] != first[i]["price"]
    superseded = {e["execution_id"] for e in truth["executions"] if e["superseded"]}
    assert superseded == {i for i in originals if first[i]["account"] == acct}


async def test_option_expiries_side_x() -> None:
    app = make(quirks={"option_expiries": True})
    acct = first_account(app)
    async with sim_client(app) as c:
        rows = [r for r in await trades(c) if r["side"] == "X"]
        assert rows, "the opening book holds options that expired yesterday"
        for r in rows:
            assert r["sec_type"] == "OPT" and r["price"] == "0.0" and "order_ref" not in r
            assert r["order_description"].startswith("EXPIRED ") and r["exchange"] == "OCC"
        truth = (await c.get(f"/sim/truth/{acct}")).json()
        held = {p["conid"] for p in truth["positions"]}
        assert not held & {r["conid"] for r in rows if r["account"] == acct}
        await c.post("/sim/advance", json={"days": 2})  # tomorrow's series expires too
        later = [r for r in await trades(c) if r["side"] == "X"]
    assert len(later) > len(rows)


async def test_event_contract_netting_side_n() -> None:
    app = make(accounts=3, fills_per_account_per_day=40, history_days=3, quirks={"event_netting": True})
    async with sim_client(app) as c:
        rows = await trades(c)
    netting = [r for r in rows if r["side"] == "N"]
    assert netting, "buying NO while long YES must net"
    for r in netting:
        assert r["is_event_trading"] == "1" and r["sec_type"] == "OPT" and r["exchange"] == "FORECASTX"
    # nettings come in YES/NO pairs at the same second, next to the buy that caused them
    pairs = Counter((r["account"], r["trade_time"], r["size"]) for r in netting)
    assert all(n % 2 == 0 for n in pairs.values())
    assert all(r["side"] != "S" for r in rows if r["is_event_trading"] == "1")  # ForecastEx is never sold


async def test_malformed_rows_never_move_positions() -> None:
    clean = make(quirks={"malformed_ratio": 0.0}, fills_per_account_per_day=30)
    junky = make(quirks={"malformed_ratio": 0.5}, fills_per_account_per_day=30)
    acct = first_account(clean)
    async with sim_client(clean) as c1, sim_client(junky) as c2:
        clean_truth = (await c1.get(f"/sim/truth/{acct}")).json()
        junk_truth = (await c2.get(f"/sim/truth/{acct}")).json()
        rows = await trades(c2)
    assert junk_truth["positions"] == clean_truth["positions"]
    assert junk_truth["executions"] == clean_truth["executions"]
    assert len(junk_truth["malformed_rows"]) >= 5
    known = {e["execution_id"] for e in junk_truth["executions"]}
    junk_in_payload = [
        r for r in rows if r.get("execution_id") not in known and r.get("account") != first_account(junky)
    ]
    assert junk_in_payload  # junk rows are in the trades payload, and not among the executions
    for raw in junk_truth["malformed_rows"]:
        assert raw in rows


# ----------------------------------------------------------------------------------- orders
async def asked(app: Any, ticket: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any]]:
    """Place ``ticket``, confirm every prompt; the message ids and texts asked, and the final answer."""
    acct = first_account(app)
    ids: list[str] = []
    texts: list[str] = []
    async with sim_client(app) as c:
        answer = (await c.post(f"{API}/iserver/account/{acct}/orders", json={"orders": [ticket]})).json()
        while "id" in answer[0]:
            assert answer[0]["isSuppressed"] is False and len(answer[0]["message"]) == 1
            ids.extend(answer[0]["messageIds"])
            texts.extend(answer[0]["message"])
            answer = (await c.post(f"{API}/iserver/reply/{answer[0]['id']}", json={"confirmed": True})).json()
    return ids, texts, answer[0]


def last_price(app: Any, conid: int) -> Decimal:
    sim = app.state.sim
    return sim.book.catalog.quote(sim.book.catalog.get(conid), sim.clock.now())[2]


async def test_a_large_market_order_is_asked_every_market_order_prompt_and_no_limit_one() -> None:
    app = make(quirks={"prompt_chain_min": 5, "prompt_chain_max": 5}, order_value_limit=500_000)
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 3000, "cOID": "chain-mkt"}
    ids, texts, answer = await asked(app, ticket)
    assert sorted(ids) == ["o10151", "o354", "o383", "o451"]  # value ~570,000 USD > 500,000
    assert answer["order_status"] == "Filled" and answer["local_order_id"] == "chain-mkt"
    by_id = dict(zip(ids, texts, strict=True))
    assert by_id["o383"].startswith('The following order "BUY 3000 AAPL NASDAQ.NMS" size exceeds')
    value = Decimal(3000) * last_price(app, 265598)
    assert (
        f"value estimate of {value:,.2f} USD exceeds \nthe Total Value Limit of 500,000 USD." in by_id["o451"]
    )


@pytest.mark.parametrize("seed", range(8))
async def test_an_order_under_the_total_value_limit_is_never_asked_o451(seed: int) -> None:
    # 300 AAPL at ~190 is ~57,000 USD, far under the default limit of 1,000,000: every prompt that
    # fits is asked (chain of 5), and o451 is not among them, whatever the seed.
    app = make(seed=seed, quirks={"prompt_chain_min": 5, "prompt_chain_max": 5})
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 300}
    ids, _texts, answer = await asked(app, ticket)
    assert "o451" not in ids and "o383" not in ids
    assert sorted(ids) == ["o10151", "o354"]
    assert answer["order_status"] == "Filled"


@pytest.mark.parametrize("seed", range(8))
async def test_an_order_over_the_total_value_limit_is_always_asked_o451_with_its_value(seed: int) -> None:
    # ~6,000 x 190 USD is over 1,000,000: asked whatever the draw, even when the chain drawn is empty.
    app = make(seed=seed, quirks={"prompt_chain_min": 0, "prompt_chain_max": 1})
    price = (last_price(app, 265598) * Decimal("0.99")).quantize(Decimal("0.01"))  # resting: no o403
    ticket = {"conid": 265598, "side": "BUY", "orderType": "LMT", "price": str(price), "quantity": 6000}
    ids, texts, answer = await asked(app, ticket)
    assert {"o383", "o451"} <= set(ids) and len(ids) <= 3
    text = dict(zip(ids, texts, strict=True))["o451"]
    value = Decimal(6000) * price
    assert value > 1_000_000
    assert text == (
        f'The following order "BUY 6000 AAPL NASDAQ.NMS" value estimate of {value:,.2f} USD exceeds \n'
        "the Total Value Limit of 1,000,000 USD.\nAre you sure you want to submit this order?"
    )
    assert answer["order_id"].isdigit()


async def test_the_total_value_limit_is_a_scenario_setting() -> None:
    app = make(quirks={"prompt_chain_min": 0, "prompt_chain_max": 1}, order_value_limit=50_000)
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 300}
    ids, texts, _answer = await asked(app, ticket)
    text = dict(zip(ids, texts, strict=True))["o451"]
    assert "exceeds \nthe Total Value Limit of 50,000 USD." in text
    assert "value estimate of 5" in text  # ~57,000.00 USD, the order's own value


async def test_prompts_off_asks_nothing_even_over_the_limits() -> None:
    app = make(quirks={"prompt_chain_min": 0, "prompt_chain_max": 0}, order_value_limit=1)
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 3000}
    ids, _texts, answer = await asked(app, ticket)
    assert ids == [] and answer["order_status"] == "Filled"


async def test_a_suppressed_limit_prompt_is_not_asked() -> None:
    app = make(quirks={"prompt_chain_min": 0, "prompt_chain_max": 1})
    async with sim_client(app) as c:
        await c.post(f"{API}/iserver/questions/suppress", json={"messageIds": ["o383", "o451"]})
    ticket = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 6000}
    ids, _texts, _answer = await asked(app, ticket)
    assert "o383" not in ids and "o451" not in ids


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (Decimal("0.5"), ["o163", "o354"]),  # far below the market: resting, price-percentage warning
        (Decimal("1.01"), ["o354", "o403"]),  # crossing: will fill at once
        (Decimal("2"), ["o163", "o354", "o403"]),  # crossing and far from the last price
        (Decimal("0.99"), ["o354"]),  # resting near the market
    ],
)
async def test_a_limit_order_is_asked_only_what_fits_its_price(factor: Decimal, expected: list[str]) -> None:
    app = make(quirks={"prompt_chain_min": 5, "prompt_chain_max": 5})
    price = (last_price(app, 265598) * factor).quantize(Decimal("0.01"))
    ticket = {"conid": 265598, "side": "BUY", "orderType": "LMT", "price": str(price), "quantity": 1}
    ids, _texts, answer = await asked(app, ticket)
    assert sorted(ids) == expected and "o10151" not in ids
    assert answer["order_id"].isdigit()


# IBKR's wording of each message id: its list of suppressible messages, and for o10151 the opening
# that ibind 0.2.2 matches on (docs/ibkr-api.md#prompts). ibind joins the lines of a message before
# matching, as done here.
IBKR_WORDING = {
    "o163": "price exceeds the Percentage constraint of 3%",
    "o354": "You are submitting an order without market data. We strongly recommend against this as it may "
    "result in erroneous and unexpected trades.",
    "o383": "size exceeds the Size Limit of",
    "o403": "This order will most likely trigger and fill immediately.",
    "o451": "exceeds the Total Value Limit of",
    "o10151": "A Market Order is an instruction to trade your order at any available price",
}


def test_every_prompt_text_is_worded_as_ibkr_words_its_id() -> None:
    assert set(PROMPTS) == set(IBKR_WORDING)
    for mid, template in PROMPTS.items():
        text = template.format(
            order="BUY 650 AAPL NASDAQ.NMS", value="1.00", currency="USD", size_limit="500", value_limit="1"
        )
        assert IBKR_WORDING[mid] in text.strip().replace("\n", ""), mid
        assert text.endswith("Are you sure you want to submit this order?"), mid


def test_the_no_market_data_prompt_reads_as_the_real_capture() -> None:
    (captured,) = payload("iserver_account_orders_POST_reply-question_tax-loss-direct-indexing.json")
    assert captured["messageIds"] == ["o354"]
    assert " ".join(PROMPTS["o354"].split()) == " ".join(captured["message"][0].split())


async def test_reply_id_used_twice_or_after_another_request_is_refused() -> None:
    app = make(quirks={"prompt_chain_min": 1, "prompt_chain_max": 1})
    acct = first_account(app)
    url = f"{API}/iserver/account/{acct}/orders"
    async with sim_client(app) as c:
        p1 = (
            await c.post(
                url, json={"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}]}
            )
        ).json()
        assert isinstance(
            (await c.post(f"{API}/iserver/reply/{p1[0]['id']}", json={"confirmed": True})).json(), list
        )
        twice = await c.post(f"{API}/iserver/reply/{p1[0]['id']}", json={"confirmed": True})
        assert twice.status_code == 400 and "reply id not found" in twice.json()["error"]
        p2 = (
            await c.post(
                url, json={"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}]}
            )
        ).json()
        await c.get(f"{API}/tickle")  # anything in between invalidates the reply
        stale = await c.post(f"{API}/iserver/reply/{p2[0]['id']}", json={"confirmed": True})
        assert stale.status_code == 503 and "reply id not found" in stale.json()["error"]
        p3 = (
            await c.post(
                url, json={"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}]}
            )
        ).json()
        declined = (await c.post(f"{API}/iserver/reply/{p3[0]['id']}", json={"confirmed": False})).json()
        assert "error" in declined
    assert len(app.sim.orders) == 1  # only the confirmed order exists


async def test_suppressed_message_ids_are_not_asked() -> None:
    app = make(quirks={"prompt_chain_min": 5, "prompt_chain_max": 5})
    acct = first_account(app)
    async with sim_client(app) as c:
        assert (
            await c.post(f"{API}/iserver/questions/suppress", json={"messageIds": list(PROMPTS)})
        ).json() == {"status": "submitted"}
        ack = (
            await c.post(
                f"{API}/iserver/account/{acct}/orders",
                json={"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}]},
            )
        ).json()
    assert "order_id" in ack[0]


async def test_orders_preflight_then_live_orders() -> None:
    app = make()
    acct = first_account(app)
    async with sim_client(app) as c:
        await c.post(
            f"{API}/iserver/account/{acct}/orders",
            json={
                "orders": [{"conid": 265598, "side": "BUY", "orderType": "LMT", "price": 1, "quantity": 2}]
            },
        )
        assert (await c.get(f"{API}/iserver/account/orders")).json() == {"orders": [], "snapshot": False}
        live = (await c.get(f"{API}/iserver/account/orders")).json()
    assert live["snapshot"] is True and live["orders"][0]["status"] == "Submitted"


async def test_positions_cache_until_invalidate() -> None:
    app = make(quirks={"positions_cache": True})
    acct = first_account(app)
    async with sim_client(app) as c:
        before = (await c.get(f"{API}/portfolio/{acct}/positions/0")).json()
        await c.post(
            f"{API}/iserver/account/{acct}/orders",
            json={"orders": [{"conid": 272093, "side": "BUY", "orderType": "MKT", "quantity": 7}]},
        )
        cached = (await c.get(f"{API}/portfolio/{acct}/positions/0")).json()
        assert [(r["conid"], r["position"]) for r in cached] == [(r["conid"], r["position"]) for r in before]
        assert (await c.post(f"{API}/portfolio/{acct}/positions/invalidate")).json() == {"message": "success"}
        fresh = (await c.get(f"{API}/portfolio/{acct}/positions/0")).json()
    old = {r["conid"]: r["position"] for r in before}
    new = {r["conid"]: r["position"] for r in fresh}
    assert new[272093] == old.get(272093, 0.0) + 7


async def test_advance_finalises_older_late_commissions_but_not_the_new_days() -> None:
    app = make(quirks={"late_commissions": 1.0, "corrections": 1.0})
    acct = first_account(app)
    async with sim_client(app) as c:
        start = (await c.get(f"/sim/truth/{acct}")).json()["as_of"]
        await c.post("/sim/advance", json={"days": 1})
        truth = (await c.get(f"/sim/truth/{acct}")).json()
    old = [e for e in truth["executions"] if e["side"] in "BS" and e["trade_time"] < start]
    new = [e for e in truth["executions"] if e["side"] in "BS" and e["trade_time"] >= start]
    assert old and all(e["commission"] is not None for e in old)
    assert any(e["superseded"] for e in old)  # their corrections were published
    assert new and all(e["commission"] is None for e in new)


@pytest.mark.parametrize(("expiries", "history_days"), [(True, 1), (True, 3), (False, 3)])
async def test_no_expired_option_is_ever_held(expiries: bool, history_days: int) -> None:
    app = make(history_days=history_days, quirks={"option_expiries": expiries})
    today = app.sim.clock.now().date()
    catalog = app.sim.book.catalog
    async with sim_client(app) as c:
        for acct in (a.account_id for a in app.sim.book.trading_accounts()):
            truth = (await c.get(f"/sim/truth/{acct}")).json()
            for p in truth["positions"]:
                inst = catalog.get(p["conid"])
                assert inst.expiry is None or inst.expiry >= today, (
                    f"{acct} holds expired {inst.contract_desc}"
                )


async def test_fail_accounts_fault_breaks_only_that_accounts_requests() -> None:
    app = make()
    a1, a2 = (a.account_id for a in app.sim.book.trading_accounts())
    async with sim_client(app) as c:
        assert (await c.post("/sim/faults", json={"fail_accounts": [a1]})).json()["fail_accounts"] == [a1]
        assert (await c.get(f"{API}/portfolio/{a1}/positions/0")).status_code == 500
        assert (await c.get(f"{API}/portfolio/{a2}/positions/0")).status_code == 200
        assert (await c.get(f"{API}/iserver/account/trades")).status_code == 200  # login-wide: unaffected
        await c.post("/sim/faults", json={"fail_accounts": []})
        assert (await c.get(f"{API}/portfolio/{a1}/positions/0")).status_code == 200

"""Planning and guards, without Prefect or HTTP: targets -> quantities -> orders -> refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from ibkr_tasks.errors import LiveAccountRefused, RebalanceRefused
from ibkr_tasks.models import EventContractPair, LiveOrder, OrderRequest, OrderSide, OrderType, Side, Snapshot
from ibkr_tasks.rebalance import (
    COID_MAX_LENGTH,
    ContractFacts,
    PlanInputs,
    Quote,
    RebalanceParams,
    build_plan,
    check_plan,
    check_working_orders,
    ensure_account_allowed,
    limit_price,
    make_coid,
    plan_from_orders,
    quote_from_snapshot,
    round_to_lot,
)

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ACCT = "DU1234567"
AAPL, SPY, MSFT, ES, OPT = 265598, 756733, 272093, 637533641, 700100010
YES, NO = 713921696, 713921700
PAIR = EventContractPair(yes_conid=YES, no_conid=NO)
D = Decimal

CONTRACTS = {
    AAPL: ContractFacts(AAPL, "AAPL", D(1), "USD", "STK"),
    SPY: ContractFacts(SPY, "SPY", D(1), "USD", "STK"),
    MSFT: ContractFacts(MSFT, "MSFT", D(1), "USD", "STK"),
    ES: ContractFacts(ES, "ES", D(50), "USD", "FUT"),
    OPT: ContractFacts(OPT, "AAPL C200", D(100), "USD", "OPT"),
    YES: ContractFacts(YES, "FF YES", D(1), "USD", "OPT", is_event_contract=True, pair=PAIR),
    NO: ContractFacts(NO, "FF NO", D(1), "USD", "OPT", is_event_contract=True, pair=PAIR),
    14204: ContractFacts(14204, "SAP", D(1), "EUR", "STK"),
}
PRICES = {
    AAPL: "200",
    SPY: "500",
    MSFT: "400",
    ES: "6000",
    OPT: "3.15",
    YES: "0.62",
    NO: "0.38",
    14204: "218.4",
}


def inputs(positions: dict[int, str] | None = None, nlv: str = "100000", **kw) -> PlanInputs:
    quotes = {c: Quote(c, D(p), NOW - timedelta(seconds=2)) for c, p in PRICES.items()}
    quotes.update(kw.pop("quotes", {}))
    return PlanInputs(
        account_id=ACCT,
        net_liquidation=D(nlv),
        positions={c: D(q) for c, q in (positions or {}).items()},
        contracts=CONTRACTS,
        quotes=quotes,
        base_currency="USD",
        as_of=NOW,
        **kw,
    )


def params(targets, **kw) -> RebalanceParams:
    kw.setdefault("limit_offset_bps", 0)
    return RebalanceParams(account_id=ACCT, targets=targets, **kw)


def by_conid(plan):
    return {o.conid: o for o in plan.orders}


# ------------------------------------------------------------------ parameters


def test_weights_above_one_are_refused() -> None:
    with pytest.raises(ValidationError, match="more than 1"):
        params({str(AAPL): 0.6, str(SPY): 0.5})


def test_negative_weight_is_refused() -> None:
    with pytest.raises(ValidationError):
        params({str(AAPL): -0.1})


def test_target_needs_exactly_one_of_weight_or_quantity() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        params({str(AAPL): {"weight": 0.1, "quantity": 5}})


def test_targets_accept_json_text_and_quantity_kind() -> None:
    p = RebalanceParams(account_id="du1234567", target_kind="quantity", targets='{"265598": 10}')
    assert p.account_id == ACCT
    assert p.targets[AAPL].quantity == D(10) and p.targets[AAPL].weight is None
    assert p.dry_run is True and p.allow_live is False and p.liquidate_unlisted is False


def test_targets_and_explicit_orders_are_exclusive() -> None:
    order = OrderRequest(market_id=str(AAPL), order_side=OrderSide.BUY, size=1, price="200")
    with pytest.raises(ValidationError, match="not both"):
        params({str(AAPL): 0.1}, orders=[order])


# ------------------------------------------------------------------ quantities


def test_weights_become_whole_units_floored_toward_zero() -> None:
    # 30% of 100,000 = 30,000 / 400 = 75 MSFT; 25% = 25,000 / 200 = 125 AAPL; 10% of SPY = 20 exact.
    plan = build_plan(params({str(MSFT): 0.3, str(AAPL): 0.25, str(SPY): 0.1}), inputs({AAPL: "100"}), "r1")
    orders = by_conid(plan)
    assert orders[MSFT].quantity == 75 and orders[MSFT].side == OrderSide.BUY
    assert orders[AAPL].quantity == 25  # holds 100, target 125
    assert orders[SPY].quantity == 20
    # 33% of 100,000 / 400 = 82.5 -> 82, never rounded up past the target
    plan = build_plan(params({str(MSFT): 0.33}), inputs(), "r1")
    assert plan.orders[0].quantity == 82


def test_multiplier_aware_quantity_and_notional() -> None:
    # 15% of 100,000 = 15,000; ES 6000 x 50 = 300,000 per contract -> 0 contracts; options 315 each -> 47
    plan = build_plan(params({str(ES): 0.15, str(OPT): 0.15}), inputs(), "r1")
    orders = by_conid(plan)
    assert ES not in orders
    assert any(str(ES) in w and "less than one lot" in w for w in plan.warnings)
    assert orders[OPT].quantity == 47
    assert orders[OPT].notional == D(47) * D("3.15") * 100


def test_quantity_targets_and_sells_sorted_first() -> None:
    plan = build_plan(
        params({str(AAPL): 10, str(ES): 2}, target_kind="quantity"), inputs({AAPL: "30", ES: "1"}), "r1"
    )
    assert [(o.conid, o.side, o.quantity) for o in plan.orders] == [
        (AAPL, OrderSide.SELL, D(20)),
        (ES, OrderSide.BUY, D(1)),
    ]
    es = by_conid(plan)[ES]
    assert es.notional == D(6000) * 50


def test_fractional_holdings_trade_whole_units_only() -> None:
    # 615.5 held, target 354: sell 261 (ends 354.5, within one unit), never a fractional order
    plan = build_plan(params({str(AAPL): 354}, target_kind="quantity"), inputs({AAPL: "615.5"}), "r1")
    (order,) = plan.orders
    assert order.side == OrderSide.SELL and order.quantity == 261
    assert plan.rows[0].delta == D("-261.5")
    plan = build_plan(params({str(AAPL): 354}, target_kind="quantity"), inputs({AAPL: "353.5"}), "r1")
    assert plan.orders == [] and plan.rows[0].action.startswith("none: less than one lot")


def test_lot_size_rounds_toward_zero() -> None:
    assert round_to_lot(D("10.7")) == 10
    assert round_to_lot(D("-10.7")) == -10
    assert round_to_lot(D(250), D(100)) == 200
    plan = build_plan(params({str(AAPL): {"quantity": 250, "lot_size": 100}}), inputs(), "r1")
    assert plan.orders[0].quantity == 200


def test_limit_price_offset_and_rounding_never_more_aggressive() -> None:
    assert limit_price(D("200"), OrderSide.BUY, D(10)) == D("200.2")
    assert limit_price(D("200"), OrderSide.SELL, D(10)) == D("199.8")
    assert limit_price(D("100.003"), OrderSide.BUY, D(0)) == D("100")
    assert limit_price(D("100.003"), OrderSide.SELL, D(0)) == D("100.01")
    assert limit_price(D("6650.30"), OrderSide.BUY, D(0), D("0.25")) == D("6650.25")


def test_market_orders_carry_no_price_but_a_notional() -> None:
    plan = build_plan(params({str(AAPL): 10}, target_kind="quantity", pricing="market"), inputs(), "r1")
    (order,) = plan.orders
    assert order.price is None and order.order_type == OrderType.MARKET
    assert order.notional == D(2000)
    assert order.to_request().price is None


def test_min_trade_value_skips_small_orders() -> None:
    plan = build_plan(params({str(AAPL): 0.1}, min_trade_value=500), inputs({AAPL: "49"}), "r1")
    assert plan.orders == []  # 1 share = 200 < 500
    assert plan.rows[0].action.startswith("skipped")


def test_unlisted_positions_are_kept_unless_asked() -> None:
    plan = build_plan(params({str(AAPL): 0.1}), inputs({SPY: "10", AAPL: "50"}), "r1")
    assert SPY not in by_conid(plan)
    spy_row = next(r for r in plan.rows if r.conid == SPY)
    assert spy_row.action.startswith("kept")
    plan = build_plan(
        params({str(AAPL): 0.1}, liquidate_unlisted=True), inputs({SPY: "10", AAPL: "50"}), "r1"
    )
    assert by_conid(plan)[SPY].side == OrderSide.SELL and by_conid(plan)[SPY].quantity == 10
    check_plan(plan, params({str(AAPL): 0.1}, liquidate_unlisted=True))


def test_scope_guard_refuses_unlisted_orders() -> None:
    liquidating = build_plan(
        params({str(AAPL): 0.1}, liquidate_unlisted=True), inputs({SPY: "10", AAPL: "50"}), "r1"
    )
    with pytest.raises(RebalanceRefused, match="outside the targets") as info:
        check_plan(liquidating, params({str(AAPL): 0.1}))
    assert info.value.reason == "unlisted_conid"


# ------------------------------------------------------------------ event contracts


def test_event_reduce_yes_buys_no() -> None:
    plan = build_plan(params({str(YES): {"quantity": 40, "side": "Yes"}}), inputs({YES: "100"}), "r1")
    (order,) = plan.orders
    assert order.conid == NO and order.side == OrderSide.BUY and order.quantity == 60
    assert order.ref_price == D("0.38")
    row = plan.rows[0]
    assert (row.conid, row.current, row.target, row.delta) == (YES, 100, 40, -60)


def test_event_switch_from_no_to_yes_buys_yes() -> None:
    # target named by the NO conid with side Yes: the pair decides which conid is bought
    plan = build_plan(params({str(NO): {"quantity": 20, "side": "Yes"}}), inputs({NO: "50"}), "r1")
    (order,) = plan.orders
    assert order.conid == YES and order.side == OrderSide.BUY and order.quantity == 70


def test_event_target_no_side_buys_no_and_weight_uses_no_price() -> None:
    # 1% of 100,000 = 1,000 / 0.38 = 2631.57 -> 2631 NO
    plan = build_plan(params({str(YES): {"weight": 0.01, "side": "No"}}), inputs(), "r1")
    (order,) = plan.orders
    assert order.conid == NO and order.side == OrderSide.BUY and order.quantity == 2631


def test_event_contract_is_never_sold_even_when_liquidating() -> None:
    plan = build_plan(params({str(AAPL): 0}, liquidate_unlisted=True), inputs({YES: "30"}), "r1")
    (order,) = plan.orders
    assert order.conid == NO and order.side == OrderSide.BUY and order.quantity == 30


def test_event_sell_guard_refuses_explicit_sell() -> None:
    sell = OrderRequest(market_id=str(YES), order_side=OrderSide.SELL, size=5, price="0.6")
    p = RebalanceParams(account_id=ACCT, orders=[sell])
    plan = plan_from_orders(p, inputs({YES: "10"}), "r1", p.orders or [])
    with pytest.raises(RebalanceRefused, match="cannot be sold") as info:
        check_plan(plan, p)
    assert info.value.reason == "event_contract_sell"


def test_explicit_yes_no_orders_resolve_the_pair() -> None:
    buy_no = OrderRequest(market_id=str(YES), order_side=OrderSide.BUY, size=5, price="0.4", side=Side.NO)
    p = RebalanceParams(account_id=ACCT, orders=[buy_no])
    plan = plan_from_orders(p, inputs(), "r1", [buy_no])
    assert plan.orders[0].conid == NO and plan.orders[0].notional == D(2)
    check_plan(plan, p)


# ------------------------------------------------------------------ limits, prices, accounts


def test_order_notional_limit_refuses_oversize_order() -> None:
    p = params({str(AAPL): 0.5}, max_order_notional=10000)
    plan = build_plan(p, inputs(), "r1")  # 250 AAPL = 50,000
    with pytest.raises(RebalanceRefused, match="max_order_notional") as info:
        check_plan(plan, p)
    assert info.value.reason == "order_notional"


def test_total_notional_limit() -> None:
    p = params({str(AAPL): 0.2, str(SPY): 0.2}, max_order_notional=30000, max_total_notional=35000)
    plan = build_plan(p, inputs(), "r1")  # 20,000 + 20,000
    with pytest.raises(RebalanceRefused, match="max_total_notional") as info:
        check_plan(plan, p)
    assert info.value.reason == "total_notional"
    within = params({str(AAPL): 0.2, str(SPY): 0.2}, max_order_notional=30000, max_total_notional=40000)
    check_plan(build_plan(within, inputs(), "r1"), within)


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        (Quote(AAPL, None, NOW), "missing_price"),
        (Quote(AAPL, D(200), NOW - timedelta(seconds=600)), "stale_price"),
        (Quote(AAPL, D(200), None), "stale_price"),
        (Quote(AAPL, D(200), NOW, prior_close=True), "stale_price"),
        (Quote(AAPL, D(200), NOW, halted=True), "stale_price"),
    ],
)
def test_missing_or_stale_price_stops_the_plan(quote: Quote, reason: str) -> None:
    with pytest.raises(RebalanceRefused) as info:
        build_plan(params({str(AAPL): 0.1}), inputs(quotes={AAPL: quote}), "r1")
    assert info.value.reason == reason


def test_prior_close_allowed_when_asked() -> None:
    p = params({str(AAPL): 0.1}, allow_prior_close=True)
    plan = build_plan(p, inputs(quotes={AAPL: Quote(AAPL, D(200), NOW, prior_close=True)}), "r1")
    assert plan.orders[0].quantity == 50


def test_foreign_currency_weight_is_refused() -> None:
    with pytest.raises(RebalanceRefused, match="EUR") as info:
        build_plan(params({"14204": 0.1}), inputs(), "r1")
    assert info.value.reason == "currency"


def test_live_account_needs_allow_live() -> None:
    with pytest.raises(LiveAccountRefused, match="allow_live"):
        ensure_account_allowed("U1234567", allow_live=False)
    ensure_account_allowed("U1234567", allow_live=True)
    ensure_account_allowed("DUO873728", allow_live=False)


def test_working_orders_of_others_on_planned_conids_refuse() -> None:
    plan = build_plan(params({str(AAPL): 0.1}), inputs(), "r1")
    other = LiveOrder(
        order_id="9", account_id=ACCT, conid=AAPL, status="Submitted", order_ref="manual", raw={}
    )
    unrelated = LiveOrder(order_id="8", account_id=ACCT, conid=SPY, status="Submitted", raw={})
    check_working_orders([unrelated], plan)
    with pytest.raises(RebalanceRefused, match="working orders"):
        check_working_orders([other, unrelated], plan)
    mine = LiveOrder(
        order_id="7", account_id=ACCT, conid=AAPL, status="Submitted", order_ref=plan.orders[0].coid, raw={}
    )
    check_working_orders([mine], plan, own_coids=[plan.orders[0].coid])


# ------------------------------------------------------------------ cOIDs and snapshots


def test_coid_is_deterministic_readable_and_distinct() -> None:
    a = make_coid("run-1", ACCT, AAPL, OrderSide.BUY, D(25))
    assert a == make_coid("run-1", ACCT.lower(), AAPL, "Buy", D("25.0"))
    assert a.startswith("rb-") and a.endswith(f"-{AAPL}-B-25") and len(a) <= COID_MAX_LENGTH
    others = {
        make_coid("run-2", ACCT, AAPL, OrderSide.BUY, D(25)),
        make_coid("run-1", "DU7654321", AAPL, OrderSide.BUY, D(25)),
        make_coid("run-1", ACCT, SPY, OrderSide.BUY, D(25)),
        make_coid("run-1", ACCT, AAPL, OrderSide.SELL, D(25)),
        make_coid("run-1", ACCT, AAPL, OrderSide.BUY, D(26)),
    }
    assert a not in others and len(others) == 5
    assert len(make_coid("r", ACCT, 9999999999, OrderSide.BUY, D("123456789.123"))) <= COID_MAX_LENGTH


def test_plan_coids_stable_across_replanning() -> None:
    p = params({str(AAPL): 0.25})
    assert build_plan(p, inputs(), "run-x").orders[0].coid == build_plan(p, inputs(), "run-x").orders[0].coid


def test_quote_from_snapshot_prefers_last_then_mark_then_mid() -> None:
    base = {"conid": AAPL, "updated": NOW, "raw": {}}
    assert quote_from_snapshot(Snapshot(last=D(1), mark=D(2), **base)).price == D(1)
    assert quote_from_snapshot(Snapshot(mark=D(2), bid=D(1), ask=D(3), **base)).price == D(2)
    assert quote_from_snapshot(Snapshot(bid=D(1), ask=D(3), **base)).price == D(2)
    assert quote_from_snapshot(Snapshot(**base)).price is None
    closed = quote_from_snapshot(Snapshot(last=D(1), last_is_prior_close=True, **base))
    assert closed.prior_close and closed.as_of == NOW


def test_plan_table_has_the_artifact_columns() -> None:
    plan = build_plan(params({str(AAPL): 0.25}), inputs({AAPL: "100"}), "r1")
    (row,) = plan.table()
    assert {"conid", "symbol", "current", "target", "delta", "price", "notional"} <= set(row)
    assert row["current"] == "100" and row["target"] == "125" and row["delta"] == "25"
    assert row["notional"] == "5,000.00 USD"


def test_plan_table_shows_the_coid_order_terms_and_keeps_long_reasons_last() -> None:
    plan = build_plan(
        params({str(AAPL): 3125}, target_kind="quantity"), inputs({AAPL: "100", SPY: "10"}), "r1"
    )
    rows = {r["conid"]: r for r in plan.table()}
    buy, kept = rows[AAPL], rows[SPY]
    assert list(buy)[:4] == ["conid", "symbol", "action", "cOID"]  # visible without scrolling
    assert list(buy)[-1] == "note"
    assert buy["action"] == "buy 3,025" and buy["cOID"].startswith("rb-") and buy["cOID"].endswith("-B-3025")
    assert buy["target"] == "3,125" and buy["type"] == "LMT" and buy["tif"] == "DAY"
    assert buy["price is"] == "limit" and "E" not in buy["notional"] and buy["notional"].endswith(" USD")
    assert kept["action"] == "kept" and kept["note"] == "not in targets (liquidate_unlisted=false)"
    assert kept["target"] == "(not a target)" and kept["cOID"] == "" and kept["notional"] == ""
    market = build_plan(params({str(AAPL): 0.25}, pricing="market"), inputs({AAPL: "100"}), "r1").table()[0]
    assert market["type"] == "MKT" and market["price is"] == "snapshot"
    assert "NLV 100,000.00 USD" in plan.describe()

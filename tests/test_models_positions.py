"""Regression tests for parsing portfolio position rows into Position."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from conftest import payload

from ibkr_tasks.models import parse_positions


def stock_row(**overrides: Any) -> dict[str, Any]:
    """A /portfolio/{acct}/positions/{page} row with the fields of real captures (docs/ibkr-api.md#positions)."""
    base: dict[str, Any] = {
        "acctId": "DU1234567",
        "conid": 265598,
        "contractDesc": "AAPL",
        "position": 12.0,
        "mktPrice": 168.4199981,
        "mktValue": 2021.04,
        "currency": "USD",
        "avgCost": 150.25,
        "avgPrice": 150.25,
        "realizedPnl": 0.0,
        "unrealizedPnl": 218.04,
        "exchs": None,
        "expiry": None,
        "putOrCall": None,
        "multiplier": 0.0,
        "strike": "0",
        "exerciseStyle": None,
        "assetClass": "STK",
        "baseMktValue": None,
        "baseAvgCost": None,
        "isEventContract": False,
        "pageSize": 100,
    }
    base.update(overrides)
    return base


def test_stock_row_parses_as_decimals() -> None:
    result = parse_positions([stock_row()], "DU1234567")
    assert result.rejected == []
    (pos,) = result.items
    assert pos.conid == 265598
    assert pos.position == Decimal("12.0")
    assert pos.mkt_price == Decimal("168.4199981")
    assert pos.avg_cost == Decimal("150.25")
    assert pos.multiplier == Decimal(1)
    assert pos.symbol == "AAPL"
    assert pos.account_id == "DU1234567"


def test_type_drift_strike_and_multiplier_null_vs_zero() -> None:
    rows = [
        stock_row(strike="0", multiplier=None),
        stock_row(conid=1, strike=0.0, multiplier=0.0),
        stock_row(conid=2, baseMktValue=None, baseAvgCost=None, baseRealizedPnl=None),
    ]
    result = parse_positions(rows, "DU1234567")
    assert result.rejected == []
    assert [p.multiplier for p in result.items] == [Decimal(1)] * 3


def test_option_position_multiplier_100_and_event_contract_1() -> None:
    opt = stock_row(conid=5, assetClass="OPT", avgCost=550.0, avgPrice=5.5, multiplier=None)
    event = stock_row(conid=6, assetClass="OPT", isEventContract=True, avgCost=0.45, avgPrice=0.45)
    result = parse_positions([opt, event], "DU1234567")
    assert [p.multiplier for p in result.items] == [Decimal(100), Decimal(1)]
    assert result.items[1].is_event_contract


def test_future_multiplier_from_avg_cost_over_avg_price() -> None:
    fut = stock_row(conid=7, assetClass="FUT", avgCost=250012.5, avgPrice=5000.25, multiplier=None)
    (pos,) = parse_positions([fut], "DU1234567").items
    assert pos.multiplier == Decimal(50)


def test_row_of_another_account_is_rejected() -> None:
    result = parse_positions([stock_row(), stock_row(acctId="DU7654321", conid=9)], "DU1234567")
    assert [p.conid for p in result.items] == [265598]
    (rejected,) = result.rejected
    assert rejected.account_id == "DU7654321"
    assert "DU7654321" in rejected.reason
    assert rejected.kind == "position"
    assert rejected.key == "9"


def test_row_without_account_is_rejected_not_guessed() -> None:
    row = stock_row()
    del row["acctId"]
    result = parse_positions([row], "DU1234567")
    assert result.items == []
    assert "no usable acctId" in result.rejected[0].reason


def test_unparseable_position_rejected_others_parse() -> None:
    result = parse_positions([stock_row(position="many"), stock_row(conid=3)], "DU1234567")
    assert [p.conid for p in result.items] == [3]
    assert "position" in result.rejected[0].reason
    assert result.rejected[0].raw["position"] == "many"


def test_portfolio2_shape_is_understood() -> None:
    rows = payload("portfolio2_positions_ibkr-conduit.json")
    rows = [dict(r, acctId="U1234567") for r in rows]
    result = parse_positions(rows, "U1234567")
    assert result.rejected == []
    qqq = result.items[0]
    assert qqq.conid == 320227571
    assert qqq.mkt_price == Decimal("584.6799926757812")
    assert qqq.symbol == "QQQ"
    assert qqq.multiplier == Decimal(1)


def test_junk_in_any_field_never_sinks_the_batch() -> None:
    junk_values: list[Any] = [None, "", "x", [], {}, True, float("inf"), float("nan"), 10**40, "1e999999999"]
    good = stock_row()
    rows: list[Any] = [good]
    for key in list(good):
        for junk in junk_values:
            # a conid of its own (unless the conid is the junk): one conid twice would be a conflict
            rows.append({**good, "conid": 1000 + len(rows), key: junk})
    rows += [None, 3, "row"]
    result = parse_positions(rows, "DU1234567")
    assert result.duplicates == result.conflicting == 0
    assert len(result.items) + len(result.rejected) == len(rows)

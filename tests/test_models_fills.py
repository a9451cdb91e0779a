"""Regression tests for parsing /iserver/account/trades rows into Fill."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from conftest import payload

from ibkr_tasks.models import Fill, RejectedRow, parse_fills, split_execution_id


def real_trades() -> list[dict[str, Any]]:
    return payload("iserver_account_trades_tax-loss-direct-indexing.json")


def row(**overrides: Any) -> dict[str, Any]:
    """A trades row shaped like the real INTU capture, with overrides (None deletes a key)."""
    base = dict(real_trades()[0])
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def only_fill(rows: list[Any], **kwargs: Any) -> Fill:
    result = parse_fills(rows, **kwargs)
    assert result.rejected == [], result.rejected
    assert len(result.items) == 1
    return result.items[0]


def only_rejected(rows: list[Any], **kwargs: Any) -> RejectedRow:
    result = parse_fills(rows, **kwargs)
    assert result.items == []
    assert len(result.rejected) == 1
    return result.rejected[0]


def test_real_capture_parses_with_decimals_and_utc_times() -> None:
    result = parse_fills(real_trades())
    assert result.rejected == []
    intu, mrk = result.items
    assert intu.account_id == "DU5822420"
    assert intu.conid == 270662
    assert intu.quantity == Decimal("0.5")
    assert intu.price == Decimal("420.08")
    assert intu.net_amount == Decimal("210.04")
    assert intu.commission == Decimal("1.0")
    assert intu.order_ref == "d8f3af16-8505-4491-b7b2-86d56c627f61"
    assert intu.trade_time == datetime(2022, 9, 2, 18, 59, 31, tzinfo=UTC)
    assert mrk.side == "S" and mrk.signed_quantity == Decimal("-9")
    assert intu.signed_quantity == Decimal("0.5")
    assert intu.raw["directed_exchange"] == "IBKR"


def test_execution_family_and_revision_split_on_final_dot() -> None:
    fill = only_fill([row(execution_id="0000e0d5.6576fd38.01.02")])
    assert fill.execution_family == "0000e0d5.6576fd38.01"
    assert fill.revision == 2
    assert split_execution_id("abc") == ("abc", 0)
    assert split_execution_id("a.b.XY") == ("a.b.XY", 0)


@pytest.mark.parametrize(
    ("value", "amount", "currency"),
    [("1.00", Decimal("1.00"), None), ("1.00 USD", Decimal("1.00"), "USD"), ("0.0", Decimal("0.0"), None)],
)
def test_commission_strings_parse(value: str, amount: Decimal, currency: str | None) -> None:
    fill = only_fill([row(commission=value)])
    assert fill.commission == amount
    assert fill.commission_currency == currency


def test_commission_1_00_usd_parses() -> None:
    fill = only_fill([row(commission="1.00 USD")])
    assert fill.commission == Decimal("1.00")
    assert fill.commission_currency == "USD"


@pytest.mark.parametrize("value", [None, "", "NA"])
def test_fill_without_commission_is_pending_not_zero(value: str | None) -> None:
    fill = only_fill([row(commission=value) if value is not None else row(commission=None)])
    assert fill.commission is None
    assert fill.is_commission_pending
    assert fill.commission_currency is None


def test_zero_commission_is_zero_not_pending() -> None:
    fill = only_fill([row(commission="0.0")])
    assert fill.commission == Decimal("0")
    assert not fill.is_commission_pending


def test_commission_currency_falls_back_to_trade_currency() -> None:
    fill = only_fill([row(commission="1.5", currency="EUR")])
    assert fill.commission_currency == "EUR"


def test_unparseable_commission_rejects_row() -> None:
    rejected = only_rejected([row(commission="one dollar")])
    assert "commission" in rejected.reason


def test_trade_time_from_trade_time_r_int64() -> None:
    # 1787839398000 ms exceeds int32; it is 2026-08-27 14:03:18 UTC.
    fill = only_fill([row(trade_time_r=1787839398000, trade_time="20000101-00:00:00")])
    assert fill.trade_time == datetime(2026, 8, 27, 14, 3, 18, tzinfo=UTC)
    assert fill.trade_time.tzinfo is not None


def test_trade_time_r_agrees_with_trade_time_in_real_capture() -> None:
    for fill in parse_fills(real_trades()).items:
        assert fill.trade_time.strftime("%Y%m%d-%H:%M:%S") == fill.raw["trade_time"]


def test_trade_time_falls_back_to_trade_time_text() -> None:
    fill = only_fill([row(trade_time_r=None, trade_time="20240103-20:10:41")])
    assert fill.trade_time == datetime(2024, 1, 3, 20, 10, 41, tzinfo=UTC)


def test_trade_time_zero_falls_back_and_never_1970() -> None:
    fill = only_fill([row(trade_time_r=0)])
    assert fill.trade_time == datetime(2022, 9, 2, 18, 59, 31, tzinfo=UTC)
    rejected = only_rejected([row(trade_time_r=0, trade_time=None)])
    assert "trade_time" in rejected.reason


def test_price_string_with_prefix_and_commas() -> None:
    assert only_fill([row(price="C1,234.50")]).price == Decimal("1234.50")
    assert only_fill([row(price=420.08)]).price == Decimal("420.08")
    assert "price" in only_rejected([row(price="abc")]).reason


def test_opt_fill_has_multiplier_100() -> None:
    fill = only_fill([row(sec_type="OPT", price="5.5", size=1, net_amount=550.0)])
    assert fill.multiplier == Decimal(100)


def test_opt_expiry_side_x_reduces_position() -> None:
    fill = only_fill([row(sec_type="OPT", side="X", price="0.0", size=2, net_amount=0.0)])
    assert fill.multiplier == Decimal(100)
    assert fill.signed_quantity == Decimal(-2)


def test_forecastex_event_contract_multiplier_is_1() -> None:
    fill = only_fill(
        [row(sec_type="OPT", exchange="FORECASTX", is_event_trading="1", side="N", price="0.45")]
    )
    assert fill.is_event_contract
    assert fill.multiplier == Decimal(1)
    assert fill.signed_quantity == -fill.quantity


def test_cme_event_contract_fop_ec_class_multiplier_is_1() -> None:
    fill = only_fill([row(sec_type="FOP", trading_class="ECNQ", exchange="CME")])
    assert fill.is_event_contract and fill.multiplier == Decimal(1)


def test_stk_multiplier_is_1() -> None:
    assert only_fill([row()]).multiplier == Decimal(1)


def test_fut_multiplier_from_contract_info_mapping() -> None:
    fill = only_fill([row(sec_type="FUT", net_amount=None)], multipliers={270662: Decimal(50)})
    assert fill.multiplier == Decimal(50)


def test_fut_multiplier_derived_from_exact_net_amount() -> None:
    fill = only_fill([row(sec_type="FUT", size=2, price="5000.25", net_amount=500025.0)])
    assert fill.multiplier == Decimal(50)


def test_fut_multiplier_unknown_rejects_instead_of_guessing_1x() -> None:
    rejected = only_rejected([row(sec_type="FUT", net_amount=None)])
    assert "multiplier unknown" in rejected.reason
    assert rejected.key == "00012735.6311860f.01.01"


def test_payload_multiplier_wins() -> None:
    assert only_fill([row(sec_type="OPT", multiplier="10")]).multiplier == Decimal(10)


def test_bad_rows_are_rejected_with_raw_and_others_still_parse() -> None:
    good = row()
    no_id = row(execution_id=None)
    bad_size = row(execution_id="x.1", size="lots")
    no_account = row(execution_id="y.1", account=None, accountCode=None)
    result = parse_fills([no_id, good, bad_size, no_account, "junk"])
    assert [f.execution_id for f in result.items] == [good["execution_id"]]
    reasons = [r.reason for r in result.rejected]
    assert "execution_id" in reasons[0]
    assert "size" in reasons[1]
    assert "account" in reasons[2]
    assert result.rejected[0].raw == no_id
    assert result.rejected[0].account_id == "DU5822420"
    assert result.rejected[2].account_id is None
    assert result.rejected[3].raw == "junk"
    assert all(r.kind == "fill" for r in result.rejected)


def test_conflicting_account_fields_reject() -> None:
    rejected = only_rejected([row(account="DU1", accountCode="DU2")])
    assert rejected.account_id is None


def test_unknown_side_rejects() -> None:
    assert "side" in only_rejected([row(side="Q")]).reason


def test_order_id_number_kept_as_string() -> None:
    assert only_fill([row(order_id=1370093239)]).order_id == "1370093239"


def test_fill_is_frozen() -> None:
    fill = only_fill([row()])
    with pytest.raises(ValueError):
        fill.price = Decimal(1)  # type: ignore[misc]


def test_currency_from_contract_mapping_when_row_has_none() -> None:
    fill = only_fill([row(commission="2.5")], currencies={270662: "CAD"})
    assert fill.currency == "CAD" and fill.commission_currency == "CAD"
    assert only_fill([row(currency="USD")], currencies={270662: "CAD"}).currency == "USD"


@pytest.mark.parametrize("bad", [1662145171000000, 10**30, "soon", -5])
def test_absurd_trade_time_r_falls_back_to_trade_time(bad: Any) -> None:
    fill = only_fill([row(trade_time_r=bad)])
    assert fill.trade_time == datetime(2022, 9, 2, 18, 59, 31, tzinfo=UTC)


JUNK_VALUES: list[Any] = [
    None,
    "",
    "x",
    [],
    {},
    [1],
    {"a": 1},
    True,
    float("inf"),
    float("nan"),
    10**40,
    -1,
    "1e999999999",
]


def test_junk_in_any_field_never_sinks_the_batch() -> None:
    good = row()
    rows: list[Any] = [good]
    for key in list(good):
        for junk in JUNK_VALUES:
            rows.append({**good, key: junk, "execution_id": f"{key}-{len(rows)}.01"})
    rows += [None, 3, "row", [good]]
    result = parse_fills(rows)
    assert len(result.items) + len(result.rejected) == len(rows)
    assert result.items[0].execution_id == good["execution_id"]
    for fill in result.items:
        assert fill.trade_time.year >= 2000 and fill.quantity >= 0


@pytest.mark.parametrize("junk", [["DU1"], 12345, "not an account", "DU5822420; DROP"])
def test_account_that_is_not_an_account_id_is_unattributed(junk: Any) -> None:
    rejected = only_rejected([row(account=junk, accountCode=junk)])
    assert rejected.account_id is None


def test_fills_by_account_survives_pickling_with_unattributed_rows() -> None:
    """Prefect persists task results with pickle: the side lists must survive the round trip."""
    import pickle

    from ibkr_tasks.models import FillsByAccount, ParseResult

    grouped = FillsByAccount()
    grouped["DU5822420"] = parse_fills(real_trades())
    grouped["DU1"] = ParseResult()
    grouped.unattributed.append(RejectedRow(kind="fill", reason="row has no account", raw={"x": 1}))
    grouped.other_accounts["DU2"] = 3
    copy = pickle.loads(pickle.dumps(grouped))  # noqa: S301 (our own object)
    assert copy == grouped
    assert copy.unattributed == grouped.unattributed and copy.other_accounts == {"DU2": 3}

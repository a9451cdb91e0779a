"""Flex XML parsing: the 12 kept statements, generated statements in every date/time format,
cancellations, multipliers, commissions, rejections and bounded memory."""

from __future__ import annotations

import io
import itertools
import re
import tracemalloc
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import FLEX_STATEMENTS

from ibkr_tasks.flex import FlexParseError
from ibkr_tasks.flex.parse import iter_flex, parse_flex
from ibkr_tasks.flex.times import DATE_FORMATS, FlexDateReader
from ibkr_tasks.sim.flex_xml import SEPARATORS, TIME_FORMATS, FlexFormat, Section, write_response

FLEX = FLEX_STATEMENTS
SAMPLES = sorted(FLEX.glob("*.xml"))
NY = ZoneInfo("America/New_York")


def sample(name: str) -> Path:
    path = FLEX / name
    assert path.exists(), f"missing fixture {path}"  # a failure, never a skip
    return path


def test_all_twelve_samples_are_kept_with_provenance() -> None:
    assert len(SAMPLES) == 12
    for path in SAMPLES:
        src = path.with_suffix(".src.txt").read_text()
        for key in ("repo:", "path:", "commit:"):
            assert key in src, f"{path.name}.src.txt lacks {key}"
        assert path.name in (FLEX / "PROVENANCE.md").read_text()


# --- an oracle independent of the parser: the statement's own attributes, read with ElementTree ---

# How each sample prints a trade's time (checked by eye against the files).
_TIME_SHAPES = {
    "pp01_stk_opt_fxtx_corpactions_cash.xml": ("tradeDate+tradeTime", "%Y%m%d%H%M%S"),
    "pp02_acctinfo_stk_opt_div_wht.xml": ("tradeDate+tradeTime", "%Y%m%d%H%M%S"),
    "pp14_stk_cashfx_cashreport_rates.xml": ("dateTime", "%Y%m%d;%H%M%S"),
    "pp26_multi_account_two_statements.xml": ("dateTime", "%Y%m%d;%H%M%S"),
    "vroonhof_activity_basic_handmade.xml": ("tradeDate+tradeTime", "%Y-%m-%d%H%M%S"),
    "gabbersepp_tradeconfirms.xml": ("dateTime", "%Y%m%d;%H%M%S"),
    "pp12_cashtx_dividends_wht_fees.xml": ("dateTime", "%Y%m%d;%H%M%S"),
    "pp20_assetsummary_symbolsummary_order_trade.xml": (None, None),
}

# Placeholders the original authors put where ids were: replaced to read every amount.
_DEANONYMISE = {
    "gabbersepp_tradeconfirms.xml": [("AccID4711", "U4711000"), ("xxxxxx", "U4711000")],
    "pp12_cashtx_dividends_wht_fees.xml": [
        ('accountId="XXXXXUSD"', 'accountId="U7654321"'),
        ('accountId="XXXXXXXX"', 'accountId="U7654321"'),
        ('conid="XXXXXCAD"', 'conid="1001"'),
        ('conid="XXXXXUSD"', 'conid="1002"'),
    ],
}


def _deanonymised(name: str) -> bytes:
    text = sample(name).read_text()
    for old, new in _DEANONYMISE.get(name, []):
        text = text.replace(old, new)
    return text.encode()


def _expected_time(name: str, attrs: dict[str, str]) -> datetime | None:
    shape, fmt = _TIME_SHAPES[name]
    if shape is None:
        return None
    text = attrs["dateTime"] if shape == "dateTime" else attrs["tradeDate"] + attrs["tradeTime"]
    return datetime.strptime(text, fmt).replace(tzinfo=NY).astimezone(UTC)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses_and_loses_no_execution_row(path: Path) -> None:
    data = _deanonymised(path.name)
    response = parse_flex(data)
    root = ET.fromstring(data)  # noqa: S314 - our own fixture
    assert len(response.statements) == len(root.findall("./FlexStatements/FlexStatement"))
    rows = [
        el.attrib
        for el in root.iter()
        if el.tag in ("Trade", "TradeConfirm") and el.get("levelOfDetail", "EXECUTION") == "EXECUTION"
    ]
    if path.name == "pp12_cashtx_dividends_wht_fees.xml":
        # the query behind this file prints no tradePrice: its 4 trades are rejected, not priced at 0
        assert [r.reason for r in response.all_rejected] == ["row has no tradePrice"] * 4
        assert [r.raw["attributes"]["quantity"] for r in response.all_rejected] == ["400", "200", "35", "50"]
        rows = []
    else:
        assert not response.all_rejected, [r.reason for r in response.all_rejected]
    executions = response.executions
    assert len(executions) == len(rows)
    for attrs, fill in zip(rows, executions, strict=True):
        tc = "execID" in attrs or "commission" in attrs
        assert fill.quantity == abs(Decimal(attrs["quantity"]))
        assert fill.signed_quantity == Decimal(attrs["quantity"])
        assert fill.price == Decimal(attrs["price" if tc else "tradePrice"])
        assert fill.multiplier == Decimal(attrs["multiplier"])
        assert fill.commission == -Decimal(attrs["commission" if tc else "ibCommission"])
        assert fill.currency == attrs["currency"]
        assert fill.execution_id == (attrs.get("execID" if tc else "ibExecID") or None)
        assert fill.trade_time == _expected_time(path.name, attrs)
        assert fill.trade_time is None or fill.trade_time.tzinfo is UTC
        assert fill.source == ("trade_confirmation" if tc else "activity")
        for key in ("proceeds", "netCash"):
            if attrs.get(key):
                assert getattr(fill, "proceeds" if key == "proceeds" else "net_cash") == Decimal(attrs[key])
    cash_rows = [el.attrib for el in root.iter("CashTransaction")]
    assert [c.amount for c in response.statements for c in c.cash_transactions] == [
        Decimal(a["amount"]) for a in cash_rows
    ]


def test_pp01_spot_values() -> None:
    statement = parse_flex(sample("pp01_stk_opt_fxtx_corpactions_cash.xml")).statements[0]
    first = statement.executions[0]
    assert first.execution_id == "0000d514.5159662d.01.01"
    assert (first.quantity, first.side, first.price, first.commission) == (
        Decimal(5000),
        "B",
        Decimal("0.27"),
        Decimal("6.75"),
    )
    assert first.commission_currency == "CAD"
    assert first.trade_time == datetime(2013, 4, 1, 13, 34, 6, tzinfo=UTC)  # 09:34:06 EDT
    option = statement.executions[-1]
    assert (option.sec_type, option.multiplier, option.commission) == ("OPT", Decimal(100), Decimal("0.8956"))
    # "yyyy-MM-dd, HH:mm:ss" is not used here; cash dates are date-only: no invented time
    fee = statement.cash_transactions[0]
    assert (fee.type, fee.amount, fee.currency, fee.date, fee.datetime) == (
        "Other Fees",
        Decimal(-10),
        "CHF",
        date(2013, 1, 3),
        None,
    )
    assert statement.when_generated == datetime(2013, 1, 2, 6, 25, 14, tzinfo=UTC)  # "20130102 01:25:14" EST


def test_pp02_assignments_without_execution_id_are_fills_with_stable_keys() -> None:
    executions = parse_flex(sample("pp02_acctinfo_stk_opt_div_wht.xml")).executions
    booked = [e for e in executions if e.transaction_type == "BookTrade"]
    assert len(booked) == 2 and all(e.execution_id is None for e in booked)
    assert {e.key for e in booked} == {"trade:1908991475", "trade:1908991474"}
    assert booked[0].notes == ("A",)
    assert booked[1].commission == Decimal(0) and str(booked[1].commission) == "0"  # not "-0"
    assert len({e.key for e in executions}) == len(executions)


def test_pp14_fx_trades_and_eastern_standard_time() -> None:
    executions = parse_flex(sample("pp14_stk_cashfx_cashreport_rates.xml")).executions
    chf = executions[0]
    assert chf.trade_time == datetime(2023, 2, 10, 12, 15, 26, tzinfo=UTC)  # 07:15:26 EST
    fx = [e for e in executions if e.sec_type == "CASH"]
    assert [(e.side, e.quantity, e.price, e.commission) for e in fx] == [
        ("S", Decimal(1200), Decimal("1.0842"), Decimal("1.84194")),
        ("S", Decimal(1235), Decimal("1.06175"), Decimal("1.88208")),
    ]


def test_trade_confirmation_statement() -> None:
    response = parse_flex(_deanonymised("gabbersepp_tradeconfirms.xml"))
    statement = response.statements[0]
    assert statement.kind == "trade_confirmation"
    assert [e.execution_id for e in statement.executions] == ["x.01", "y.01", "z.a.b.01", "i.j.k.01"]
    first = statement.executions[0]
    assert (first.side, first.quantity, first.price, first.multiplier) == (
        "S",
        Decimal(1),
        Decimal(4),
        Decimal(100),
    )
    assert (first.commission, first.commission_currency, first.trade_money) == (
        Decimal("1.65"),
        "USD",
        Decimal(-400),
    )
    assert first.order_id == "1116965776"
    assert first.trade_time == datetime(2018, 11, 13, 15, 35, 23, tzinfo=UTC)  # 10:35:23 EST


def test_anonymised_account_ids_are_rejected_not_dropped() -> None:
    statement = parse_flex(sample("gabbersepp_tradeconfirms.xml")).statements[0]
    assert statement.account_id is None and statement.executions == []
    assert len(statement.rejected) == 4
    rejected = statement.rejected[0]
    assert rejected.kind == "flex_execution" and rejected.key == "x.01"
    assert "AccID4711" in rejected.reason
    assert rejected.raw["element"] == "TradeConfirm" and rejected.raw["attributes"]["execID"] == "x.01"
    pp12 = parse_flex(sample("pp12_cashtx_dividends_wht_fees.xml"))
    assert len(pp12.all_rejected) == 4 + 14
    assert pp12.skipped == {"AccountInformation": 1}


def test_summary_order_and_lot_rows_are_never_fills() -> None:
    statement = parse_flex(sample("pp20_assetsummary_symbolsummary_order_trade.xml")).statements[0]
    assert len(statement.executions) == 1
    fill = statement.executions[0]
    assert (fill.execution_id, fill.quantity, fill.commission) == (
        "0000d7a7.63ce4806.01.01",
        Decimal(157),
        Decimal(2),
    )
    assert fill.trade_time is None and fill.trade_date == date(2023, 1, 23)  # the query prints no time
    assert {k: statement.skipped[k] for k in ("AssetSummary", "SymbolSummary", "Order")} == {
        "AssetSummary": 1,
        "SymbolSummary": 1,
        "Order": 1,
    }


def test_multi_account_response_reads_every_statement() -> None:
    response = parse_flex(sample("pp26_multi_account_two_statements.xml"))
    assert [s.account_id for s in response.statements] == ["U1234567", "U1234568"]
    first, second = response.statements
    assert [e.account_id for e in first.executions] == ["U1234567"]
    assert first.executions[0].trade_time == datetime(2025, 9, 12, 13, 44, 50, tzinfo=UTC)  # 09:44:50 EDT
    assert first.executions[0].key.startswith("row:")  # ids stripped by the authors: a digest key
    assert [(c.account_id, c.amount) for c in first.cash_transactions] == [("U1234567", Decimal("13.90"))]
    assert [(c.account_id, c.amount) for c in second.cash_transactions] == [
        ("U1234568", Decimal("1.39")),
        ("U1234568", Decimal("62.05")),
    ]


def test_repeated_statements_are_all_read_and_identical_rows_share_keys() -> None:
    response = parse_flex(sample("pp29_three_statements_count_mismatch.xml"))
    assert response.declared_count == 2 and len(response.statements) == 3
    keys = [c.key for s in response.statements for c in s.cash_transactions]
    assert len(keys) == 5
    again = parse_flex(sample("pp29_three_statements_count_mismatch.xml"))
    assert keys == [c.key for s in again.statements for c in s.cash_transactions]


def test_identical_rows_in_one_statement_keep_distinct_keys_and_positions() -> None:
    statement = parse_flex(sample("pp17_all_sections_openpos_equitysummary_divaccruals.xml")).statements[0]
    fees = statement.cash_transactions
    assert [f.amount for f in fees] == [Decimal("-1.5")] * 3
    assert len({f.key for f in fees}) == 3
    assert fees[0].datetime == datetime(2023, 3, 2, 22, 3, 43, tzinfo=UTC)  # 17:03:43 EST
    quantities = statement.position_quantities()
    assert quantities[("U1111111", 608947941)] == Decimal(-1)
    option = next(p for p in statement.open_positions if p.conid == 608947941)
    assert (option.multiplier, option.mark_price, option.report_date) == (
        Decimal(100),
        Decimal("0.0368"),
        date(2023, 3, 2),
    )


def test_legacy_comma_space_separator() -> None:
    cash = parse_flex(sample("vroonhof_legacy_separator_handmade.xml")).statements[0].cash_transactions[0]
    assert cash.datetime == datetime(2017, 1, 2, 14, 0, tzinfo=UTC)  # "2017-01-02, 090000" EST
    assert cash.type == "Deposits & Withdrawals" and cash.amount == Decimal("5000.00")


def test_sources_path_str_bytes_and_file_object_agree() -> None:
    path = sample("pp14_stk_cashfx_cashreport_rates.xml")
    expected = parse_flex(path)
    assert parse_flex(str(path)) == expected
    assert parse_flex(path.read_bytes()) == expected
    assert parse_flex(path.read_text()) == expected
    with path.open("rb") as handle:
        assert parse_flex(handle) == expected


# --- generated statements ----------------------------------------------------------------------

T0 = datetime(2025, 1, 15, 19, 30, 5, tzinfo=UTC)  # 14:30:05 EST
T1 = datetime(2025, 7, 31, 13, 45, 0, tzinfo=UTC)  # 09:45:00 EDT


def trade(fmt: FlexFormat, **over: object) -> tuple[str, dict[str, str]]:
    when = over.pop("when", T0)
    assert isinstance(when, datetime)
    row: dict[str, object] = {
        "accountId": "U1234567",
        "currency": "USD",
        "assetCategory": "STK",
        "symbol": "AAPL",
        "conid": "265598",
        "multiplier": "1",
        "tradeDate": fmt.date(when.astimezone(NY).date()),
        "dateTime": fmt.datetime(when),
        "reportDate": fmt.date(when.astimezone(NY).date()),
        "settleDateTarget": fmt.date(date(2025, 1, 17)),
        "transactionType": "ExchTrade",
        "exchange": "NASDAQ",
        "quantity": "100",
        "tradePrice": "150.25",
        "tradeMoney": "15025",
        "proceeds": "-15025",
        "taxes": "0",
        "ibCommission": "-1.000720223",
        "ibCommissionCurrency": "USD",
        "netCash": "-15026.000720223",
        "notes": "P;",
        "transactionID": "5001",
        "buySell": "BUY",
        "ibOrderID": "9001",
        "ibExecID": "0000e0d5.6576fd38.01.01",
        "tradeID": "7001",
        "origTradeID": "",
        "orderReference": "rebal-1",
        "levelOfDetail": "EXECUTION",
    }
    row.update(over)
    return "Trade", {k: str(v) for k, v in row.items()}


def statement_xml(
    fmt: FlexFormat, trades: list[tuple[str, dict[str, str]]], extra: list[Section] | None = None
) -> bytes:
    out = io.StringIO()
    header = {
        "accountId": "U1234567",
        "fromDate": fmt.date(date(2025, 1, 2)),
        "toDate": fmt.date(date(2025, 7, 31)),
        "period": "",
        "whenGenerated": fmt.datetime(datetime(2025, 8, 1, 10, 0, tzinfo=UTC)),
    }
    cash = Section(
        "CashTransactions",
        [
            (
                "CashTransaction",
                {
                    "accountId": "U1234567",
                    "currency": "USD",
                    "conid": "265598",
                    "symbol": "AAPL",
                    "dateTime": fmt.datetime(datetime(2025, 1, 3, 1, 20, tzinfo=UTC)),
                    "reportDate": fmt.date(date(2025, 1, 2)),
                    "amount": "-3.75",
                    "type": "Withholding Tax",
                    "transactionID": "8001",
                    "description": "AAPL CASH DIVIDEND",
                    "levelOfDetail": "DETAIL",
                },
            )
        ],
    )
    write_response(
        out,
        query_name="generated",
        statements=[(header, [Section("Trades", trades), cash, *(extra or [])])],
    )
    return out.getvalue().encode()


FORMATS = list(itertools.product(DATE_FORMATS, TIME_FORMATS, SEPARATORS))


@pytest.mark.parametrize(("date_format", "time_format", "separator"), FORMATS)
def test_every_date_time_format_combination(date_format: str, time_format: str, separator: str) -> None:
    fmt = FlexFormat(date_format, time_format, separator)
    data = statement_xml(
        fmt, [trade(fmt), trade(fmt, when=T1, ibExecID="0000e0d5.6576fd39.01.01", tradeID="7002")]
    )
    statement = parse_flex(data).statements[0]
    assert not statement.rejected, statement.rejected
    assert [e.trade_time for e in statement.executions] == [T0, T1]
    assert [e.trade_date for e in statement.executions] == [date(2025, 1, 15), date(2025, 7, 31)]
    assert statement.executions[0].settle_date == date(2025, 1, 17)
    assert (statement.from_date, statement.to_date) == (date(2025, 1, 2), date(2025, 7, 31))
    assert statement.when_generated == datetime(2025, 8, 1, 10, 0, tzinfo=UTC)
    cash = statement.cash_transactions[0]
    # 01:20 UTC on Jan 3 is 20:20 EST on Jan 2: the statement's date is the Eastern date
    assert (cash.date, cash.datetime) == (date(2025, 1, 2), datetime(2025, 1, 3, 1, 20, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20220125;105910", datetime(2022, 1, 25, 15, 59, 10, tzinfo=UTC)),
        ("2013-03-05, 19:45:00", datetime(2013, 3, 6, 0, 45, tzinfo=UTC)),
        ("2022-02-1510:20:26", datetime(2022, 2, 15, 15, 20, 26, tzinfo=UTC)),
        ("2025-04-25;10:19:55 EDT", datetime(2025, 4, 25, 14, 19, 55, tzinfo=UTC)),
        ("2025-05-22 20:41:57 AEST", datetime(2025, 5, 22, 10, 41, 57, tzinfo=UTC)),
        ("15/01/25 14:30:00", datetime(2025, 1, 15, 19, 30, tzinfo=UTC)),
        ("01/15/2025143000", datetime(2025, 1, 15, 19, 30, tzinfo=UTC)),
        ("15-Jan-25;143000", datetime(2025, 1, 15, 19, 30, tzinfo=UTC)),
        ("20250115,143000 UTC", datetime(2025, 1, 15, 14, 30, tzinfo=UTC)),
    ],
)
def test_literal_flex_datetimes(text: str, expected: datetime) -> None:
    assert FlexDateReader().datetime(text).at == expected


def test_unknown_time_zone_is_not_guessed() -> None:
    with pytest.raises(ValueError, match="time zone 'XYZT'"):
        FlexDateReader().datetime("20250115;143000 XYZT")


def test_ambiguous_slash_dates_need_the_query_date_format() -> None:
    fmt = FlexFormat("dd/MM/yyyy")
    early = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)  # 04/03/2025: day and month both <= 12
    data = statement_xml(fmt, [trade(fmt, when=early, settleDateTarget=fmt.date(date(2025, 3, 6)))])
    data = data.replace(fmt.date(date(2025, 7, 31)).encode(), fmt.date(date(2025, 3, 5)).encode())
    data = data.replace(fmt.date(date(2025, 1, 2)).encode(), fmt.date(date(2025, 3, 3)).encode())
    data = re.sub(rb'whenGenerated="[^"]*"', b'whenGenerated=""', data)
    guessed = parse_flex(data).statements[0]
    assert guessed.executions == [] and guessed.rejected
    assert "date_format" in guessed.rejected[0].reason
    told = parse_flex(data, date_format="dd/MM/yyyy").statements[0]
    assert told.executions[0].trade_date == date(2025, 3, 4)
    assert told.executions[0].trade_time == early


def test_cancellation_pairs_with_the_fill_it_names() -> None:
    fmt = FlexFormat()
    original = trade(fmt)
    cancel = trade(
        fmt,
        when=datetime(2025, 1, 16, 15, 0, tzinfo=UTC),
        transactionType="TradeCancel",
        buySell="SELL (Ca.)",
        quantity="-100",
        proceeds="15025",
        ibCommission="1.000720223",
        notes="Ca",
        ibExecID="",
        tradeID="",
        transactionID="5009",
        origTradeID="7001",
        origTransactionID="5001",
        origOrderID="9001",
        origTradePrice="150.25",
        origTradeDate=fmt.date(date(2025, 1, 15)),
    )
    orphan = trade(
        fmt,
        transactionType="TradeCancel",
        buySell="BUY (Ca.)",
        ibExecID="",
        tradeID="",
        transactionID="5010",
        origTradeID="6999",
        quantity="5",
    )
    other = trade(fmt, ibExecID="0000e0d5.6576fd3a.01.01", tradeID="7003", transactionID="5003")
    statement = parse_flex(statement_xml(fmt, [original, cancel, orphan, other])).statements[0]
    assert [e.execution_id for e in statement.executions] == [
        "0000e0d5.6576fd38.01.01",
        "0000e0d5.6576fd3a.01.01",
    ]
    assert [e.cancelled for e in statement.executions] == [True, False]
    paired, unpaired = statement.cancellations
    assert paired.cancelled_execution_id == "0000e0d5.6576fd38.01.01"
    assert (paired.orig_trade_id, paired.orig_transaction_id, paired.side, paired.quantity) == (
        "7001",
        "5001",
        "S",
        Decimal(100),
    )
    assert paired.commission == Decimal("-1.000720223")  # the refund of a cost
    assert paired.orig_trade_date == date(2025, 1, 15) and paired.key == "cancel:5009"
    assert unpaired.cancelled_execution_id is None and unpaired.orig_trade_id == "6999"


def test_correction_is_a_revision_of_its_execution_family() -> None:
    fmt = FlexFormat()
    corrected = trade(
        fmt, transactionType="TradeCorrect", notes="Co", ibExecID="0000e0d5.6576fd38.01.02", tradeID="7010"
    )
    fill = parse_flex(statement_xml(fmt, [corrected])).executions[0]
    assert (fill.execution_family, fill.revision, fill.is_correction) == ("0000e0d5.6576fd38.01", 2, True)


@pytest.mark.parametrize(
    ("category", "multiplier", "price", "money"),
    [("OPT", "5", "2.5", "25"), ("OPT", "1000", "0.35", "700"), ("FOP", "62500", "0.0021", "262.5")],
)
def test_multipliers_come_from_the_statement(category: str, multiplier: str, price: str, money: str) -> None:
    fmt = FlexFormat()
    row = trade(
        fmt,
        assetCategory=category,
        multiplier=multiplier,
        tradePrice=price,
        quantity="2",
        tradeMoney=money,
        conid="4242",
    )
    fill = parse_flex(statement_xml(fmt, [row])).executions[0]
    assert fill.multiplier == Decimal(multiplier) and fill.price == Decimal(price)
    assert fill.trade_money == Decimal(money) == fill.quantity * fill.price * fill.multiplier


def test_commission_sign_rebate_and_currency() -> None:
    fmt = FlexFormat()
    rebate = trade(fmt, ibCommission="0.25", tradeID="7020", ibExecID="a.b.01.01")
    cad = trade(fmt, ibCommission="-2.1", ibCommissionCurrency="CAD", tradeID="7021", ibExecID="a.b.02.01")
    fills = parse_flex(statement_xml(fmt, [rebate, cad])).executions
    assert fills[0].commission == Decimal("-0.25")
    assert (fills[1].commission, fills[1].commission_currency, fills[1].currency) == (
        Decimal("2.1"),
        "CAD",
        "USD",
    )


def test_bad_rows_are_rejected_with_raw_attributes_and_the_rest_goes_through() -> None:
    fmt = FlexFormat()
    rows = [
        trade(fmt, tradePrice="abc", tradeID="1", ibExecID="bad.price.01.01"),
        trade(fmt, multiplier="", tradeID="2", ibExecID="no.mult.01.01"),
        trade(fmt, buySell="SELL", tradeID="3", ibExecID="contra.01.01"),  # quantity +100
        trade(fmt, dateTime="yesterday", tradeDate="", tradeID="4", ibExecID="bad.time.01.01"),
        trade(fmt, tradeID="5", ibExecID="good.01.01"),
    ]
    statement = parse_flex(statement_xml(fmt, rows)).statements[0]
    assert [e.execution_id for e in statement.executions] == ["good.01.01"]
    reasons = {r.key: r.reason for r in statement.rejected}
    assert "tradePrice" in reasons["bad.price.01.01"]
    assert "never guessed" in reasons["no.mult.01.01"]
    assert "contradicts" in reasons["contra.01.01"]
    assert "dateTime" in reasons["bad.time.01.01"]
    assert statement.rejected[0].raw["attributes"]["tradePrice"] == "abc"
    assert all(r.account_id == "U1234567" for r in statement.rejected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not XML"),
        (b"ClientAccountID,AccountAlias\nU1,x\n", "not XML"),
        (b"<html><body>Login</body></html>", "root element is <html>"),
        (
            b"<FlexStatementResponse><Status>Warn</Status><ErrorCode>1019</ErrorCode></FlexStatementResponse>",
            "status answer",
        ),
        (
            b'<FlexQueryResponse queryName="q"><FlexStatements count="1"><FlexStatement accountId="U1"',
            "line 1",
        ),
    ],
)
def test_input_that_is_not_a_flex_response_raises_a_typed_error(data: bytes, message: str) -> None:
    with pytest.raises(FlexParseError, match=message):
        parse_flex(data, source_name="stmt.xml")


def test_truncated_file_error_names_the_file_and_where(tmp_path: Path) -> None:
    path = tmp_path / "cut.xml"
    path.write_bytes(sample("pp01_stk_opt_fxtx_corpactions_cash.xml").read_bytes()[:5000])
    with pytest.raises(FlexParseError) as caught:
        parse_flex(path)
    assert str(path) in str(caught.value) and caught.value.where and "line" in caught.value.where
    with pytest.raises(FlexParseError, match="cannot open"):
        parse_flex(tmp_path / "missing.xml")


def _big_statement(path: Path, count: int) -> None:
    fmt = FlexFormat()
    rows = (
        trade(fmt, tradeID=str(n), transactionID=str(n), ibExecID=f"0000e0d5.{n:08x}.01.01")
        for n in range(count)
    )
    with path.open("w") as out:
        write_response(
            out,
            query_name="big",
            count=1,
            statements=[({"accountId": "U1234567"}, [Section("Trades", rows)])],
        )


def test_streaming_memory_does_not_grow_with_the_statement(tmp_path: Path) -> None:
    peaks = {}
    for count in (100, 1_000, 8_000):  # the first pass warms up lazy imports and caches
        path = tmp_path / f"s{count}.xml"
        _big_statement(path, count)
        tracemalloc.start()
        seen = sum(1 for _, row in iter_flex(path) if row is not None)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == count
    # Kept rows would cost about 6 KB each: 7,000 more rows, some 40 MB more. Streaming adds next to nothing
    # (what the rest of the suite has cached moves the absolute figures, so compare the growth).
    assert peaks[8_000] - peaks[1_000] < 1_000_000, peaks

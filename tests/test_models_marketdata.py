"""Snapshot parsing and the lenient number helpers it relies on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from conftest import payload

from ibkr_tasks.models import parse_snapshot
from ibkr_tasks.models.numbers import parse_amount_with_currency, parse_decimal, parse_market_value


def test_real_snapshot_capture_parses_mark_and_last() -> None:
    rows = payload("iserver_marketdata_snapshot_tax-loss-direct-indexing.json")
    snaps = [parse_snapshot(r) for r in rows]
    aapl = snaps[3]
    assert aapl.conid == 265598
    assert aapl.last == Decimal("156.08")
    assert aapl.mark == Decimal("155.97")
    assert aapl.availability == "RivB"
    assert aapl.updated == datetime(2022, 9, 7, 22, 40, 13, 196000, tzinfo=UTC)
    assert all(s.has_data for s in snaps)


def test_ibkr_doc_example_with_thousands_separator() -> None:
    row = {
        "31": "168.42",
        "6119": "q1",
        "6509": "RpB",
        "7059": "100",
        "84": "168.41",
        "85": "600",
        "86": "168.42",
        "88": "1,300",
        "_updated": 1712596911593,
        "conid": 265598,
        "conidEx": "265598",
        "server_id": "q1",
    }
    snap = parse_snapshot(row)
    assert snap.bid == Decimal("168.41") and snap.ask == Decimal("168.42")
    assert snap.bid_size == Decimal(1300)
    assert snap.ask_size == Decimal(600)
    assert snap.last_size == Decimal(100)


def test_preflight_answer_has_no_data() -> None:
    snap = parse_snapshot({"conid": 265598, "conidEx": "265598"})
    assert not snap.has_data
    assert snap.last is None


def test_prefix_flags_suffixes_and_percent() -> None:
    snap = parse_snapshot({"conid": 1, "31": "C168.42", "87": "1.2K", "83": "0.54%", "82": "-1.05"})
    assert snap.last == Decimal("168.42") and snap.last_is_prior_close and not snap.halted
    assert snap.volume == Decimal(1200)
    assert snap.change_pct == Decimal("0.54")
    assert snap.change == Decimal("-1.05")
    halted = parse_snapshot({"conid": 1, "31": "H12.5", "87": "3.4M"})
    assert halted.halted and halted.last == Decimal("12.5")
    assert halted.volume == Decimal(3_400_000)


def test_garbage_field_becomes_none_not_an_error() -> None:
    snap = parse_snapshot({"conid": 1, "31": "n/a", "84": "-"})
    assert snap.last is None and snap.bid is None


def test_parse_decimal_never_goes_through_binary_float_noise() -> None:
    assert parse_decimal(0.1) == Decimal("0.1")
    assert parse_decimal("1,005,254") == Decimal(1005254)
    for bad in (None, "", "abc", True, float("nan"), "1e999999999", 10**40):
        with pytest.raises(ValueError):
            parse_decimal(bad)


def test_amount_with_currency() -> None:
    assert parse_amount_with_currency("1,005,254 USD") == (Decimal(1005254), "USD")
    assert parse_amount_with_currency(1.5) == (Decimal("1.5"), None)
    with pytest.raises(ValueError):
        parse_amount_with_currency("USD 1")


def test_market_value_none_for_absent() -> None:
    assert parse_market_value(None) is None
    assert parse_market_value("") is None

"""A row the ledger cannot hold is a parse rejection: quarantined with its reason, the account's other
rows booked, on SQLite and PostgreSQL alike (it must never fail the whole account's ingest)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import BigInteger, Integer, Numeric, select

from ibkr_tasks.ledger import FillRow, Ledger, QuarantineRow
from ibkr_tasks.ledger.schema import ContractRow, PositionSnapshotRow
from ibkr_tasks.ledger.types import Amount
from ibkr_tasks.models import bounds, parse_fills, parse_positions

ACCOUNT = "DU1234567"
T_MS = 1_762_093_800_000  # 2025-11-02T14:30Z


def trades_row(n: int, **changes: Any) -> dict[str, Any]:
    """A trades row the way /iserver/account/trades sends one."""
    row: dict[str, Any] = {
        "execution_id": f"{n:08x}.6576fd38.01.01",
        "symbol": "AAPL",
        "side": "B",
        "size": "10",
        "price": "187.25",
        "commission": "1.02",
        "net_amount": 1872.5,
        "account": ACCOUNT,
        "accountCode": ACCOUNT,
        "conid": 265598,
        "sec_type": "STK",
        "trade_time_r": T_MS + n * 1000,
        "trade_time": "20251102-14:30:00",
        "exchange": "ISLAND",
        "order_ref": None,
    }
    row.update(changes)
    return row


def positions_row(conid: int, /, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "acctId": ACCOUNT,
        "conid": conid,
        "contractDesc": f"C{conid}",
        "position": 10.0,
        "mktPrice": 187.25,
        "mktValue": 1872.5,
        "currency": "USD",
        "avgCost": 180.0,
        "avgPrice": 180.0,
        "assetClass": "STK",
        "multiplier": 0.0,
    }
    row.update(changes)
    return row


NAN = float("nan")
INF = float("inf")

POISON_FILLS = {
    "conid 2**63": {"conid": 2**63},
    "conid 2**64 as text": {"conid": str(2**64)},
    "conid below -2**63": {"conid": -(2**63) - 1},
    "size 1e20": {"size": "1e20"},
    "size NaN": {"size": NAN},
    "size Infinity text": {"size": "Infinity"},
    "price 1e18": {"price": "1000000000000000000"},
    "price Infinity": {"price": INF},
    "net_amount 1e25": {"net_amount": 1e25},
    "net_amount NaN": {"net_amount": NAN},
    "commission 1e19": {"commission": "10000000000000000000"},
    "multiplier 1e20": {"multiplier": "1e20"},
    "correction number beyond 32 bits": {"execution_id": "0000beef.6576fd38.01.99999999999"},
    "execution id of 65 characters": {"execution_id": "e" * 65},
    "symbol with NUL": {"symbol": "AA\x00PL"},
    "symbol of 65 characters": {"symbol": "S" * 65},
    "currency of 9 characters": {"currency": "USDOLLARS"},
    "order id of 80 digits": {"order_id": 10**80},
    "unknown key holding NaN": {"extra": NAN},
    "unknown key holding -Infinity": {"extra": [1, {"deep": -INF}]},
    "NUL inside an unknown key": {"no\x00te": "x"},
    "unpaired surrogate": {"exchange": "IS\ud800LAND"},
}


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text (NaN equals NaN; 1 and 1.0 differ)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("changes", POISON_FILLS.values(), ids=list(POISON_FILLS))
def test_a_trades_row_the_ledger_cannot_hold_is_quarantined_and_the_rest_booked(
    ledger: Ledger, changes: dict[str, Any]
) -> None:
    poison = trades_row(2, **changes)
    parsed = parse_fills([trades_row(1), poison, trades_row(3)])
    assert [r.raw for r in parsed.rejected] == [poison]
    assert parsed.rejected[0].reason

    result = ledger.ingest(ACCOUNT, parsed.items, "run-1", rejected=parsed.rejected)

    assert (result.fills_new, result.quarantined) == (2, 1)
    assert {f.execution_id for f in ledger.fills_for(ACCOUNT)} == {
        trades_row(1)["execution_id"],
        trades_row(3)["execution_id"],
    }
    with ledger.session() as session:
        (kept,) = session.scalars(select(QuarantineRow)).all()
    assert kept.account_id == ACCOUNT and kept.kind == "fill"
    assert _same_json(kept.raw, poison)


POISON_POSITIONS = {
    "conid 2**63": {"conid": 2**63},
    "position 1e30": {"position": 1e30},
    "position NaN": {"position": NAN},
    "mktValue Infinity": {"mktValue": INF},
    "avgCost 1e17": {"avgCost": "100000000000000000"},
    "multiplier 1e21": {"multiplier": 1e21},
    "contractDesc of 129 characters": {"contractDesc": "D" * 129},
    "currency with NUL": {"currency": "US\x00"},
    "unknown key holding NaN": {"undPrice": NAN},
}


@pytest.mark.parametrize("changes", POISON_POSITIONS.values(), ids=list(POISON_POSITIONS))
def test_a_positions_row_the_ledger_cannot_hold_is_quarantined_and_the_rest_reconciled(
    ledger: Ledger, changes: dict[str, Any]
) -> None:
    poison = positions_row(76792991, **changes)
    parsed = parse_positions([positions_row(265598), poison, positions_row(8314)], ACCOUNT)
    assert [r.raw for r in parsed.rejected] == [poison]

    quarantined = ledger.ingest(ACCOUNT, [], "run-1", rejected=parsed.rejected)
    reconciled = ledger.reconcile(ACCOUNT, parsed.items, "run-1")

    assert quarantined.quarantined == 1 and reconciled.snapshot_rows == 2
    with ledger.session() as session:
        conids = set(session.scalars(select(PositionSnapshotRow.conid)))
        (kept,) = session.scalars(select(QuarantineRow)).all()
    assert conids == {265598, 8314}
    assert kept.kind == "position" and _same_json(kept.raw, poison)


def test_values_just_inside_the_bounds_are_booked_exactly(ledger: Ledger) -> None:
    big = "99999999999999999.9999999999"  # the largest amount the parser accepts, to the last place
    rows = [
        trades_row(1, conid=bounds.INT64_MAX, size=big, price="0.0000000001", net_amount=None),
        trades_row(2, execution_id="0000beef.6576fd38.01." + str(bounds.INT32_MAX), conid=1),
        trades_row(3, execution_id="e" * 64, symbol="S" * 64, size="1", price=big, net_amount=None),
    ]
    parsed = parse_fills(rows)
    assert parsed.rejected == []
    ledger.ingest(ACCOUNT, parsed.items, "run-1")
    stored = {f.execution_id: f for f in ledger.fills_for(ACCOUNT)}
    assert stored[rows[0]["execution_id"]].conid == bounds.INT64_MAX
    assert stored[rows[0]["execution_id"]].quantity == Decimal(big)
    assert stored[rows[1]["execution_id"]].revision == bounds.INT32_MAX
    assert stored["e" * 64].price == Decimal(big)


def test_the_parser_bounds_are_the_ledger_column_types() -> None:
    """The bounds the parsers check are the ones the ledger's columns impose (they cannot drift)."""
    for table in (FillRow, PositionSnapshotRow, ContractRow):
        assert isinstance(table.__table__.c.conid.type, BigInteger)
    assert isinstance(FillRow.__table__.c.revision.type, Integer)
    amount = Amount().impl
    assert isinstance(amount, Numeric)
    assert (amount.precision, amount.scale) == (bounds.AMOUNT_PRECISION, bounds.AMOUNT_SCALE)
    for name in ("quantity", "price", "multiplier", "net_amount"):
        assert isinstance(FillRow.__table__.c[name].type, Amount)
    columns = {
        "execution_id": FillRow.execution_id,
        "symbol": FillRow.symbol,
        "sec_type": FillRow.sec_type,
        "currency": FillRow.currency,
        "order_ref": FillRow.order_ref,
        "order_id": FillRow.order_id,
        "exchange": FillRow.exchange,
        "asset_class": PositionSnapshotRow.asset_class,
        "position_symbol": PositionSnapshotRow.symbol,
    }
    assert set(columns) == set(bounds.TEXT_LENGTHS)
    for field, column in columns.items():
        assert column.type.length == bounds.TEXT_LENGTHS[field], field
    assert PositionSnapshotRow.currency.type.length == bounds.TEXT_LENGTHS["currency"]

"""Contract info kept across runs (``contracts``): what the nightly flow seeds the client with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import update

from ibkr_tasks.ledger import ContractRow, Ledger
from ibkr_tasks.models import parse_contract_info

FUTURE = parse_contract_info(
    {"con_id": 495512563, "symbol": "ES", "instrument_type": "FUT", "currency": "USD", "multiplier": "50"}
)
STOCK = parse_contract_info({"con_id": 270662, "symbol": "SHOP", "instrument_type": "STK", "currency": "CAD"})
EVENT = parse_contract_info(
    {"con_id": 730000001, "symbol": "FF", "instrument_type": "OPT", "currency": "USD", "multiplier": "1"}
)


def test_stored_contract_info_comes_back_as_looked_up(ledger: Ledger) -> None:
    assert ledger.known_contracts() == {}
    assert ledger.store_contracts([FUTURE, STOCK, EVENT]) == 3
    known = ledger.known_contracts()
    assert known == {c.conid: c for c in (FUTURE, STOCK, EVENT)}
    assert known[FUTURE.conid].multiplier == Decimal(50) and known[STOCK.conid].currency == "CAD"
    assert set(ledger.known_contracts([STOCK.conid, 1])) == {STOCK.conid}


def test_storing_again_replaces_and_refreshes(ledger: Ledger) -> None:
    ledger.store_contracts([STOCK])
    renamed = parse_contract_info({**STOCK.raw, "symbol": "SHOP.TO"})
    ledger.store_contracts([renamed, renamed])
    assert ledger.known_contracts() == {STOCK.conid: renamed}


def test_old_contract_info_is_looked_up_again(ledger: Ledger) -> None:
    ledger.store_contracts([FUTURE, STOCK])
    with ledger.write() as session:
        session.execute(
            update(ContractRow)
            .where(ContractRow.conid == FUTURE.conid)
            .values(fetched_at=datetime.now(UTC) - timedelta(days=31))
        )
    assert set(ledger.known_contracts()) == {STOCK.conid}  # default max age: 30 days
    assert set(ledger.known_contracts(max_age=None)) == {FUTURE.conid, STOCK.conid}


def test_a_stored_answer_that_no_longer_parses_is_left_out(ledger: Ledger) -> None:
    ledger.store_contracts([FUTURE, STOCK])
    with ledger.write() as session:
        session.execute(
            update(ContractRow).where(ContractRow.conid == STOCK.conid).values(raw={"junk": True})
        )
    assert set(ledger.known_contracts()) == {FUTURE.conid}

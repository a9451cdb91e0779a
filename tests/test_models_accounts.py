"""AccountInfo and ContractInfo parsing."""

from __future__ import annotations

from decimal import Decimal

from conftest import payload

from ibkr_tasks.models import parse_account, parse_contract_info


def test_account_combines_portfolio_row_and_iserver_accounts() -> None:
    iserver = payload("iserver_accounts_ibkr-conduit.json")
    row = {
        "id": "U1234567",
        "accountId": "U1234567",
        "accountTitle": "Jane Doe",
        "accountAlias": None,
        "currency": "USD",
        "type": "DEMO",
        "faclient": False,
        "parent": {"mmc": [], "accountId": "", "isMParent": False, "isMChild": False, "isMultiplex": False},
    }
    info = parse_account(row, iserver)
    assert info.account_id == "U1234567"
    assert info.tradable
    assert info.alias == "U1234567"
    assert info.currency == "USD"
    assert info.title == "Jane Doe"
    assert not info.is_fa_client
    assert info.parent_account_id is None
    # Paper-ness follows the account id, not the login-wide isPaper flag of a sanitised fixture.
    assert not info.is_paper


def test_paper_id_with_letters_is_paper_and_fa_client_flag() -> None:
    info = parse_account({"accountId": "DUO873728", "faclient": True, "parent": {"accountId": "DF1"}})
    assert info.is_paper
    assert info.is_fa_client
    assert info.parent_account_id == "DF1"
    assert not info.tradable


def test_contract_info_snake_case_and_secdef_multiplier_string() -> None:
    stk = parse_contract_info(
        {"con_id": 265598, "symbol": "AAPL", "instrument_type": "STK", "multiplier": None}
    )
    assert stk.multiplier is None and stk.sec_type == "STK"
    event = parse_contract_info(
        {
            "conid": 713921696,
            "symbol": "FF",
            "secType": "OPT",
            "exchange": "FORECASTX",
            "right": "C",
            "strike": 3.125,
            "maturityDate": "20240917",
            "multiplier": "1",
            "tradingClass": "FF",
        }
    )
    assert event.is_event_contract
    assert event.multiplier == Decimal(1)
    assert event.strike == Decimal("3.125")
    fop = parse_contract_info(
        {"con_id": 9, "instrument_type": "FOP", "trading_class": "ECNQ", "multiplier": "1"}
    )
    assert fop.is_event_contract

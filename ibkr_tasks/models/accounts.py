"""Account and contract descriptions built from ``/portfolio/accounts``, ``/iserver/accounts`` and the
contract endpoints (docs/ibkr-api.md#accounts, #contracts)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from ibkr_tasks.accounts import is_paper_account
from ibkr_tasks.models.multipliers import is_event_contract_row, positive_or_none

__all__ = ["AccountInfo", "ContractInfo", "ContractSearchResult", "parse_account", "parse_contract_info"]


class AccountInfo(BaseModel):
    """One account the login can see.

    ``is_paper`` follows the account id (``DU...``/``DF...``; letters may follow ``DU``).
    ``tradable`` is True when ``/iserver/accounts`` lists the account (orders and trades possible).
    ``is_fa_client``: the account is an advisor's client sub-account (``faclient``; docs spell it
    ``faClient``). ``parent_account_id``/``is_multiplex_parent`` come from ``parent``.
    """

    model_config = ConfigDict(frozen=True)

    account_id: str
    is_paper: bool
    currency: str | None = None
    title: str | None = None
    alias: str | None = None
    account_type: str | None = None
    is_fa_client: bool = False
    parent_account_id: str | None = None
    is_multiplex_parent: bool = False
    has_child_accounts: bool = False
    tradable: bool = False
    raw: dict[str, Any]


def _text(value: Any) -> str | None:
    if value in (None, ""):
        return None
    return str(value)


def parse_account(row: Mapping[str, Any], iserver: Mapping[str, Any] | None = None) -> AccountInfo:
    """Combine one ``/portfolio/accounts`` row with the ``/iserver/accounts`` answer (if any)."""
    account_id = str(row.get("accountId") or row.get("id") or "").strip().upper()
    if not account_id:
        raise ValueError("account row has neither accountId nor id")
    iserver = iserver or {}
    aliases = iserver.get("aliases") or {}
    props = (iserver.get("acctProps") or {}).get(account_id) or {}
    parent = row.get("parent") or {}
    faclient = row.get("faclient", row.get("faClient"))
    return AccountInfo(
        account_id=account_id,
        is_paper=is_paper_account(account_id),
        currency=_text(row.get("currency")),
        title=_text(row.get("accountTitle") or row.get("displayName") or row.get("desc")),
        alias=_text(row.get("accountAlias") or aliases.get(account_id)),
        account_type=_text(row.get("type")),
        is_fa_client=bool(faclient),
        parent_account_id=_text(parent.get("accountId")) if isinstance(parent, Mapping) else None,
        is_multiplex_parent=bool(parent.get("isMParent")) if isinstance(parent, Mapping) else False,
        has_child_accounts=bool(props.get("hasChildAccounts")),
        tradable=account_id in {str(a).upper() for a in iserver.get("accounts") or []},
        raw=dict(row),
    )


class ContractInfo(BaseModel):
    """What the client needs to know about a conid (conids are permanent, so this is cached)."""

    model_config = ConfigDict(frozen=True)

    conid: int
    symbol: str | None = None
    sec_type: str | None = None
    exchange: str | None = None
    currency: str | None = None
    multiplier: Decimal | None = None
    trading_class: str | None = None
    underlying_conid: int | None = None
    maturity_date: str | None = None
    right: str | None = None
    strike: Decimal | None = None
    description: str | None = None
    is_event_contract: bool = False
    raw: dict[str, Any]


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(str(value))
    except ValueError:
        return None


def parse_contract_info(row: Mapping[str, Any]) -> ContractInfo:
    """Parse ``/iserver/contract/{conid}/info`` (snake_case) or a ``/iserver/secdef/info`` element."""
    conid = _int_or_none(row.get("con_id", row.get("conid")))
    if conid is None:
        raise ValueError("contract info has no con_id/conid")
    sec_type = _text(row.get("instrument_type") or row.get("secType") or row.get("sec_type"))
    sec_type = sec_type.upper() if sec_type else None
    strike = positive_or_none(row.get("strike"))
    return ContractInfo(
        conid=conid,
        symbol=_text(row.get("symbol")),
        sec_type=sec_type,
        exchange=_text(row.get("exchange")),
        currency=_text(row.get("currency")),
        multiplier=positive_or_none(row.get("multiplier")),
        trading_class=_text(row.get("trading_class") or row.get("tradingClass")),
        underlying_conid=_int_or_none(row.get("underlying_con_id")),
        maturity_date=_text(row.get("maturity_date") or row.get("maturityDate")),
        right=_text(row.get("right")),
        strike=strike,
        description=_text(row.get("company_name") or row.get("desc2") or row.get("description")),
        is_event_contract=is_event_contract_row(row, sec_type),
        raw=dict(row),
    )


class ContractSearchResult(BaseModel):
    """One hit of ``/iserver/secdef/search`` (its conid arrives as a string; here an int)."""

    model_config = ConfigDict(frozen=True)

    conid: int | None
    symbol: str | None = None
    company_name: str | None = None
    description: str | None = None
    sec_types: list[str]
    raw: dict[str, Any]

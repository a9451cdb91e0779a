"""Positions from ``GET /portfolio/{accountId}/positions/{pageId}`` as typed :class:`Position` objects.

Tolerant of the type drift seen between real captures (docs/ibkr-api.md#positions): ``strike`` ``"0"`` vs
``0.0``, ``multiplier`` ``null`` vs ``0.0`` for stocks, ``base*`` fields ``null``, and the
``/portfolio2`` spelling (``conid`` as a string, ``marketPrice``/``marketValue``, ``description``).

Every row's ``acctId`` is checked against the account that was asked for: a row of another account, or
a row that does not say whose it is, is rejected (never attributed by guess).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.models.bounds import (
    AssetClassText,
    CurrencyText,
    LedgerAmount,
    LedgerInt,
    Payload,
    PositionSymbolText,
)
from ibkr_tasks.models.common import ParseResult, RejectedRow, is_copy, reason_of, sort_out_duplicates
from ibkr_tasks.models.multipliers import derive_multiplier, is_event_contract_row, resolve_multiplier
from ibkr_tasks.models.numbers import parse_conid, parse_decimal

__all__ = ["Position", "parse_position", "parse_positions", "position_account_id"]


class Position(BaseModel):
    """One position of one account as the broker reports it (within what the ledger can store:
    :mod:`ibkr_tasks.models.bounds`)."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    conid: LedgerInt
    position: LedgerAmount
    avg_cost: LedgerAmount | None = None
    avg_price: LedgerAmount | None = None
    mkt_price: LedgerAmount | None = None
    mkt_value: LedgerAmount | None = None
    currency: CurrencyText | None = None
    multiplier: LedgerAmount
    asset_class: AssetClassText | None = None
    symbol: PositionSymbolText | None = None
    is_event_contract: bool = False
    raw: Payload


def position_account_id(row: Mapping[str, Any]) -> str | None:
    """The ``acctId`` a positions row names, upper-cased, or None."""
    for key in ("acctId", "accountId", "account"):
        value = row.get(key)
        if value not in (None, ""):
            if not isinstance(value, str):
                return None
            try:
                return validate_account_id(value)
            except ConfigurationError:
                return None
    return None


def _optional_decimal(row: Mapping[str, Any], *keys: str) -> Decimal | None:
    for key in keys:
        value = row.get(key)
        if value is None or value == "":
            continue
        try:
            return parse_decimal(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return None


def _text(row: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return str(value).strip() or None
    return None


def parse_position(
    row: Any, account_id: str, *, multipliers: Mapping[int, Decimal] | None = None
) -> Position:
    """Parse one positions row of ``account_id``; raises ``ValueError`` saying what is wrong."""
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    expected = account_id.strip().upper()
    row_account = position_account_id(row)
    if row_account is None:
        raise ValueError(f"row has no usable acctId; cannot prove it belongs to {expected}")
    if row_account != expected:
        raise ValueError(f"row belongs to account {row_account}, not {expected}")
    conid = parse_conid(row.get("conid"))
    if row.get("position") in (None, ""):
        raise ValueError("row has no position")
    position = _optional_decimal(row, "position")
    assert position is not None  # checked above; parse errors raised inside
    avg_cost = _optional_decimal(row, "avgCost")
    avg_price = _optional_decimal(row, "avgPrice")
    asset_class = (_text(row, "assetClass", "secType") or "").upper() or None
    is_event = is_event_contract_row(row, asset_class)
    multiplier = resolve_multiplier(
        conid=conid,
        sec_type=asset_class,
        is_event_contract=is_event,
        payload_multiplier=row.get("multiplier"),
        known=multipliers,
        derived=derive_multiplier(avg_cost, avg_price),
    )
    if multiplier is None:
        raise ValueError(
            f"multiplier unknown for asset class {asset_class} conid {conid}: pass contract info "
            "(multipliers={conid: Decimal(...)})"
        )
    return Position(
        account_id=expected,
        conid=conid,
        position=position,
        avg_cost=avg_cost,
        avg_price=avg_price,
        mkt_price=_optional_decimal(row, "mktPrice", "marketPrice"),
        mkt_value=_optional_decimal(row, "mktValue", "marketValue"),
        currency=_text(row, "currency"),
        multiplier=multiplier,
        asset_class=asset_class,
        symbol=_text(row, "contractDesc", "ticker", "description", "symbol"),
        is_event_contract=is_event,
        raw=dict(row),
    )


def parse_positions(
    rows: Iterable[Any], account_id: str, *, multipliers: Mapping[int, Decimal] | None = None
) -> ParseResult[Position]:
    """Parse positions rows of ``account_id``; unparseable or foreign rows go to ``rejected``.

    A conid reported twice with the same content counts once (``duplicates``); reported with
    different contents, every version is rejected (``conflicting``): the broker contradicts itself.
    """
    result: ParseResult[Position] = ParseResult()
    rows, conflicts, result.duplicates = sort_out_duplicates(rows, _duplicate_key)
    for index, row in enumerate(rows):
        if is_copy(row):
            continue
        if index in conflicts:
            result.conflicting += 1
            conid = _duplicate_key(row)[1]
            result.rejected.append(
                _rejected(
                    row,
                    f"conid {conid} arrives {conflicts[index]} times in the positions of "
                    f"{account_id.strip().upper()} with different contents; none of them is used",
                )
            )
            continue
        try:
            result.items.append(parse_position(row, account_id, multipliers=multipliers))
        except (ValueError, ArithmeticError, TypeError) as exc:
            # Rows are untrusted input: whatever is wrong with one row must not sink the batch.
            result.rejected.append(_rejected(row, reason_of(exc)))
    return result


def _duplicate_key(row: Any) -> Any:
    """Rows of one account with the same conid report the same position."""
    if not isinstance(row, Mapping):
        return None
    try:
        conid = parse_conid(row.get("conid"))
    except ValueError:
        return None
    return position_account_id(row), conid


def _rejected(row: Any, reason: str) -> RejectedRow:
    is_mapping = isinstance(row, Mapping)
    conid = row.get("conid") if is_mapping else None
    try:
        key = None if conid in (None, "") else str(conid)[:128]
    except ValueError:  # an integer too long to write out
        key = None
    return RejectedRow(
        kind="position",
        account_id=position_account_id(row) if is_mapping else None,
        key=key,
        reason=reason,
        raw=row,
    )

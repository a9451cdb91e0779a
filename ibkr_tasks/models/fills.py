"""Executions from ``GET /iserver/account/trades`` as typed, validated :class:`Fill` objects.

Rules (each has a regression test in ``tests/test_models_fills.py``; facts in docs/ibkr-api.md#trades):

- ``execution_id`` is ``8hex.8hex.NN.NN``; a correction differs only in the digits after the final dot
  (TWS ``Execution`` doc), so ``execution_family`` is the id without its final ``.NN`` and ``revision``
  is that ``NN``. An id without a numeric final part is its own family with revision 0.
- ``commission`` is a string without currency (``"1.0"``); ``"1.00 USD"`` is tolerated. A missing,
  ``null``, empty or ``"NA"`` commission is ``None`` = pending, never 0.
- ``trade_time`` comes from ``trade_time_r`` (epoch ms, needs 64 bits), else from ``trade_time``
  (``YYYYMMDD-HH:mm:ss`` UTC). A row with neither usable is rejected, never dated 1970.
- ``price`` arrives as a string (``C``/``H`` prefixes and commas tolerated); ``size`` is unsigned.
- ``side``: ``B``, ``S``, ``X`` (option expiry), ``N`` (ForecastEx netting); ``BOT``/``SLD``/``BUY``/
  ``SELL`` are normalised to ``B``/``S``.
- multiplier: see :mod:`ibkr_tasks.models.multipliers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.models.bounds import (
    CurrencyText,
    ExchangeText,
    ExecutionIdText,
    LedgerAmount,
    LedgerInt,
    OrderIdText,
    OrderRefText,
    Payload,
    Revision,
    SecTypeText,
    SymbolText,
)
from ibkr_tasks.models.common import ParseResult, RejectedRow, is_copy, reason_of, sort_out_duplicates
from ibkr_tasks.models.multipliers import derive_multiplier, is_event_contract_row, resolve_multiplier
from ibkr_tasks.models.numbers import (
    parse_amount_with_currency,
    parse_conid,
    parse_decimal,
    parse_epoch_ms,
    parse_market_value,
    parse_trade_time,
)

__all__ = [
    "PARSER_VERSION",
    "Fill",
    "FillsByAccount",
    "fill_account_id",
    "parse_fill",
    "parse_fills",
    "split_execution_id",
]

PARSER_VERSION = 1
"""The version of what :func:`parse_fill` derives from a trades row. Raise it with every change that
derives a field differently: the ledger then re-derives stored fills from the same payload on their
next ingest (counted as ``fills_rederived``, the old values kept in ``fill_history``)."""

FillSide = Literal["B", "S", "X", "N"]
_SIDES: dict[str, FillSide] = {
    "B": "B",
    "BOT": "B",
    "BUY": "B",
    "S": "S",
    "SLD": "S",
    "SELL": "S",
    "X": "X",
    "N": "N",
}
_PENDING_COMMISSION = {"", "NA", "N/A", "-"}
_ACCOUNT_KEYS = ("account", "accountCode", "acctId", "account_id")


class Fill(BaseModel):
    """One execution of one account. Amounts are Decimal; ``trade_time`` is aware UTC.

    Every field is within what the ledger can store (:mod:`ibkr_tasks.models.bounds`): a row with a
    value beyond it does not become a Fill, so it cannot fail an ingest.
    """

    model_config = ConfigDict(frozen=True)

    execution_id: ExecutionIdText
    execution_family: ExecutionIdText
    revision: Revision
    account_id: str
    conid: LedgerInt
    symbol: SymbolText | None = None
    sec_type: SecTypeText | None = None
    side: FillSide
    quantity: LedgerAmount
    price: LedgerAmount
    multiplier: LedgerAmount
    net_amount: LedgerAmount | None = None
    currency: CurrencyText | None = None
    commission: LedgerAmount | None = None
    commission_currency: CurrencyText | None = None
    trade_time: datetime
    order_ref: OrderRefText | None = None
    order_id: OrderIdText | None = None
    exchange: ExchangeText | None = None
    is_event_contract: bool = False
    raw: Payload

    @field_validator("trade_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("trade_time must be timezone-aware (UTC)")
        return value

    @property
    def signed_quantity(self) -> Decimal:
        """+quantity for a buy; -quantity for a sell, an option expiry (X) and ForecastEx netting (N)."""
        return self.quantity if self.side == "B" else -self.quantity

    @property
    def is_commission_pending(self) -> bool:
        """True while IBKR has not reported the commission (it may arrive on a later fetch)."""
        return self.commission is None


class FillsByAccount(dict[str, ParseResult[Fill]]):
    """``{account_id: ParseResult[Fill]}`` for the accounts that were asked for, from ONE trades call.

    A requested account with no executions maps to an empty result. Besides the mapping:

    - ``unattributed``: rows that do not say (or contradict themselves about) which account they
      belong to; they are nobody's fills, and the caller should quarantine them (ledger ``quarantine``
      has a nullable account id for exactly this);
    - ``other_accounts``: how many rows belonged to accounts that were not asked for (FA and
      multi-account logins return every account's executions). They are never handed to a requested
      account;
    - ``unattributed_duplicates``: exact copies among the unattributed rows (kept once).

    Every row of the answer is counted once: in an account's ``items``, ``rejected`` or
    ``duplicates``, in ``unattributed`` or ``unattributed_duplicates``, or in ``other_accounts``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unattributed: list[RejectedRow] = []
        self.unattributed_duplicates = 0
        self.other_accounts: dict[str, int] = {}


def split_execution_id(execution_id: str) -> tuple[str, int]:
    """``"0000e0d5.6576fd38.01.02"`` -> ``("0000e0d5.6576fd38.01", 2)``."""
    family, dot, last = execution_id.rpartition(".")
    if dot and family and last.isascii() and last.isdigit():
        return family, int(last)
    return execution_id, 0


def fill_account_id(row: Mapping[str, Any]) -> str | None:
    """The account a trades row belongs to, or None when the row does not say, says something that
    is not an account id, or contradicts itself (``account`` vs ``accountCode``)."""
    seen = {_account_or_junk(row[key]) for key in _ACCOUNT_KEYS if row.get(key) not in (None, "")}
    if len(seen) == 1:
        return seen.pop()
    return None


def _account_or_junk(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return validate_account_id(value)
    except ConfigurationError:
        return None


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _conid(row: Mapping[str, Any]) -> int:
    value = row.get("conid")
    if value in (None, ""):
        conid_ex = row.get("conidEx") or row.get("conidex")
        value = conid_ex.split("@", 1)[0] if isinstance(conid_ex, str) else conid_ex
    if value in (None, ""):
        raise ValueError("row has no conid")
    return parse_conid(value)


def _commission(row: Mapping[str, Any], currency: str | None) -> tuple[Decimal | None, str | None]:
    value = row.get("commission")
    if value is None or (isinstance(value, str) and value.strip().upper() in _PENDING_COMMISSION):
        return None, None
    try:
        amount, suffix = parse_amount_with_currency(value)
    except ValueError as exc:
        raise ValueError(f"commission: {exc}") from None
    explicit = _text(row, "commission_currency") or _text(row, "commissionCurrency")
    return amount, suffix or explicit or currency


def _trade_time(row: Mapping[str, Any]) -> datetime:
    problems: list[str] = []
    if row.get("trade_time_r") not in (None, ""):
        try:
            return parse_epoch_ms(row["trade_time_r"])
        except ValueError as exc:
            problems.append(f"trade_time_r: {exc}")
    if row.get("trade_time") not in (None, ""):
        try:
            return parse_trade_time(row["trade_time"])
        except ValueError as exc:
            problems.append(f"trade_time: {exc}")
    raise ValueError("; ".join(problems) or "row has neither trade_time_r nor trade_time")


def _price(row: Mapping[str, Any]) -> Decimal:
    value = row.get("price")
    if value is None or value == "":
        raise ValueError("row has no price")
    parsed = parse_market_value(value)
    if parsed is None or (isinstance(value, str) and value.strip()[-1:].upper() in {"K", "M", "B", "%"}):
        raise ValueError(f"price {value!r} is not a number")
    return parsed.value


def parse_fill(
    row: Any,
    *,
    multipliers: Mapping[int, Decimal] | None = None,
    currencies: Mapping[int, str] | None = None,
) -> Fill:
    """Parse one trades row; raises ``ValueError`` saying what is wrong with it.

    ``currencies`` (conid -> contract currency, from contract info) fills ``currency`` when the row
    has none, which IBKR's trades rows usually do not.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    execution_id = _text(row, "execution_id")
    if execution_id is None:
        raise ValueError("row has no execution_id")
    account_id = fill_account_id(row)
    if account_id is None:
        raise ValueError("row has no account (or account/accountCode disagree)")
    conid = _conid(row)
    side_text = (_text(row, "side") or "").upper()
    side = _SIDES.get(side_text)
    if side is None:
        raise ValueError(f"side {row.get('side')!r} is not one of B, S, X, N")
    try:
        quantity = abs(parse_decimal(row.get("size")))
    except ValueError as exc:
        raise ValueError(f"size: {exc}") from None
    price = _price(row)
    net_amount: Decimal | None = None
    if row.get("net_amount") not in (None, ""):
        try:
            net_amount = parse_decimal(row["net_amount"])
        except ValueError as exc:
            raise ValueError(f"net_amount: {exc}") from None
    currency = _text(row, "currency") or (currencies or {}).get(conid)
    commission, commission_currency = _commission(row, currency)
    trade_time = _trade_time(row)
    sec_type = (_text(row, "sec_type") or _text(row, "secType") or "").upper() or None
    is_event = is_event_contract_row(row, sec_type)
    multiplier = resolve_multiplier(
        conid=conid,
        sec_type=sec_type,
        is_event_contract=is_event,
        payload_multiplier=row.get("multiplier"),
        known=multipliers,
        derived=derive_multiplier(net_amount, quantity * price),
    )
    if multiplier is None:
        raise ValueError(
            f"multiplier unknown for sec_type {sec_type} conid {conid}: pass contract info "
            "(parse_fills(..., multipliers={conid: Decimal(...)})) instead of guessing 1x"
        )
    order_id = row.get("order_id")
    family, revision = split_execution_id(execution_id)
    return Fill(
        execution_id=execution_id,
        execution_family=family,
        revision=revision,
        account_id=account_id,
        conid=conid,
        symbol=_text(row, "symbol"),
        sec_type=sec_type,
        side=side,
        quantity=quantity,
        price=price,
        multiplier=multiplier,
        net_amount=net_amount,
        currency=currency,
        commission=commission,
        commission_currency=commission_currency,
        trade_time=trade_time,
        order_ref=_text(row, "order_ref"),
        order_id=None if order_id in (None, "") else str(order_id),
        exchange=_text(row, "exchange"),
        is_event_contract=is_event,
        raw=dict(row),
    )


def parse_fills(
    rows: Iterable[Any],
    *,
    multipliers: Mapping[int, Decimal] | None = None,
    currencies: Mapping[int, str] | None = None,
) -> ParseResult[Fill]:
    """Parse trades rows; every row ends up in ``items``, in ``rejected`` (with its reason), or (an exact
    copy of another row with the same execution id) counted in ``duplicates``.

    Rows that share an account and execution id but differ are all rejected: the answer contradicts
    itself about that execution, and keeping either would be a guess.

    ``multipliers`` maps conid -> multiplier from contract info, for contracts (e.g. futures) whose
    multiplier cannot be inferred from the row; ``currencies`` maps conid -> contract currency.
    """
    result: ParseResult[Fill] = ParseResult()
    rows, conflicts, result.duplicates = sort_out_duplicates(rows, _duplicate_key)
    for index, row in enumerate(rows):
        if is_copy(row):
            continue
        if index in conflicts:
            result.conflicting += 1
            result.rejected.append(
                _rejected(
                    row,
                    f"execution id {_duplicate_key(row)[1]!r} arrives {conflicts[index]} times in this answer "
                    "with different contents; none of them is booked",
                )
            )
            continue
        try:
            result.items.append(parse_fill(row, multipliers=multipliers, currencies=currencies))
        except (ValueError, ArithmeticError, TypeError) as exc:
            # Rows are untrusted input: whatever is wrong with one row must not sink the batch.
            result.rejected.append(_rejected(row, reason_of(exc)))
    return result


def _duplicate_key(row: Any) -> Any:
    """Rows with the same (account, execution id) are the same execution: the ledger's key."""
    if not isinstance(row, Mapping):
        return None
    try:
        execution_id = _text(row, "execution_id")
    except ValueError:
        return None
    return None if execution_id is None else (fill_account_id(row), execution_id)


def _rejected(row: Any, reason: str) -> RejectedRow:
    is_mapping = isinstance(row, Mapping)
    try:
        key = _text(row, "execution_id") if is_mapping else None
    except ValueError:
        key = None
    return RejectedRow(
        kind="fill", account_id=fill_account_id(row) if is_mapping else None, key=key, reason=reason, raw=row
    )

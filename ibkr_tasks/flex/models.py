"""What a Flex statement yields, as typed models in the project's conventions.

- Amounts and quantities are :class:`~decimal.Decimal`; times are aware UTC; dates are the dates the
  statement prints (IBKR's trade/report dates, which are US/Eastern business dates).
- Account ids are validated by :func:`ibkr_tasks.accounts.validate_account_id`; every row carries its
  own account id (a multi-account response holds one ``FlexStatement`` per account).
- :class:`FlexExecution` follows :class:`ibkr_tasks.models.fills.Fill`: ``quantity`` is unsigned,
  ``side`` is ``B``/``S``, ``signed_quantity`` is the position change, ``commission`` is a positive
  cost (Flex prints ``ibCommission`` negative; a rebate is a negative cost), ``execution_id`` is
  IBKR's execution id (``ibExecID`` in Activity, ``execID`` in Trade Confirmation statements), the
  key that joins a statement row to the Client Portal fill.
- Execution rows without an execution id exist in real statements (exercise/assignment bookings,
  ``BookTrade``): they are executions all the same; :attr:`FlexExecution.key` gives them a stable key.
- ``TradeCancel`` rows are not executions: they are :class:`FlexCancellation` rows naming the cancelled
  fill through ``origTradeID``.
- Nothing is dropped: a row that cannot be read is a :class:`~ibkr_tasks.models.common.RejectedRow`
  (raw attributes + reason) in :attr:`FlexStatement.rejected`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.models.common import RejectedRow

__all__ = [
    "FlexCancellation",
    "FlexCashTransaction",
    "FlexExecution",
    "FlexOpenPosition",
    "FlexResponse",
    "FlexStatement",
    "FlexStatementKind",
    "row_digest",
]

FlexStatementKind = Literal["activity", "trade_confirmation"]
FlexSide = Literal["B", "S"]


def row_digest(
    element: str, attributes: Mapping[str, str], *, account_id: str | None = None, occurrence: int = 0
) -> str:
    """A stable short hash of a row (element, account, sorted attributes, and which occurrence of an
    identical row in its statement this is): the key of a row that has none of IBKR's ids.

    Importing the same statement twice gives the same keys; two identical rows in one statement
    (three equal fees on the same day happen) get different keys."""
    digest = hashlib.sha256(f"{element}\x00{account_id or ''}\x00{occurrence}".encode())
    for name in sorted(attributes):
        digest.update(b"\x00" + name.encode() + b"=" + str(attributes[name]).encode())
    return digest.hexdigest()[:24]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value


def _account(value: str) -> str:
    try:
        return validate_account_id(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


class _FlexRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    account_id: str
    raw: dict[str, str] = Field(repr=False)
    """The row's attributes exactly as the statement printed them."""
    occurrence: int = 0
    """For a row without any IBKR id: how many identical rows came before it in its statement
    (part of :attr:`key`, so repeated identical rows stay distinct)."""

    def _digest_key(self, element: str) -> str:
        return row_digest(element, self.raw, account_id=self.account_id, occurrence=self.occurrence)

    @field_validator("account_id")
    @classmethod
    def _valid_account(cls, value: str) -> str:
        return _account(value)


class FlexExecution(_FlexRow):
    """One execution (fill) row: ``Trade`` (Activity) or ``TradeConfirm`` (Trade Confirmation) at
    ``levelOfDetail="EXECUTION"``."""

    execution_id: str | None = None
    execution_family: str | None = None
    revision: int | None = None
    trade_id: str | None = None
    transaction_id: str | None = None
    orig_trade_id: str | None = None
    transaction_type: str | None = None
    """``ExchTrade``, ``BookTrade`` (exercise/assignment/expiry), ``TradeCorrect``, ``FracShare``, ..."""
    conid: int
    symbol: str | None = None
    description: str | None = None
    sec_type: str | None = None
    """IBKR's ``assetCategory``: ``STK``, ``OPT``, ``FUT``, ``FOP``, ``CASH``, ..."""
    underlying_conid: int | None = None
    underlying_symbol: str | None = None
    side: FlexSide
    quantity: Decimal
    """Unsigned, as :class:`~ibkr_tasks.models.fills.Fill`; see :attr:`signed_quantity`."""
    price: Decimal
    multiplier: Decimal
    """From the statement's ``multiplier`` attribute, never inferred."""
    trade_money: Decimal | None = None
    proceeds: Decimal | None = None
    net_cash: Decimal | None = None
    currency: str
    commission: Decimal | None = None
    """Positive = a cost (Flex's ``ibCommission``/``commission`` negated). ``None`` when the statement
    does not carry the column."""
    commission_currency: str | None = None
    taxes: Decimal | None = None
    trade_time: datetime | None
    """Aware UTC; ``None`` only when the query prints no time for the trade (then see ``trade_date``)."""
    trade_date: date
    report_date: date | None = None
    settle_date: date | None = None
    order_ref: str | None = None
    order_id: str | None = None
    exchange: str | None = None
    open_close: str | None = None
    notes: tuple[str, ...] = ()
    """``notes`` (Activity) / ``code`` (Trade Confirmation) split on ``;``: ``P``, ``O``, ``C``, ``A``, ``Co``, ..."""
    level_of_detail: str | None = None
    is_correction: bool = False
    """``TradeCorrect`` or code ``Co``: a revision of an execution, like a Client Portal correction."""
    cancelled: bool = False
    """A ``TradeCancel`` row in the same statement names this fill (it no longer counts toward positions)."""
    source: FlexStatementKind = "activity"

    @field_validator("trade_time")
    @classmethod
    def _check_time(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @property
    def signed_quantity(self) -> Decimal:
        """+quantity for a buy, -quantity for a sell."""
        return self.quantity if self.side == "B" else -self.quantity

    @property
    def key(self) -> str:
        """The execution id, else ``trade:<tradeID>``, else ``txn:<transactionID>``, else a digest of
        the row: a stable, unique key for idempotent booking."""
        if self.execution_id:
            return self.execution_id
        if self.trade_id:
            return f"trade:{self.trade_id}"
        if self.transaction_id:
            return f"txn:{self.transaction_id}"
        return f"row:{self._digest_key('execution')}"


class FlexCancellation(_FlexRow):
    """A ``TradeCancel`` row: the fill whose ``tradeID`` is ``orig_trade_id`` was cancelled (busted).

    ``cancelled_execution_id`` is the cancelled fill's execution id when that fill is in the same
    statement; otherwise the booking side resolves ``orig_trade_id`` against what it already holds.
    """

    transaction_id: str | None = None
    orig_trade_id: str | None = None
    orig_transaction_id: str | None = None
    orig_order_id: str | None = None
    orig_trade_date: date | None = None
    orig_trade_price: Decimal | None = None
    cancelled_execution_id: str | None = None
    transaction_type: str | None = None
    conid: int
    symbol: str | None = None
    sec_type: str | None = None
    side: FlexSide
    """The side printed on the cancel row (``SELL (Ca.)`` -> ``S``): the reverse of the cancelled fill."""
    quantity: Decimal
    price: Decimal | None = None
    multiplier: Decimal | None = None
    proceeds: Decimal | None = None
    net_cash: Decimal | None = None
    currency: str | None = None
    commission: Decimal | None = None
    """Positive = a cost; a cancel usually refunds the commission, so this is usually negative."""
    commission_currency: str | None = None
    trade_time: datetime | None = None
    trade_date: date | None = None
    report_date: date | None = None
    source: FlexStatementKind = "activity"

    @field_validator("trade_time")
    @classmethod
    def _check_time(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @property
    def key(self) -> str:
        if self.transaction_id:
            return f"cancel:{self.transaction_id}"
        return f"cancel:{self._digest_key('cancellation')}"


class FlexCashTransaction(_FlexRow):
    """A ``CashTransaction`` row: dividends, withholding tax, fees, interest, deposits/withdrawals, ..."""

    transaction_id: str | None = None
    type: str
    """IBKR's type text as printed: ``Dividends``, ``Withholding Tax``, ``Other Fees``,
    ``Broker Interest Paid``, ``Deposits/Withdrawals`` (older: ``Deposits & Withdrawals``), ..."""
    amount: Decimal
    currency: str
    date: dt.date
    """The transaction's date as printed (``dateTime``'s date, else ``reportDate``)."""
    datetime: dt.datetime | None = None
    """Aware UTC when the statement prints a time with the date; ``None`` for a date-only value."""
    report_date: dt.date | None = None
    settle_date: dt.date | None = None
    description: str | None = None
    conid: int | None = None
    symbol: str | None = None
    sec_type: str | None = None
    trade_id: str | None = None
    action_id: str | None = None
    level_of_detail: str | None = None

    @field_validator("datetime")
    @classmethod
    def _check_time(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _aware(value)

    @property
    def key(self) -> str:
        """``transactionID`` when printed, else a digest of the row (idempotent re-imports)."""
        if self.transaction_id:
            return self.transaction_id
        return f"row:{self._digest_key('cash')}"


class FlexOpenPosition(_FlexRow):
    """An ``OpenPosition`` row at the statement's report date.

    ``level_of_detail`` is ``SUMMARY`` (one row per contract) or ``LOT`` (one row per tax lot); see
    :meth:`FlexStatement.position_quantities` for the per-contract total without double counting.
    """

    report_date: date
    conid: int
    symbol: str | None = None
    description: str | None = None
    sec_type: str | None = None
    quantity: Decimal
    """Signed: negative for a short position."""
    multiplier: Decimal
    mark_price: Decimal | None = None
    position_value: Decimal | None = None
    cost_basis_money: Decimal | None = None
    currency: str | None = None
    level_of_detail: str | None = None


class FlexStatement(BaseModel):
    """One ``FlexStatement`` element: one account's statement for one period."""

    model_config = ConfigDict(frozen=True)

    account_id: str | None
    """The statement's ``accountId``; ``None`` when it is not an account id (a consolidated or
    anonymised statement). Each row still carries its own, validated, account id."""
    from_date: date | None = None
    to_date: date | None = None
    period: str | None = None
    when_generated: datetime | None = None
    kind: FlexStatementKind
    executions: list[FlexExecution] = Field(default_factory=list)
    cancellations: list[FlexCancellation] = Field(default_factory=list)
    cash_transactions: list[FlexCashTransaction] = Field(default_factory=list)
    open_positions: list[FlexOpenPosition] = Field(default_factory=list)
    rejected: list[RejectedRow] = Field(default_factory=list)
    """Rows that could not be read, with their raw attributes and the reason. Never silently dropped."""
    skipped: dict[str, int] = Field(default_factory=dict)
    """Rows that are read on purpose as not-fills (``SymbolSummary``, ``Order``, ``AssetSummary``,
    ``Lot``, summary cash rows) and sections this module does not model, counted by element name."""
    raw: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("when_generated")
    @classmethod
    def _check_time(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    def position_quantities(self) -> dict[tuple[str, int], Decimal]:
        """``{(account_id, conid): quantity}`` from ``OpenPositions``: the ``SUMMARY`` row where the
        statement has one, else the sum of the contract's ``LOT`` rows (never both)."""
        summary: dict[tuple[str, int], Decimal] = {}
        lots: dict[tuple[str, int], Decimal] = {}
        for row in self.open_positions:
            key = (row.account_id, row.conid)
            if (row.level_of_detail or "SUMMARY").upper() == "LOT":
                lots[key] = lots.get(key, Decimal(0)) + row.quantity
            else:
                summary[key] = summary.get(key, Decimal(0)) + row.quantity
        return {**lots, **summary}


class FlexResponse(BaseModel):
    """A whole ``FlexQueryResponse``: every ``FlexStatement`` it holds (one per account and period)."""

    model_config = ConfigDict(frozen=True)

    query_name: str | None = None
    type: str | None = None
    """``AF`` (Activity Flex) or ``TCF`` (Trade Confirmation Flex) as printed."""
    declared_count: int | None = None
    """``FlexStatements count``; may differ from ``len(statements)`` in hand-edited files (all are read)."""
    statements: list[FlexStatement] = Field(default_factory=list)
    rejected: list[RejectedRow] = Field(default_factory=list)
    """Rows found outside any ``FlexStatement`` that could not be attributed."""
    skipped: dict[str, int] = Field(default_factory=dict)
    """Rows outside any ``FlexStatement`` (e.g. a stray ``AccountInformation``), counted by element."""

    @property
    def executions(self) -> list[FlexExecution]:
        return [row for statement in self.statements for row in statement.executions]

    @property
    def all_rejected(self) -> list[RejectedRow]:
        return [*self.rejected, *(row for statement in self.statements for row in statement.rejected)]

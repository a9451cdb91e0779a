"""The ledger tables (SQLAlchemy 2 typed declarative models).

Table and column names are part of the product: users query them directly. Every row is keyed
by account. Amounts and quantities are :class:`~ibkr_tasks.ledger.types.Amount` (exact decimals),
timestamps :class:`~ibkr_tasks.ledger.types.UTCDateTime` (aware UTC). The schema only changes
through an Alembic migration in ``migrations/versions``; a test checks that these models and the
migrations agree.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ibkr_tasks.ledger.types import Amount, ExactJSON, JSONDoc, UTCDateTime
from ibkr_tasks.models.statuses import BreakStatus, CommissionStatus, FillChange, OrderStatus, RunStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An autoincrementing surrogate key: BIGINT on PostgreSQL, INTEGER (= rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

ACCOUNT_ID = String(32)
RUN_ID = String(128)
EXECUTION_ID = String(64)
CURRENCY = String(8)


def _in(column: str, vocabulary: type[StrEnum]) -> str:
    """The CHECK condition that ``column`` holds a value of ``vocabulary`` (ibkr_tasks.models.statuses)."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in vocabulary)})"


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """An IBKR account the ledger keeps books for."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    is_paper: Mapped[bool] = mapped_column(Boolean)
    base_currency: Mapped[str | None] = mapped_column(CURRENCY)
    description: Mapped[str | None] = mapped_column(String(256))
    # The first broker position snapshot the ledger saw: it defines the opening positions.
    opening_snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opening_run_id: Mapped[str | None] = mapped_column(RUN_ID)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FillRow(Base):
    """One execution (``fills``): the current state of what the broker reported for it."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("side IN ('B', 'S', 'X', 'N')", name="side"),
        CheckConstraint("revision >= 0", name="revision"),
        Index(None, "account_id", "trade_time"),
        Index(None, "account_id", "execution_family"),
        Index(None, "account_id", "conid"),
        Index(None, "account_id", "trade_id"),
    )

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"), primary_key=True)
    execution_id: Mapped[str] = mapped_column(EXECUTION_ID, primary_key=True)
    execution_family: Mapped[str] = mapped_column(EXECUTION_ID)
    revision: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean)
    conid: Mapped[int] = mapped_column(BigInteger)
    symbol: Mapped[str | None] = mapped_column(String(64))
    sec_type: Mapped[str | None] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(1))
    quantity: Mapped[Decimal] = mapped_column(Amount)
    price: Mapped[Decimal] = mapped_column(Amount)
    multiplier: Mapped[Decimal] = mapped_column(Amount)
    net_amount: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    trade_time: Mapped[datetime] = mapped_column(UTCDateTime)
    order_ref: Mapped[str | None] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(64))
    exchange: Mapped[str | None] = mapped_column(String(32))
    is_event_contract: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    raw: Mapped[Any] = mapped_column(JSONDoc)
    first_seen_run: Mapped[str] = mapped_column(RUN_ID)
    last_changed_run: Mapped[str] = mapped_column(RUN_ID)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Digest of the row's content as received (internal): lets a re-ingest tell "unchanged" from
    # "updated" by reading one short column. NULL (rows from before revision 0003) reads as changed.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # What IBKR's statements said about the fill (revision 0007): its ``tradeID`` (what a
    # ``TradeCancel`` row names), the date of the statement row that confirmed it (NULL: no statement
    # has confirmed it yet) and whether (and when) a statement cancelled it (kept, but no longer a
    # position).
    trade_id: Mapped[str | None] = mapped_column(String(32))
    statement_date: Mapped[date | None] = mapped_column(Date)
    cancelled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # When the cancellation happened (the TradeCancel row's time): a fill the opening snapshot already
    # held leaves the position at that moment.
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _fill_fk() -> ForeignKeyConstraint:
    """The reference of a row about one fill to that fill (deleted with it)."""
    return ForeignKeyConstraint(
        ["account_id", "execution_id"], ["fills.account_id", "fills.execution_id"], ondelete="CASCADE"
    )


class CommissionRow(Base):
    """The commission of one execution (``commissions``). ``amount`` is NULL while pending."""

    __tablename__ = "commissions"
    __table_args__ = (
        _fill_fk(),
        CheckConstraint(_in("status", CommissionStatus), name="status"),
        CheckConstraint(
            "(amount IS NULL AND status = 'pending') OR (amount IS NOT NULL AND status <> 'pending')",
            name="pending_means_null",
        ),
    )

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    execution_id: Mapped[str] = mapped_column(EXECUTION_ID, primary_key=True)
    amount: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    first_seen_run: Mapped[str] = mapped_column(RUN_ID)
    last_changed_run: Mapped[str] = mapped_column(RUN_ID)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CommissionHistoryRow(Base):
    """One change of a commission (``commission_history``): what it was, what it became, in which run."""

    __tablename__ = "commission_history"
    __table_args__ = (
        _fill_fk(),
        Index(None, "account_id", "execution_id"),
        CheckConstraint(_in("status", CommissionStatus), name="status"),
        CheckConstraint(_in("previous_status", CommissionStatus), name="previous_status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    execution_id: Mapped[str] = mapped_column(EXECUTION_ID)
    previous_amount: Mapped[Decimal | None] = mapped_column(Amount)
    previous_currency: Mapped[str | None] = mapped_column(CURRENCY)
    previous_status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(RUN_ID)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FillHistoryRow(Base):
    """One rewrite of a stored fill (``fill_history``, revision 0008): what the row held before.

    ``change`` says why: ``updated`` (IBKR sent other content) or ``rederived`` (the same payload,
    parsed by a parser version that derives other fields: ``parser_version``). ``previous`` holds the
    fill's content columns as they were (JSON: decimals as strings, times ISO UTC).
    """

    __tablename__ = "fill_history"
    __table_args__ = (
        _fill_fk(),
        Index(None, "account_id", "execution_id"),
        CheckConstraint(_in("change", FillChange), name="change"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    execution_id: Mapped[str] = mapped_column(EXECUTION_ID)
    change: Mapped[str] = mapped_column(String(16))
    previous: Mapped[Any] = mapped_column(JSONDoc)
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))
    parser_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(RUN_ID)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PositionSnapshotRow(Base):
    """One instrument of a broker position report (``position_snapshots``), as the broker said it."""

    __tablename__ = "position_snapshots"
    __table_args__ = (UniqueConstraint("account_id", "taken_at", "conid"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"))
    run_id: Mapped[str] = mapped_column(RUN_ID)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    conid: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[Decimal] = mapped_column(Amount)
    avg_cost: Mapped[Decimal | None] = mapped_column(Amount)
    avg_price: Mapped[Decimal | None] = mapped_column(Amount)
    mkt_price: Mapped[Decimal | None] = mapped_column(Amount)
    mkt_value: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    multiplier: Mapped[Decimal] = mapped_column(Amount)
    asset_class: Mapped[str | None] = mapped_column(String(16))
    symbol: Mapped[str | None] = mapped_column(String(128))
    is_event_contract: Mapped[bool] = mapped_column(Boolean)
    raw: Mapped[Any] = mapped_column(JSONDoc)


class ReconciliationRunRow(Base):
    """One account in one reconciliation run (``reconciliation_runs``), with what it did."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RunStatus), name="status"),
        Index(None, "started_at"),
    )

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"), primary_key=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    fills_new: Mapped[int] = mapped_column(Integer, default=0)
    fills_updated: Mapped[int] = mapped_column(Integer, default=0)
    # Of ``fills_updated``: rewritten because the parser now derives other fields (revision 0008).
    fills_rederived: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    fills_superseded: Mapped[int] = mapped_column(Integer, default=0)
    commissions_finalised: Mapped[int] = mapped_column(Integer, default=0)
    commissions_changed: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    breaks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class BreakRow(Base):
    """Something that did not match (``breaks``): a position, a changed commission, ...

    ``subject`` names what is broken (``conid:265598``, ``execution:0000e0d5.6576fd38.01.01``);
    a run writes at most one break per account, kind and subject.
    """

    __tablename__ = "breaks"
    __table_args__ = (
        CheckConstraint(_in("status", BreakStatus), name="status"),
        UniqueConstraint("account_id", "run_id", "kind", "subject"),
        Index(None, "account_id", "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"))
    run_id: Mapped[str] = mapped_column(RUN_ID)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    conid: Mapped[int | None] = mapped_column(BigInteger)
    execution_id: Mapped[str | None] = mapped_column(EXECUTION_ID)
    expected: Mapped[Decimal | None] = mapped_column(Amount)
    actual: Mapped[Decimal | None] = mapped_column(Amount)
    delta: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    detail: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_run: Mapped[str | None] = mapped_column(RUN_ID)


class OrderRow(Base):
    """Every order we placed (``orders``): the intent is written before the request is sent."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("account_id", "coid"),
        Index(None, "order_id"),
        CheckConstraint(_in("status", OrderStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"))
    coid: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(RUN_ID)
    request: Mapped[Any] = mapped_column(JSONDoc)
    # Every confirmation prompt seen and how it was answered, in order.
    prompts: Mapped[Any] = mapped_column(JSONDoc)
    status: Mapped[str] = mapped_column(String(32))
    # IBKR's own word for the status (``PreSubmitted``, ``Filled``, ...) when IBKR said it (revision 0008).
    ibkr_status: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuarantineRow(Base):
    """An input row that could not be parsed (``quarantine``): kept with its raw payload and the reason.

    ``row_hash`` identifies the raw row (kind, account and payload), so receiving the same bad row
    again does not add a second row. ``account_id`` is NULL when the row does not say whose it is.
    ``raw`` is the row exactly as received, as JSON text (:class:`~ibkr_tasks.ledger.types.ExactJSON`):
    a bad row may hold what a JSON column cannot (NaN, a NUL character, a bare number SQLite would
    turn into a float).
    """

    __tablename__ = "quarantine"
    __table_args__ = (Index(None, "account_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    row_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str | None] = mapped_column(ACCOUNT_ID)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[Any] = mapped_column(ExactJSON, nullable=True)
    first_seen_run: Mapped[str | None] = mapped_column(RUN_ID)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


def table(model: type[Base]) -> Table:
    """The Core ``Table`` of a model: bulk statements use it, so that executemany stays one statement.

    (ORM bulk inserts split the rows into groups by which values are None.)
    """
    return cast(Table, model.__table__)


class QuoteRow(Base):
    """One market-data snapshot of one instrument (``quotes``), as polled; not account data.

    ``received_at`` is when we stored it; ``updated`` is IBKR's own update time when it sent one.
    """

    __tablename__ = "quotes"
    __table_args__ = (Index(None, "conid", "received_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(RUN_ID)
    conid: Mapped[int] = mapped_column(BigInteger)
    symbol: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last: Mapped[Decimal | None] = mapped_column(Amount)
    last_is_prior_close: Mapped[bool] = mapped_column(Boolean)
    halted: Mapped[bool] = mapped_column(Boolean)
    bid: Mapped[Decimal | None] = mapped_column(Amount)
    ask: Mapped[Decimal | None] = mapped_column(Amount)
    bid_size: Mapped[Decimal | None] = mapped_column(Amount)
    ask_size: Mapped[Decimal | None] = mapped_column(Amount)
    last_size: Mapped[Decimal | None] = mapped_column(Amount)
    volume: Mapped[Decimal | None] = mapped_column(Amount)
    high: Mapped[Decimal | None] = mapped_column(Amount)
    low: Mapped[Decimal | None] = mapped_column(Amount)
    open: Mapped[Decimal | None] = mapped_column(Amount)
    close: Mapped[Decimal | None] = mapped_column(Amount)
    prior_close: Mapped[Decimal | None] = mapped_column(Amount)
    mark: Mapped[Decimal | None] = mapped_column(Amount)
    change: Mapped[Decimal | None] = mapped_column(Amount)
    change_pct: Mapped[Decimal | None] = mapped_column(Amount)
    availability: Mapped[str | None] = mapped_column(String(16))
    raw: Mapped[Any] = mapped_column(JSONDoc)


class ContractRow(Base):
    """What IBKR's contract info said about an instrument (``contracts``), kept across runs.

    Conids are permanent, and currency and multiplier come with the instrument, so a nightly run
    looks up only instruments it has not seen (or not for a while) instead of every traded one.
    ``raw`` is IBKR's answer as received; the other columns are there to be queried.
    """

    __tablename__ = "contracts"

    conid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    symbol: Mapped[str | None] = mapped_column(String(128))
    sec_type: Mapped[str | None] = mapped_column(String(16))
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    multiplier: Mapped[Decimal | None] = mapped_column(Amount)
    is_event_contract: Mapped[bool] = mapped_column(Boolean)
    raw: Mapped[Any] = mapped_column(JSONDoc)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CashTransactionRow(Base):
    """One cash transaction of an IBKR statement (``cash_transactions``): dividends, withholding tax,
    fees, interest, deposits and withdrawals ...

    ``transaction_key`` is IBKR's ``transactionID`` (``transaction_id``), or for a row printed
    without one a digest of the row and its occurrence in the statement: booking the same statement
    twice keeps one row. ``amount`` is signed as IBKR prints it (a fee or a withdrawal is negative).
    """

    __tablename__ = "cash_transactions"
    __table_args__ = (
        UniqueConstraint("account_id", "transaction_key"),
        Index(None, "account_id", "date"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"))
    transaction_key: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Amount)
    currency: Mapped[str] = mapped_column(CURRENCY)
    date: Mapped[dt.date] = mapped_column(Date)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report_date: Mapped[dt.date | None] = mapped_column(Date)
    settle_date: Mapped[dt.date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)
    conid: Mapped[int | None] = mapped_column(BigInteger)
    symbol: Mapped[str | None] = mapped_column(String(128))
    raw: Mapped[Any] = mapped_column(JSONDoc)
    first_seen_run: Mapped[str] = mapped_column(RUN_ID)
    last_changed_run: Mapped[str] = mapped_column(RUN_ID)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StatementPositionRow(Base):
    """What an IBKR statement says an account held at its date (``statement_positions``, from
    ``OpenPositions``): one row per account, date and instrument (a contract's ``SUMMARY`` row, else
    the sum of its ``LOT`` rows). Booking a statement of the same date again replaces its rows."""

    __tablename__ = "statement_positions"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("accounts.account_id"), primary_key=True)
    report_date: Mapped[date] = mapped_column(Date, primary_key=True)
    conid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    quantity: Mapped[Decimal] = mapped_column(Amount)
    multiplier: Mapped[Decimal | None] = mapped_column(Amount)
    mark_price: Mapped[Decimal | None] = mapped_column(Amount)
    position_value: Mapped[Decimal | None] = mapped_column(Amount)
    cost_basis_money: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(CURRENCY)
    symbol: Mapped[str | None] = mapped_column(String(128))
    sec_type: Mapped[str | None] = mapped_column(String(16))
    raw: Mapped[Any] = mapped_column(JSONDoc)
    run_id: Mapped[str] = mapped_column(RUN_ID)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)

"""Booking IBKR statements (Flex Activity or Trade Confirmation XML) into the ledger.

A statement is the record accountants reconcile to, so booking one makes the ledger agree with it and
reports every place where it did not:

- **Fills** join on IBKR's execution id (``ibExecID`` / ``execID``; rows without one on
  ``trade:<tradeID>`` ...). A statement row *confirms* a fill the ledger holds (``fills.statement_date``
  and ``fills.trade_id`` are set); a fill the Client Portal API never showed is *added* with
  ``source = 'flex_statement'``. A confirmed fill whose conid, signed quantity or price differs from
  the statement is a ``statement_fill`` break. Corrections are revisions of their execution family,
  as for the Client Portal API (the older revision is marked superseded).
- **Commissions** take the statement's amount and become ``final`` with ``source = 'flex_statement'``
  (*finalised*). A different amount from what the ledger held (the Client Portal's answer) is kept in
  ``commission_history`` and is a ``statement_commission`` break showing both (*changed*).
- **Cancellations** (``TradeCancel`` rows) mark the fill whose ``tradeID`` they name ``cancelled``: it is
  kept, and no longer counts toward positions. One that names no fill the ledger knows is a
  ``statement_cancel`` break.
- **Missing fills**: a fill of the ledger traded within the statement's period (US/Eastern dates) that
  no statement has confirmed is a ``statement_missing`` break (resolved once a statement confirms it).
- **Cash transactions** are upserted into ``cash_transactions`` on IBKR's transaction id.
- **Open positions** replace ``statement_positions`` of their date and are compared with the ledger's
  positions at the end of that date (``statement_position`` breaks). An account without an opening
  snapshot takes the statement's positions as its opening (as the first broker snapshot would).

Everything is set-based: the statement is streamed (:func:`ibkr_tasks.flex.parse.iter_flex`) and
booked in batches of ``batch_size`` executions, each batch a fixed number of statements whatever its
size; memory is bounded by the batch size plus the statement's cancellations and open positions.
Booking the same statement twice changes nothing: every write is keyed by IBKR's ids and only rows
that differ are written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from ibkr_tasks.flex.models import (
    FlexCancellation,
    FlexCashTransaction,
    FlexExecution,
    FlexOpenPosition,
    FlexStatement,
)
from ibkr_tasks.flex.parse import FlexSource, iter_flex
from ibkr_tasks.flex.times import EASTERN
from ibkr_tasks.ledger.bulk import upsert
from ibkr_tasks.ledger.ingest import (
    DEFAULT_BATCH_SIZE,
    STATEMENT_COMMISSION,
    STATEMENT_SOURCE,
    _among,
    _insert_for,
    ensure_account,
    max_batch_size,
    quarantine_rows,
    stored_commissions_of,
)
from ibkr_tasks.ledger.jsonable import to_jsonable
from ibkr_tasks.ledger.locks import lock_account
from ibkr_tasks.ledger.positions import ledger_positions
from ibkr_tasks.ledger.schema import (
    Account,
    BreakRow,
    CashTransactionRow,
    CommissionHistoryRow,
    CommissionRow,
    FillRow,
    PositionSnapshotRow,
    StatementPositionRow,
    table,
)
from ibkr_tasks.models.common import RejectedRow
from ibkr_tasks.models.statuses import BreakStatus, CommissionStatus

__all__ = [
    "STATEMENT_BREAK_KINDS",
    "STATEMENT_SOURCE",
    "StatementBookResult",
    "StatementBreak",
    "book_statement",
    "end_of_statement_day",
]

logger = logging.getLogger(__name__)

STATEMENT_FILL = "statement_fill"
STATEMENT_MISSING = "statement_missing"
STATEMENT_POSITION = "statement_position"
STATEMENT_CANCEL = "statement_cancel"
STATEMENT_BREAK_KINDS = (
    STATEMENT_COMMISSION,
    STATEMENT_FILL,
    STATEMENT_MISSING,
    STATEMENT_POSITION,
    STATEMENT_CANCEL,
)
MAX_LISTED = 500
"""Breaks and added fills listed per account in a result (all are counted, and all breaks stored)."""
_ZERO = Decimal(0)


def end_of_statement_day(day: date) -> datetime:
    """The last instant (UTC) of a statement date: statement dates are US/Eastern business dates."""
    return start_of_statement_day(day + timedelta(days=1)) - timedelta(microseconds=1)


def start_of_statement_day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=EASTERN).astimezone(UTC)


def _close_of(day: date) -> datetime:
    """When a fill printed with a date only is taken to have traded: the US close of that date."""
    return datetime.combine(day, time(16, 0), tzinfo=EASTERN).astimezone(UTC)


@dataclass(frozen=True)
class StatementBreak:
    """A place where the ledger and the statement disagree; ``expected`` is the ledger's value,
    ``actual`` the statement's."""

    kind: str
    subject: str
    conid: int | None = None
    execution_id: str | None = None
    expected: Decimal | None = None
    actual: Decimal | None = None
    currency: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> Decimal | None:
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected


@dataclass
class StatementBookResult:
    """What booking statements did to one account."""

    account_id: str
    statements: int = 0
    from_date: date | None = None
    to_date: date | None = None
    fills_seen: int = 0
    fills_confirmed: int = 0
    fills_added: int = 0
    fills_cancelled: int = 0
    fills_superseded: int = 0
    commissions_finalised: int = 0
    commissions_changed: int = 0
    cash_transactions: int = 0
    cash_changed: int = 0
    positions_compared: int = 0
    opening_from_statement: bool = False
    quarantined: int = 0
    breaks: int = 0
    break_list: list[StatementBreak] = field(default_factory=list)
    """The first :data:`MAX_LISTED` breaks (``breaks`` counts them all; the ``breaks`` table holds all)."""
    added: list[str] = field(default_factory=list)
    """Keys of the first :data:`MAX_LISTED` fills only the statement showed."""

    def add_break(self, item: StatementBreak) -> None:
        self.breaks += 1
        if len(self.break_list) < MAX_LISTED:
            self.break_list.append(item)

    def _period(self, start: date | None, end: date | None) -> None:
        if start is not None and (self.from_date is None or start < self.from_date):
            self.from_date = start
        if end is not None and (self.to_date is None or end > self.to_date):
            self.to_date = end

    def merge(self, other: StatementBookResult) -> None:
        """Add ``other`` (the same account, another statement or chunk) to this result."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.opening_from_statement = self.opening_from_statement or other.opening_from_statement
        self._period(other.from_date, other.to_date)
        self.break_list.extend(other.break_list[: max(0, MAX_LISTED - len(self.break_list))])
        self.added.extend(other.added[: max(0, MAX_LISTED - len(self.added))])
        self.breaks += other.breaks

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (*_COUNTS, "breaks")}


_COUNTS = (
    "statements",
    "fills_seen",
    "fills_confirmed",
    "fills_added",
    "fills_cancelled",
    "fills_superseded",
    "commissions_finalised",
    "commissions_changed",
    "cash_transactions",
    "cash_changed",
    "positions_compared",
    "quarantined",
)


# --------------------------------------------------------------------------------- the entry point
def book_statement(
    ledger: Any,
    source: FlexSource,
    run_id: str,
    *,
    one_transaction: bool = True,
    source_name: str | None = None,
    date_format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, StatementBookResult]:
    """Book a Flex response (bytes, a path or a binary file) into ``ledger``; per-account results.

    ``one_transaction`` (the default): the whole response is one transaction; a response that cannot
    be read to its end (:class:`~ibkr_tasks.flex.errors.FlexParseError`) leaves nothing written.
    Otherwise each ``FlexStatement`` (one account's) is its own transaction: the statements read
    before the error stay booked. Streamed: memory does not grow with the statement's size.
    """
    ledger.ensure_schema()
    results: dict[str, StatementBookResult] = {}
    rows = iter_flex(source, source_name=source_name, date_format=date_format)
    with ledger.write() if one_transaction else contextlib.nullcontext() as shared:
        for statement, row in rows:
            with contextlib.nullcontext(shared) if shared is not None else ledger.write() as session:
                booker = _StatementBooker(session, statement, run_id, batch_size)
                while row is not None:
                    booker.add(row)
                    # iter_flex ends every statement with (statement, None), or raises.
                    _, row = next(rows)
                for account_id, result in booker.finish().items():
                    results.setdefault(account_id, StatementBookResult(account_id)).merge(result)
    return dict(sorted(results.items()))


# --------------------------------------------------------------------------------- one statement
@dataclass
class _AccountBatch:
    result: StatementBookResult
    executions: list[FlexExecution] = field(default_factory=list)
    cash: list[FlexCashTransaction] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    cancellations: list[FlexCancellation] = field(default_factory=list)
    positions: list[FlexOpenPosition] = field(default_factory=list)


class _StatementBooker:
    """Books the rows of one ``FlexStatement`` within the caller's transaction."""

    def __init__(self, session: Session, statement: FlexStatement, run_id: str, batch_size: int) -> None:
        self.session = session
        self.statement = statement
        self.run_id = run_id
        self.now = datetime.now(UTC)
        self.size = max_batch_size(session, batch_size)
        self.accounts: dict[str, _AccountBatch] = {}
        self.orphans: list[RejectedRow] = []
        if statement.account_id is not None:
            self._batch(statement.account_id)

    def _batch(self, account_id: str) -> _AccountBatch:
        batch = self.accounts.get(account_id)
        if batch is None:
            lock_account(self.session, account_id)
            ensure_account(self.session, account_id, self.now)
            result = StatementBookResult(account_id, statements=1)
            result._period(self.statement.from_date, self.statement.to_date)
            batch = self.accounts[account_id] = _AccountBatch(result)
        return batch

    def add(self, row: Any) -> None:
        if isinstance(row, RejectedRow):
            if row.account_id is None:
                self.orphans.append(row)
            else:
                batch = self._batch(row.account_id)
                batch.rejected.append(row)
                if len(batch.rejected) >= self.size:
                    self._flush_rejected(batch)
            return
        batch = self._batch(row.account_id)
        if isinstance(row, FlexExecution):
            batch.executions.append(row)
            if len(batch.executions) >= self.size:
                self._flush_executions(batch)
        elif isinstance(row, FlexCashTransaction):
            batch.cash.append(row)
            if len(batch.cash) >= self.size:
                self._flush_cash(batch)
        elif isinstance(row, FlexCancellation):
            batch.cancellations.append(row)
        elif isinstance(row, FlexOpenPosition):
            batch.positions.append(row)

    def finish(self) -> dict[str, StatementBookResult]:
        for account_id, batch in self.accounts.items():
            self._flush_executions(batch)
            self._flush_cash(batch)
            self._flush_rejected(batch)
            self._cancel(account_id, batch)
            self._missing(account_id, batch)
            self._positions(account_id, batch)
        if self.orphans:
            quarantine_rows(self.session, self.orphans, self.run_id, now=self.now)
        return {a: b.result for a, b in self.accounts.items()}

    # ---------------------------------------------------------------------- executions
    def _flush_rejected(self, batch: _AccountBatch) -> None:
        if batch.rejected:
            batch.result.quarantined += quarantine_rows(
                self.session, batch.rejected, self.run_id, now=self.now
            )
            batch.rejected = []

    def _flush_executions(self, batch: _AccountBatch) -> None:
        rows, batch.executions = batch.executions, []
        if rows:
            _book_executions(self.session, batch.result, rows, batch.rejected, self.run_id, self.now)

    def _flush_cash(self, batch: _AccountBatch) -> None:
        rows, batch.cash = batch.cash, []
        if rows:
            _book_cash(self.session, batch.result, rows, self.run_id, self.now)

    # ---------------------------------------------------------------------- cancellations
    def _cancel(self, account_id: str, batch: _AccountBatch) -> None:
        if not batch.cancellations:
            return
        fills = table(FillRow)
        result = batch.result
        unmatched: list[StatementBreak] = []
        for chunk in _chunks(batch.cancellations, self.size):
            named = sorted({c.orig_trade_id for c in chunk if c.orig_trade_id})
            found: dict[str, list[Any]] = {}
            if named:
                for row in self.session.execute(
                    select(fills.c.execution_id, fills.c.trade_id, fills.c.cancelled).where(
                        fills.c.account_id == account_id, _among(self.session, fills.c.trade_id, named)
                    )
                ):
                    found.setdefault(row.trade_id, []).append(row)
            to_cancel: dict[str, datetime] = {}
            for cancel in chunk:
                targets = found.get(cancel.orig_trade_id or "", [])
                if not targets:
                    unmatched.append(
                        StatementBreak(
                            kind=STATEMENT_CANCEL,
                            subject=f"trade:{cancel.orig_trade_id}" if cancel.orig_trade_id else cancel.key,
                            conid=cancel.conid,
                            actual=-cancel.quantity if cancel.side == "S" else cancel.quantity,
                            detail={
                                "reason": "the cancellation names a fill the ledger does not hold",
                                "orig_trade_id": cancel.orig_trade_id,
                                "transaction_id": cancel.transaction_id,
                            },
                        )
                    )
                    continue
                when = cancel.trade_time or (_close_of(cancel.trade_date) if cancel.trade_date else self.now)
                to_cancel.update((t.execution_id, when) for t in targets if not t.cancelled)
            if to_cancel:
                self.session.execute(
                    update(fills)
                    .where(
                        fills.c.account_id == bindparam("b_account"),
                        fills.c.execution_id == bindparam("b_execution"),
                    )
                    .values(
                        cancelled=True,
                        cancelled_at=bindparam("b_at"),
                        last_changed_run=self.run_id,
                        last_changed_at=self.now,
                    ),
                    [
                        {"b_account": account_id, "b_execution": execution_id, "b_at": at}
                        for execution_id, at in sorted(to_cancel.items())
                    ],
                )
                result.fills_cancelled += len(to_cancel)
        batch.cancellations = []
        for item in unmatched:
            result.add_break(item)
        _insert_breaks(self.session, account_id, self.run_id, self.now, unmatched)

    # ---------------------------------------------------------------------- missing fills
    def _missing(self, account_id: str, batch: _AccountBatch) -> None:
        fills = table(FillRow)
        breaks = table(BreakRow)
        # A fill a statement has now confirmed no longer breaks.
        self.session.execute(
            update(breaks)
            .where(
                breaks.c.account_id == account_id,
                breaks.c.kind == STATEMENT_MISSING,
                breaks.c.status == BreakStatus.OPEN,
                breaks.c.execution_id.in_(
                    select(fills.c.execution_id).where(
                        fills.c.account_id == account_id, fills.c.statement_date.is_not(None)
                    )
                ),
            )
            .values(status=BreakStatus.RESOLVED, resolved_at=self.now, resolved_run=self.run_id)
        )
        start, end = self.statement.from_date, self.statement.to_date
        if start is None or end is None:
            return
        missing: list[StatementBreak] = []
        for row in self.session.execute(
            select(
                fills.c.execution_id,
                fills.c.conid,
                fills.c.side,
                fills.c.quantity,
                fills.c.trade_time,
                fills.c.source,
            )
            .where(
                fills.c.account_id == account_id,
                fills.c.statement_date.is_(None),
                fills.c.trade_time >= start_of_statement_day(start),
                fills.c.trade_time <= end_of_statement_day(end),
            )
            .order_by(fills.c.trade_time, fills.c.execution_id)
        ):
            missing.append(
                StatementBreak(
                    kind=STATEMENT_MISSING,
                    subject=f"execution:{row.execution_id}",
                    conid=row.conid,
                    execution_id=row.execution_id,
                    expected=row.quantity if row.side == "B" else -row.quantity,
                    actual=_ZERO,
                    detail={
                        "reason": f"not in the statement of {start}..{end}",
                        "trade_time": row.trade_time.isoformat(),
                        "source": row.source,
                    },
                )
            )
        for item in missing:
            batch.result.add_break(item)
        _insert_breaks(self.session, account_id, self.run_id, self.now, missing)

    # ---------------------------------------------------------------------- positions
    def _positions(self, account_id: str, batch: _AccountBatch) -> None:
        if not batch.positions:
            return
        result = batch.result
        by_date: dict[date, list[FlexOpenPosition]] = {}
        for row in batch.positions:
            by_date.setdefault(row.report_date, []).append(row)
        for day, rows in sorted(by_date.items()):
            quantities = _position_quantities(rows)
            first: dict[int, FlexOpenPosition] = {}
            for row in rows:
                first.setdefault(row.conid, row)
            self._store_positions(account_id, day, quantities, first, rows)
            as_of = end_of_statement_day(day)
            opening = self.session.scalar(
                select(Account.opening_snapshot_at).where(Account.account_id == account_id)
            )
            result.positions_compared += len(quantities)
            if opening is None:
                self._open_books(account_id, as_of, quantities, first)
                result.opening_from_statement = True
                _resolve_positions(self.session, account_id, self.run_id, self.now, day, set())
                continue
            ledger = ledger_positions(self.session, account_id, as_of=as_of)
            found: list[StatementBreak] = []
            for conid in sorted(set(ledger) | set(quantities)):
                expected = ledger[conid].quantity if conid in ledger else _ZERO
                actual = quantities.get(conid, _ZERO)
                if expected != actual:
                    theirs = first.get(conid)
                    mine = ledger.get(conid)
                    found.append(
                        StatementBreak(
                            kind=STATEMENT_POSITION,
                            subject=f"conid:{conid}@{day.isoformat()}",
                            conid=conid,
                            expected=expected,
                            actual=actual,
                            detail={
                                "date": day.isoformat(),
                                "symbol": theirs.symbol if theirs else (mine.symbol if mine else None),
                            },
                        )
                    )
            for item in found:
                result.add_break(item)
            _resolve_positions(
                self.session, account_id, self.run_id, self.now, day, {b.subject for b in found}
            )
            _insert_breaks(self.session, account_id, self.run_id, self.now, found)

    def _store_positions(
        self,
        account_id: str,
        day: date,
        quantities: dict[int, Decimal],
        first: dict[int, FlexOpenPosition],
        rows: list[FlexOpenPosition],
    ) -> None:
        values: dict[int, Decimal] = {}
        costs: dict[int, Decimal] = {}
        raws: dict[int, list[dict[str, str]]] = {}
        for row in rows:
            raws.setdefault(row.conid, []).append(row.raw)
            if row.position_value is not None:
                values[row.conid] = values.get(row.conid, _ZERO) + row.position_value
            if row.cost_basis_money is not None:
                costs[row.conid] = costs.get(row.conid, _ZERO) + row.cost_basis_money
        rows_out = [
            {
                "account_id": account_id,
                "report_date": day,
                "conid": conid,
                "quantity": quantity,
                "multiplier": first[conid].multiplier,
                "mark_price": first[conid].mark_price,
                "position_value": values.get(conid),
                "cost_basis_money": costs.get(conid),
                "currency": first[conid].currency,
                "symbol": first[conid].symbol,
                "sec_type": first[conid].sec_type,
                "raw": raws[conid][0] if len(raws[conid]) == 1 else {"rows": raws[conid]},
                "run_id": self.run_id,
                "stored_at": self.now,
            }
            for conid, quantity in sorted(quantities.items())
        ]
        positions = table(StatementPositionRow)
        stored = {
            r.conid: tuple(r)[1:]
            for r in self.session.execute(
                select(positions.c.conid, *[positions.c[c] for c in _POSITION_CONTENT]).where(
                    positions.c.account_id == account_id, positions.c.report_date == day
                )
            )
        }
        if stored == {r["conid"]: tuple(r[c] for c in _POSITION_CONTENT) for r in rows_out}:
            return  # the same statement again: nothing to write
        self.session.execute(
            delete(positions).where(positions.c.account_id == account_id, positions.c.report_date == day)
        )
        upsert(self.session, positions, rows_out, conflict=("account_id", "report_date", "conid"))

    def _open_books(
        self,
        account_id: str,
        as_of: datetime,
        quantities: dict[int, Decimal],
        first: dict[int, FlexOpenPosition],
    ) -> None:
        """No broker snapshot yet: the statement's positions open the books (as a first snapshot would)."""
        snapshots = table(PositionSnapshotRow)
        self.session.execute(
            delete(snapshots).where(snapshots.c.account_id == account_id, snapshots.c.taken_at == as_of)
        )
        rows = [
            {
                "account_id": account_id,
                "run_id": self.run_id,
                "taken_at": as_of,
                "conid": conid,
                "position": quantity,
                "avg_cost": None,
                "avg_price": None,
                "mkt_price": first[conid].mark_price,
                "mkt_value": first[conid].position_value,
                "currency": first[conid].currency,
                "multiplier": first[conid].multiplier,
                "asset_class": first[conid].sec_type,
                "symbol": first[conid].symbol,
                "is_event_contract": False,
                "raw": {"source": STATEMENT_SOURCE, **first[conid].raw},
            }
            for conid, quantity in sorted(quantities.items())
            if quantity != 0
        ]
        if rows:
            self.session.execute(_insert_for(self.session)(snapshots), rows)
        self.session.execute(
            update(table(Account))
            .where(table(Account).c.account_id == account_id)
            .values(opening_snapshot_at=as_of, opening_run_id=self.run_id)
        )


_POSITION_CONTENT = (
    "quantity",
    "multiplier",
    "mark_price",
    "position_value",
    "cost_basis_money",
    "currency",
    "symbol",
    "sec_type",
)


def _position_quantities(rows: list[FlexOpenPosition]) -> dict[int, Decimal]:
    """Per conid: the ``SUMMARY`` row's quantity, else the sum of its ``LOT`` rows (never both)."""
    summary: dict[int, Decimal] = {}
    lots: dict[int, Decimal] = {}
    for row in rows:
        if (row.level_of_detail or "SUMMARY").upper() == "LOT":
            lots[row.conid] = lots.get(row.conid, _ZERO) + row.quantity
        else:
            summary[row.conid] = summary.get(row.conid, _ZERO) + row.quantity
    return {**lots, **summary}


# --------------------------------------------------------------------------------- set-based pieces
def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _family(row: FlexExecution) -> tuple[str, int]:
    if row.execution_id and row.execution_family is not None and row.revision is not None:
        return row.execution_family, row.revision
    return row.key, 0


def _signed(side: str, quantity: Decimal) -> Decimal:
    return quantity if side == "B" else -quantity


def _fill_row(row: FlexExecution, key: str, run_id: str, now: datetime) -> dict[str, Any]:
    family, revision = _family(row)
    return {
        "account_id": row.account_id,
        "execution_id": key,
        "execution_family": family,
        "revision": revision,
        "superseded": False,
        "conid": row.conid,
        "symbol": row.symbol,
        "sec_type": row.sec_type,
        "side": row.side,
        "quantity": row.quantity,
        "price": row.price,
        "multiplier": row.multiplier,
        "net_amount": abs(row.trade_money) if row.trade_money is not None else None,
        "currency": row.currency,
        "trade_time": row.trade_time or _close_of(row.trade_date),
        "order_ref": row.order_ref,
        "order_id": row.order_id,
        "exchange": row.exchange,
        "is_event_contract": False,
        "source": STATEMENT_SOURCE,
        "raw": row.raw,
        "first_seen_run": run_id,
        "last_changed_run": run_id,
        "first_seen_at": now,
        "last_changed_at": now,
        # No digest: a later Client Portal answer for this execution reads as a change and is kept.
        "content_hash": None,
        "trade_id": row.trade_id,
        "statement_date": row.report_date or row.trade_date,
    }


def _book_executions(
    session: Session,
    result: StatementBookResult,
    rows: list[FlexExecution],
    rejected: list[RejectedRow],
    run_id: str,
    now: datetime,
) -> None:
    account_id = result.account_id
    result.fills_seen += len(rows)
    by_key: dict[str, FlexExecution] = {}
    for row in rows:
        key = row.key
        earlier = by_key.get(key)
        if earlier is None:
            by_key[key] = row
        elif earlier.raw != row.raw:
            rejected.append(
                RejectedRow(
                    kind="flex_execution",
                    account_id=account_id,
                    key=key,
                    reason=f"execution {key!r} is printed twice in the statement with different contents; "
                    "the first is booked",
                    raw={"element": "Trade", "attributes": row.raw},
                )
            )
    families = sorted({_family(r)[0] for r in by_key.values()})
    fills, commissions = table(FillRow), table(CommissionRow)
    stored = {
        r.execution_id: r
        for r in session.execute(
            select(
                fills.c.execution_id,
                fills.c.execution_family,
                fills.c.revision,
                fills.c.superseded,
                fills.c.conid,
                fills.c.side,
                fills.c.quantity,
                fills.c.price,
                fills.c.trade_id,
                fills.c.statement_date,
            ).where(fills.c.account_id == account_id, _among(session, fills.c.execution_family, families))
        )
    }
    known = [k for k in by_key if k in stored]
    stored_commissions = stored_commissions_of(session, account_id, known)
    newest: dict[str, int] = {}
    for family, revision in [(r.execution_family, r.revision) for r in stored.values()] + [
        _family(r) for r in by_key.values()
    ]:
        if revision > newest.get(family, -1):
            newest[family] = revision

    new_rows: list[dict[str, Any]] = []
    confirmations: list[dict[str, Any]] = []
    commission_rows: list[dict[str, Any]] = []
    history_rows: list[dict[str, Any]] = []
    found: list[StatementBreak] = []
    for key, row in by_key.items():
        old = stored.get(key)
        statement_date = row.report_date or row.trade_date
        if old is None:
            fill = _fill_row(row, key, run_id, now)
            family, revision = _family(row)
            if revision < newest[family]:
                fill["superseded"] = True
                result.fills_superseded += 1
            new_rows.append(fill)
            result.fills_added += 1
            if len(result.added) < MAX_LISTED:
                result.added.append(key)
            amount = row.commission
            commission_rows.append(
                {
                    "account_id": account_id,
                    "execution_id": key,
                    "amount": amount,
                    "currency": row.commission_currency if amount is not None else None,
                    "status": CommissionStatus.FINAL if amount is not None else CommissionStatus.PENDING,
                    "source": STATEMENT_SOURCE,
                    "first_seen_run": run_id,
                    "last_changed_run": run_id,
                    "updated_at": now,
                }
            )
            continue
        if old.statement_date is None:
            result.fills_confirmed += 1
        if old.statement_date != statement_date or (row.trade_id and old.trade_id != row.trade_id):
            confirmations.append(
                {
                    "b_account": account_id,
                    "b_execution": key,
                    "b_date": statement_date,
                    "b_trade": row.trade_id or old.trade_id,
                }
            )
        if (
            old.conid != row.conid
            or _signed(old.side, old.quantity) != row.signed_quantity
            or old.price != row.price
        ):
            found.append(
                StatementBreak(
                    kind=STATEMENT_FILL,
                    subject=f"execution:{key}",
                    conid=row.conid,
                    execution_id=key,
                    expected=_signed(old.side, old.quantity),
                    actual=row.signed_quantity,
                    detail=to_jsonable(
                        {
                            "ledger": {"conid": old.conid, "price": old.price},
                            "statement": {"conid": row.conid, "price": row.price},
                        }
                    ),
                )
            )
        _commission(
            account_id,
            key,
            row,
            stored_commissions.get(key),
            run_id,
            now,
            result,
            commission_rows,
            history_rows,
            found,
        )

    outdated = sorted(
        r.execution_id
        for r in stored.values()
        if not r.superseded and r.revision < newest[r.execution_family]
    )
    upsert(session, fills, new_rows, conflict=("account_id", "execution_id"))
    if confirmations:
        session.execute(
            update(fills)
            .where(
                fills.c.account_id == bindparam("b_account"), fills.c.execution_id == bindparam("b_execution")
            )
            .values(statement_date=bindparam("b_date"), trade_id=bindparam("b_trade")),
            confirmations,
        )
    for ids in _chunks(outdated, max_batch_size(session)):
        session.execute(
            update(fills)
            .where(fills.c.account_id == account_id, _among(session, fills.c.execution_id, ids))
            .values(superseded=True, last_changed_run=run_id, last_changed_at=now)
        )
    result.fills_superseded += len(outdated)
    upsert(
        session,
        commissions,
        commission_rows,
        conflict=("account_id", "execution_id"),
        update=("amount", "currency", "status", "source", "last_changed_run", "updated_at"),
    )
    if history_rows:
        session.execute(_insert_for(session)(table(CommissionHistoryRow)), history_rows)
    for item in found:
        result.add_break(item)
    _insert_breaks(session, account_id, run_id, now, found)


def _commission(
    account_id: str,
    key: str,
    row: FlexExecution,
    old: Any,
    run_id: str,
    now: datetime,
    result: StatementBookResult,
    commission_rows: list[dict[str, Any]],
    history_rows: list[dict[str, Any]],
    found: list[StatementBreak],
) -> None:
    """The statement's commission is final: decide what it does to the stored one."""
    amount, currency = row.commission, row.commission_currency
    if amount is None:
        return  # the statement does not print commissions: keep what the ledger knows
    new = {
        "account_id": account_id,
        "execution_id": key,
        "amount": amount,
        "currency": currency,
        "status": CommissionStatus.FINAL,
        "source": STATEMENT_SOURCE,
        "first_seen_run": run_id,
        "last_changed_run": run_id,
        "updated_at": now,
    }
    if old is None:
        commission_rows.append(new)
        result.commissions_finalised += 1
        return
    same_amount = old.amount is not None and old.amount == amount
    same_currency = currency is None or old.currency is None or old.currency == currency
    if (
        same_amount
        and same_currency
        and old.source == STATEMENT_SOURCE
        and old.status == CommissionStatus.FINAL
    ):
        return  # already final from a statement
    if old.amount is None or (same_amount and same_currency):
        result.commissions_finalised += 1
    else:
        result.commissions_changed += 1
        found.append(
            StatementBreak(
                kind=STATEMENT_COMMISSION,
                subject=f"execution:{key}",
                conid=row.conid,
                execution_id=key,
                expected=old.amount,
                actual=amount,
                currency=currency,
                detail={
                    "ledger_source": old.source,
                    "ledger_currency": old.currency,
                    "previous_status": old.status,
                },
            )
        )
    commission_rows.append(new)
    history_rows.append(
        {
            "account_id": account_id,
            "execution_id": key,
            "previous_amount": old.amount,
            "previous_currency": old.currency,
            "previous_status": old.status,
            "amount": amount,
            "currency": currency,
            "status": CommissionStatus.FINAL,
            "source": STATEMENT_SOURCE,
            "run_id": run_id,
            "changed_at": now,
        }
    )


_CASH_CONTENT = (
    "transaction_id",
    "type",
    "amount",
    "currency",
    "date",
    "occurred_at",
    "report_date",
    "settle_date",
    "description",
    "conid",
    "symbol",
)


def _book_cash(
    session: Session, result: StatementBookResult, rows: list[FlexCashTransaction], run_id: str, now: datetime
) -> None:
    account_id = result.account_id
    incoming: dict[str, dict[str, Any]] = {}
    for transaction in rows:
        incoming[transaction.key[:64]] = {
            "account_id": account_id,
            "transaction_key": transaction.key[:64],
            "transaction_id": transaction.transaction_id,
            "type": transaction.type,
            "amount": transaction.amount,
            "currency": transaction.currency,
            "date": transaction.date,
            "occurred_at": transaction.datetime,
            "report_date": transaction.report_date,
            "settle_date": transaction.settle_date,
            "description": transaction.description,
            "conid": transaction.conid,
            "symbol": transaction.symbol,
            "raw": transaction.raw,
            "first_seen_run": run_id,
            "last_changed_run": run_id,
            "first_seen_at": now,
            "last_changed_at": now,
        }
    cash = table(CashTransactionRow)
    columns = [cash.c[name] for name in _CASH_CONTENT]
    stored = {
        r.transaction_key: r
        for r in session.execute(
            select(cash.c.transaction_key, *columns).where(
                cash.c.account_id == account_id, _among(session, cash.c.transaction_key, sorted(incoming))
            )
        )
    }
    write: list[dict[str, Any]] = []
    for key, row in incoming.items():
        old = stored.get(key)
        if old is None:
            result.cash_transactions += 1
            write.append(row)
        elif any(getattr(old, name) != row[name] for name in _CASH_CONTENT):
            result.cash_changed += 1
            write.append(row)
    upsert(
        session,
        cash,
        write,
        conflict=("account_id", "transaction_key"),
        update=(*_CASH_CONTENT, "raw", "last_changed_run", "last_changed_at"),
    )


# --------------------------------------------------------------------------------- breaks
def _break_row(account_id: str, run_id: str, now: datetime, item: StatementBreak) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "run_id": run_id,
        "kind": item.kind,
        "subject": item.subject[:128],
        "conid": item.conid,
        "execution_id": item.execution_id,
        "expected": item.expected,
        "actual": item.actual,
        "delta": item.delta,
        "currency": item.currency,
        "detail": to_jsonable(item.detail),
        "status": BreakStatus.OPEN,
        "detected_at": now,
    }


def _insert_breaks(
    session: Session, account_id: str, run_id: str, now: datetime, items: list[StatementBreak]
) -> None:
    """Store breaks that are not already open (the same account, kind and subject): booking a
    statement again reports them again but writes nothing."""
    if not items:
        return
    breaks = table(BreakRow)
    subjects = sorted({i.subject[:128] for i in items})
    kinds = sorted({i.kind for i in items})
    already = {
        (r.kind, r.subject)
        for r in session.execute(
            select(breaks.c.kind, breaks.c.subject).where(
                breaks.c.account_id == account_id,
                breaks.c.status == BreakStatus.OPEN,
                breaks.c.kind.in_(kinds),
                _among(session, breaks.c.subject, subjects),
            )
        )
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        ident = (item.kind, item.subject[:128])
        if ident not in already and ident not in rows:
            rows[ident] = _break_row(account_id, run_id, now, item)
    if rows:
        session.execute(
            _insert_for(session)(breaks).on_conflict_do_nothing(
                index_elements=[BreakRow.account_id, BreakRow.run_id, BreakRow.kind, BreakRow.subject]
            ),
            list(rows.values()),
        )


def _resolve_positions(
    session: Session, account_id: str, run_id: str, now: datetime, day: date, still: set[str]
) -> None:
    """Open position breaks of statement date ``day`` that this comparison no longer finds: resolved."""
    breaks = table(BreakRow)
    query = update(breaks).where(
        breaks.c.account_id == account_id,
        breaks.c.kind == STATEMENT_POSITION,
        breaks.c.status == BreakStatus.OPEN,
        breaks.c.subject.like(f"conid:%@{day.isoformat()}"),
    )
    if still:
        query = query.where(breaks.c.subject.not_in(sorted(still)))
    session.execute(query.values(status=BreakStatus.RESOLVED, resolved_at=now, resolved_run=run_id))

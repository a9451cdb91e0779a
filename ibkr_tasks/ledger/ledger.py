"""``Ledger``: the ledger database as one object (engine, schema, transactions, read helpers)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, exists, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from ibkr_tasks.accounts import is_paper_account, validate_account_id
from ibkr_tasks.errors import LedgerError
from ibkr_tasks.ledger import engine as engine_mod
from ibkr_tasks.ledger import orders as orders_mod
from ibkr_tasks.ledger.bulk import upsert
from ibkr_tasks.ledger.ingest import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SOURCE,
    IngestResult,
    _insert_for,
    ensure_account,
    ingest_fills,
    quarantine_rows,
)
from ibkr_tasks.ledger.locks import lock_account
from ibkr_tasks.ledger.orders import OrderRecord
from ibkr_tasks.ledger.positions import (
    LedgerPosition,
    ReconcileResult,
    _rowcount,
    ledger_positions,
    reconcile_positions,
)
from ibkr_tasks.ledger.schema import (
    Account,
    BreakRow,
    CashTransactionRow,
    CommissionRow,
    ContractRow,
    FillRow,
    PositionSnapshotRow,
    QuoteRow,
    ReconciliationRunRow,
    StatementPositionRow,
    table,
)
from ibkr_tasks.ledger.types import ensure_utc
from ibkr_tasks.models.runs import RUN_COUNTS, RunCounts
from ibkr_tasks.models.statuses import BreakStatus, CommissionStatus, OrderStatus, RunStatus

if TYPE_CHECKING:
    from ibkr_tasks.ledger.flex import StatementBookResult
    from ibkr_tasks.models import ContractInfo, Fill, Position, RejectedRow, Snapshot

logger = logging.getLogger(__name__)

CONTRACT_MAX_AGE = timedelta(days=30)
"""Stored contract info older than this is looked up again (symbols can change; conids do not)."""

RUN_MAX_AGE_ENV = "IBKR_LEDGER_RUN_MAX_HOURS"
DEFAULT_RUN_MAX_AGE = timedelta(hours=6)
"""A ``running`` run started longer ago than this is taken for dead by the account's next run.

A nightly run takes minutes; six hours leaves room for a slow night and still lets the next
night's run close a run that was killed. ``IBKR_LEDGER_RUN_MAX_HOURS`` (hours, decimals allowed) or
``Ledger(run_max_age=...)`` sets it."""

_QUOTE_FIELDS = (
    "conid",
    "symbol",
    "updated",
    "last",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "last_size",
    "volume",
    "high",
    "low",
    "open",
    "close",
    "prior_close",
    "mark",
    "change",
    "change_pct",
    "availability",
)


def _run_max_age_from_env() -> timedelta:
    raw = os.environ.get(RUN_MAX_AGE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RUN_MAX_AGE
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise LedgerError(f"{RUN_MAX_AGE_ENV} must be a positive number of hours, not {raw!r}")
    return timedelta(hours=hours)


def _not_abandoned(snapshot: type[PositionSnapshotRow] = PositionSnapshotRow) -> Any:
    """SQL condition: the snapshot's run was not abandoned (a snapshot filed without a run counts)."""
    return ~exists().where(
        ReconciliationRunRow.account_id == snapshot.account_id,
        ReconciliationRunRow.run_id == snapshot.run_id,
        ReconciliationRunRow.status == RunStatus.ABANDONED,
    )


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:g}h"


def _as_utc(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return ensure_utc(value)
    return datetime.combine(value, time.min, tzinfo=UTC)


class Ledger:
    """The book of record: one database, every row keyed by account.

    ``Ledger(url)`` connects lazily to ``url``, else ``IBKR_LEDGER_URL``, else
    ``sqlite:///ibkr_ledger.db``. On first use an empty SQLite database is created at the newest
    schema; any other database that is not at the newest schema raises LedgerError asking for
    ``ibkr-tasks db upgrade`` (schemas of production databases change only when someone says so).
    Each write method runs in its own transaction, holding the account's write lock.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        run_max_age: timedelta | None = None,
    ) -> None:
        self.run_max_age = run_max_age if run_max_age is not None else _run_max_age_from_env()
        self.url = engine.url if engine is not None else engine_mod.resolve_url(url)
        self.engine = engine if engine is not None else engine_mod.create_ledger_engine(self.url)
        self._write_engine = self.engine.execution_options(**{engine_mod.WRITE_OPTION: True})
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self._schema_ok = False
        self._schema_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Ledger({self.url.render_as_string(hide_password=True)!r})"

    # --- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the database schema to ``revision`` (default: the newest) with Alembic."""
        engine_mod.upgrade(self.engine, revision)
        self._schema_ok = False

    def ensure_schema(self) -> None:
        """Check (once) that the schema is current; create it in an empty SQLite database."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if self._schema_ok:
                return
            current = engine_mod.current_revision(self.engine)
            head = engine_mod.head_revision()
            if current != head:
                if (
                    current is None
                    and self.engine.dialect.name == "sqlite"
                    and engine_mod.is_empty(self.engine)
                ):
                    engine_mod.upgrade(self.engine)
                elif current is None:
                    raise LedgerError(
                        f"the ledger database {self!r} has no ledger schema: run "
                        "`ibkr-tasks db upgrade <URL>` (or Ledger(url).upgrade()) once to create it"
                    )
                else:
                    raise LedgerError(
                        f"the ledger database {self!r} is at schema revision {current}, this version of "
                        f"ibkr-tasks needs {head}: run `ibkr-tasks db upgrade <URL>` (back up first)"
                    )
            self._schema_ok = True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- transactions ---------------------------------------------------------------------

    def session(self) -> Session:
        """A new ORM session for reading (or for your own writes; you manage its transaction)."""
        self.ensure_schema()
        return self._sessions()

    @contextmanager
    def write(self, account_id: str | None = None) -> Iterator[Session]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite) holding ``account_id``'s lock.

        Commits when the block ends, rolls back on an exception.
        """
        self.ensure_schema()
        with self._write_sessions() as session, session.begin():
            if account_id is not None:
                lock_account(session, account_id)
            yield session

    # --- ingest and reconcile ---------------------------------------------------------------

    def ingest(
        self,
        account_id: str,
        fills: Iterable[Fill],
        run_id: str,
        rejected: Iterable[RejectedRow] = (),
        *,
        source: str = DEFAULT_SOURCE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> IngestResult:
        """Ingest one account's fills (and quarantine its rejected rows) in one transaction."""
        account_id = validate_account_id(account_id)
        with self.write(account_id) as session:
            return ingest_fills(
                session, account_id, fills, run_id, rejected, source=source, batch_size=batch_size
            )

    def quarantine(self, rejected: Iterable[RejectedRow], run_id: str | None) -> int:
        """Keep rows that could not be parsed, with their raw payload and reason, in one transaction.

        For rows that belong to no account (``RejectedRow.account_id`` is None); an account's own
        rejected rows go through :meth:`ingest` with its fills.
        """
        with self.write() as session:
            return quarantine_rows(session, rejected, run_id)

    def reconcile(
        self,
        account_id: str,
        broker_positions: Iterable[Position],
        run_id: str,
        taken_at: datetime | None = None,
        *,
        not_before: datetime | None = None,
    ) -> ReconcileResult:
        """Store the broker's positions and write position breaks, in one transaction.

        Leave ``taken_at`` out and the ledger files the snapshot under a time it chooses while
        holding the account's lock: now, not before ``not_before`` (pass the newest trade time of
        the fills this run ingested), and after every other run's snapshot of the account.
        """
        account_id = validate_account_id(account_id)
        with self.write(account_id) as session:
            return reconcile_positions(
                session, account_id, broker_positions, run_id, taken_at, not_before=not_before
            )

    def book_statement(
        self,
        source: Any,
        run_id: str,
        *,
        one_transaction: bool = True,
        source_name: str | None = None,
        date_format: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> dict[str, StatementBookResult]:
        """Book an IBKR Flex statement (bytes, a path or a binary file): per-account results.

        See :mod:`ibkr_tasks.ledger.flex`. ``one_transaction``: the whole response in one
        transaction (nothing written when it cannot be read to its end); otherwise one per statement.
        """
        from ibkr_tasks.ledger.flex import book_statement

        return book_statement(
            self,
            source,
            run_id,
            one_transaction=one_transaction,
            source_name=source_name,
            date_format=date_format,
            batch_size=batch_size,
        )

    def cash_transactions(
        self, account_id: str, start: date | None = None, end: date | None = None
    ) -> list[CashTransactionRow]:
        """The account's booked cash transactions dated in ``[start, end]``, oldest first."""
        query = select(CashTransactionRow).where(
            CashTransactionRow.account_id == validate_account_id(account_id)
        )
        if start is not None:
            query = query.where(CashTransactionRow.date >= start)
        if end is not None:
            query = query.where(CashTransactionRow.date <= end)
        with self.session() as session:
            return list(
                session.scalars(query.order_by(CashTransactionRow.date, CashTransactionRow.transaction_key))
            )

    def statement_positions(self, account_id: str, report_date: date) -> list[StatementPositionRow]:
        """What the account's statement of ``report_date`` said it held, by conid."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(StatementPositionRow)
                    .where(
                        StatementPositionRow.account_id == validate_account_id(account_id),
                        StatementPositionRow.report_date == report_date,
                    )
                    .order_by(StatementPositionRow.conid)
                )
            )

    def positions_at(self, account_id: str, as_of: datetime) -> dict[int, Decimal]:
        """The ledger's quantity per conid at ``as_of`` (cancelled and superseded fills left out),
        zeros left out."""
        with self.session() as session:
            positions = ledger_positions(session, validate_account_id(account_id), as_of=as_of)
        return {conid: p.quantity for conid, p in positions.items() if p.quantity != 0}

    # --- accounts and runs ------------------------------------------------------------------

    def upsert_accounts(self, accounts: Iterable[Any]) -> int:
        """Create or update ``accounts`` rows from AccountInfo models, mappings or plain ids.

        Known fields: ``account_id`` (or ``id``), ``currency``/``base_currency``, ``title``/``alias``/
        ``description``. Paper or live follows the account id. Returns the number of accounts.
        """
        now = datetime.now(UTC)
        rows: dict[str, dict[str, Any]] = {}
        for item in accounts:
            get = item.get if isinstance(item, Mapping) else (lambda k, _i=item: getattr(_i, k, None))
            raw_id = item if isinstance(item, str) else (get("account_id") or get("id"))
            if not raw_id:
                raise LedgerError(f"cannot tell the account id of {item!r}")
            account_id = validate_account_id(str(raw_id))
            if isinstance(item, str):
                currency = description = None
            else:
                currency = get("base_currency") or get("currency")
                description = get("description") or get("title") or get("alias")
            rows[account_id] = {
                "account_id": account_id,
                "is_paper": is_paper_account(account_id),
                "base_currency": currency,
                "description": description,
                "created_at": now,
            }
        if not rows:
            return 0
        with self.write() as session:
            stmt = _insert_for(session)(table(Account))
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[Account.account_id],
                    set_={
                        "base_currency": func.coalesce(stmt.excluded.base_currency, Account.base_currency),
                        "description": func.coalesce(stmt.excluded.description, Account.description),
                    },
                ),
                [rows[k] for k in sorted(rows)],
            )
        return len(rows)

    def start_run(
        self,
        account_id: str,
        run_id: str,
        flow_run_id: str | None = None,
        *,
        ended_flow_runs: Collection[str] = (),
    ) -> list[str]:
        """Record that ``run_id`` started for ``account_id`` (status ``running``).

        Starting the same run again (a retry) sets it back to ``running`` and keeps its start time.
        In the same transaction, the account's other ``running`` runs that can no longer be running
        are closed as ``abandoned`` (see :meth:`abandon_runs`); returns their run ids.
        """
        account_id = validate_account_id(account_id)
        now = datetime.now(UTC)
        with self.write(account_id) as session:
            ensure_account(session, account_id, now)
            abandoned = self._abandon(session, account_id, run_id, ended_flow_runs, now)
            stmt = _insert_for(session)(ReconciliationRunRow).values(
                account_id=account_id,
                run_id=run_id,
                flow_run_id=None if flow_run_id is None else str(flow_run_id),
                started_at=now,
                status=RunStatus.RUNNING,
                **dict.fromkeys(RUN_COUNTS, 0),
            )
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ReconciliationRunRow.account_id, ReconciliationRunRow.run_id],
                    set_={
                        "status": RunStatus.RUNNING,
                        "finished_at": None,
                        "error": None,
                        "flow_run_id": func.coalesce(
                            stmt.excluded.flow_run_id, ReconciliationRunRow.flow_run_id
                        ),
                    },
                )
            )
        return abandoned

    def running_runs(self, account_id: str) -> list[ReconciliationRunRow]:
        """The account's runs still recorded ``running``, oldest first (their ``flow_run_id`` lets the
        caller ask Prefect which of them have ended)."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(ReconciliationRunRow)
                    .where(
                        ReconciliationRunRow.account_id == validate_account_id(account_id),
                        ReconciliationRunRow.status == RunStatus.RUNNING,
                    )
                    .order_by(ReconciliationRunRow.started_at)
                )
            )

    def abandon_runs(
        self, account_id: str, *, keep: str | None = None, ended_flow_runs: Collection[str] = ()
    ) -> list[str]:
        """Close the account's ``running`` runs that can no longer be running as ``abandoned``.

        A run can no longer be running when its Prefect flow run has ended (its id is in
        ``ended_flow_runs``: the caller asks Prefect, the ledger does not), or when it started longer
        than ``run_max_age`` ago. ``keep`` (the caller's own run) is never closed. An abandoned run's
        positions snapshot stops counting as a reconciliation: it is not the newest snapshot
        (:meth:`latest_snapshot_at`) and no longer opens the books (the opening moves to the earliest
        snapshot of a run that was not abandoned, or to the account's next snapshot). Returns the
        run ids closed.
        """
        account_id = validate_account_id(account_id)
        with self.write(account_id) as session:
            return self._abandon(session, account_id, keep, ended_flow_runs, datetime.now(UTC))

    def _abandon(
        self,
        session: Session,
        account_id: str,
        keep: str | None,
        ended_flow_runs: Collection[str],
        now: datetime,
    ) -> list[str]:
        ended = {str(f) for f in ended_flow_runs}
        cutoff = now - self.run_max_age
        stale: dict[str, str] = {}
        for row in session.scalars(
            select(ReconciliationRunRow).where(
                ReconciliationRunRow.account_id == account_id,
                ReconciliationRunRow.status == RunStatus.RUNNING,
            )
        ):
            if row.run_id == keep:
                continue
            if row.flow_run_id is not None and row.flow_run_id in ended:
                stale[row.run_id] = f"its flow run {row.flow_run_id} is no longer running"
            elif row.started_at < cutoff:
                stale[row.run_id] = (
                    f"started {row.started_at.isoformat()}, older than {_hours(self.run_max_age)}"
                )
        if not stale:
            return []
        by = f" by run {keep}" if keep else ""
        for run_id, reason in sorted(stale.items()):
            session.execute(
                update(ReconciliationRunRow)
                .where(
                    ReconciliationRunRow.account_id == account_id,
                    ReconciliationRunRow.run_id == run_id,
                    ReconciliationRunRow.status == RunStatus.RUNNING,
                )
                .values(status=RunStatus.ABANDONED, finished_at=now, error=f"abandoned{by}: {reason}")
                .execution_options(synchronize_session=False)
            )
        opening_run = session.scalar(select(Account.opening_run_id).where(Account.account_id == account_id))
        if opening_run in stale:
            earliest = session.execute(
                select(PositionSnapshotRow.taken_at, PositionSnapshotRow.run_id)
                .where(PositionSnapshotRow.account_id == account_id, _not_abandoned())
                .order_by(PositionSnapshotRow.taken_at)
                .limit(1)
            ).first()
            session.execute(
                update(Account)
                .where(Account.account_id == account_id)
                .values(
                    opening_snapshot_at=None if earliest is None else earliest.taken_at,
                    opening_run_id=None if earliest is None else earliest.run_id,
                )
            )
        logger.warning(
            "%s: closed %d run(s) that can no longer be running as abandoned: %s",
            account_id,
            len(stale),
            "; ".join(f"{r} ({why})" for r, why in sorted(stale.items())),
        )
        return sorted(stale)

    def finish_run(
        self,
        account_id: str,
        run_id: str,
        status: RunStatus | str,
        counts: Mapping[str, int] | RunCounts | ReconcileResult | None = None,
        error: str | None = None,
    ) -> None:
        """Record the end of ``run_id`` for ``account_id`` with its status and counts.

        ``counts`` maps ``reconciliation_runs`` count columns (:data:`~ibkr_tasks.models.runs.RUN_COUNTS`)
        to values; a :class:`~ibkr_tasks.models.runs.RunCounts` (an IngestResult, a report's outcome)
        or a ReconcileResult is accepted as is. Columns not given keep their value. A ``succeeded``
        run sets ``accounts.last_reconciled_at``.
        """
        account_id = validate_account_id(account_id)
        try:
            status = RunStatus(status)
        except ValueError:
            raise ValueError(f"run status must be one of {', '.join(RunStatus)}, not {status!r}") from None
        if counts is not None and not isinstance(counts, Mapping):
            counts = counts.counts()
        values: dict[str, Any] = dict(counts or {})
        unknown = set(values) - set(RUN_COUNTS)
        if unknown:
            raise ValueError(f"unknown run counts {sorted(unknown)}; known: {', '.join(RUN_COUNTS)}")
        now = datetime.now(UTC)
        with self.write(account_id) as session:
            outcome = session.execute(
                update(ReconciliationRunRow)
                .where(ReconciliationRunRow.account_id == account_id, ReconciliationRunRow.run_id == run_id)
                .values(status=status, finished_at=now, error=error, **values)
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(outcome):
                raise LedgerError(
                    f"run {run_id!r} of account {account_id} was never started: call start_run first"
                )
            if status == RunStatus.SUCCEEDED:
                session.execute(
                    update(Account).where(Account.account_id == account_id).values(last_reconciled_at=now)
                )

    def get_run(self, account_id: str, run_id: str) -> ReconciliationRunRow | None:
        """The ``reconciliation_runs`` row of ``run_id`` for ``account_id``."""
        with self.session() as session:
            return session.get(ReconciliationRunRow, (validate_account_id(account_id), run_id))

    # --- read helpers -----------------------------------------------------------------------

    def fills_for(
        self,
        account_id: str,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        *,
        include_superseded: bool = False,
    ) -> list[FillRow]:
        """Fills of ``account_id`` traded in ``[start, end)`` (dates mean midnight UTC), oldest first.

        Superseded (corrected) revisions are left out unless ``include_superseded``.
        """
        account_id = validate_account_id(account_id)
        query = select(FillRow).where(FillRow.account_id == account_id)
        if start is not None:
            query = query.where(FillRow.trade_time >= _as_utc(start))
        if end is not None:
            query = query.where(FillRow.trade_time < _as_utc(end))
        if not include_superseded:
            query = query.where(FillRow.superseded.is_(False))
        with self.session() as session:
            return list(session.scalars(query.order_by(FillRow.trade_time, FillRow.execution_id)))

    def last_reconciled_at(self, account_id: str) -> datetime | None:
        """When the account's last successful reconciliation ended (None: never, or unknown account)."""
        with self.session() as session:
            return session.scalar(
                select(Account.last_reconciled_at).where(
                    Account.account_id == validate_account_id(account_id)
                )
            )

    def latest_snapshot_at(self, account_id: str) -> datetime | None:
        """When the newest broker positions snapshot of ``account_id`` was filed (None: never).

        Snapshots of abandoned runs do not count: those runs never reported their reconciliation.
        """
        with self.session() as session:
            return session.scalar(
                select(func.max(PositionSnapshotRow.taken_at)).where(
                    PositionSnapshotRow.account_id == validate_account_id(account_id), _not_abandoned()
                )
            )

    def current_positions(self, account_id: str) -> list[LedgerPosition]:
        """The ledger's positions of ``account_id`` (opening snapshot + current fills), zeros left out."""
        with self.session() as session:
            positions = ledger_positions(session, validate_account_id(account_id))
        return [p for p in positions.values() if p.quantity != 0]

    def open_breaks(self, account_id: str | None = None) -> list[BreakRow]:
        """Breaks still open (of one account, or of all), oldest first."""
        query = select(BreakRow).where(BreakRow.status == BreakStatus.OPEN)
        if account_id is not None:
            query = query.where(BreakRow.account_id == validate_account_id(account_id))
        with self.session() as session:
            return list(session.scalars(query.order_by(BreakRow.detected_at, BreakRow.id)))

    def resolve_break(self, break_id: int, run_id: str | None = None) -> None:
        """Mark a break resolved by hand (e.g. after a commission change was accepted)."""
        with self.write() as session:
            session.execute(
                update(BreakRow)
                .where(BreakRow.id == break_id)
                .values(status=BreakStatus.RESOLVED, resolved_at=datetime.now(UTC), resolved_run=run_id)
                .execution_options(synchronize_session=False)
            )

    def commission_totals(self, account_id: str) -> dict[str | None, Decimal]:
        """Known commissions of the current (not superseded) fills, summed per currency.

        Pending commissions (NULL) are not in the totals; ``pending_commissions`` counts them.
        The key is None for commissions whose currency IBKR did not say.
        """
        totals: dict[str | None, Decimal] = {}
        query = (
            select(CommissionRow.currency, CommissionRow.amount)
            .join(
                FillRow,
                and_(
                    FillRow.account_id == CommissionRow.account_id,
                    FillRow.execution_id == CommissionRow.execution_id,
                ),
            )
            .where(
                CommissionRow.account_id == validate_account_id(account_id),
                FillRow.superseded.is_(False),
                CommissionRow.amount.is_not(None),
            )
        )
        with self.session() as session:
            for currency, amount in session.execute(query.execution_options(yield_per=5000)):
                if amount is not None:
                    totals[currency] = totals.get(currency, Decimal(0)) + amount
        return totals

    def pending_commissions(self, account_id: str) -> int:
        """How many current fills still wait for their commission."""
        with self.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(CommissionRow)
                    .join(
                        FillRow,
                        and_(
                            FillRow.account_id == CommissionRow.account_id,
                            FillRow.execution_id == CommissionRow.execution_id,
                        ),
                    )
                    .where(
                        CommissionRow.account_id == validate_account_id(account_id),
                        FillRow.superseded.is_(False),
                        CommissionRow.status == CommissionStatus.PENDING,
                    )
                )
                or 0
            )

    # --- market data ------------------------------------------------------------------------

    def store_quotes(self, snapshots: Iterable[Snapshot], run_id: str | None = None) -> int:
        """Append market-data snapshots to ``quotes`` (one statement); return how many were stored.

        Snapshots without any field value yet (IBKR's answer to the first, "pre-flight" request)
        are skipped.
        """
        now = datetime.now(UTC)
        rows = []
        for snap in snapshots:
            if not getattr(snap, "has_data", True):
                continue
            row = {name: getattr(snap, name, None) for name in _QUOTE_FIELDS}
            row.update(
                run_id=run_id,
                received_at=now,
                last_is_prior_close=bool(getattr(snap, "last_is_prior_close", False)),
                halted=bool(getattr(snap, "halted", False)),
                raw=snap.raw,
            )
            rows.append(row)
        if rows:
            with self.write() as session:
                session.execute(_insert_for(session)(table(QuoteRow)), rows)
        return len(rows)

    # --- contracts --------------------------------------------------------------------------

    def known_contracts(
        self, conids: Iterable[int] | None = None, *, max_age: timedelta | None = CONTRACT_MAX_AGE
    ) -> dict[int, ContractInfo]:
        """Contract info stored by earlier runs, by conid: all of it, or that of ``conids``; only what
        was fetched within ``max_age`` (None: any age). A stored answer that no longer parses is left
        out (and so looked up again)."""
        from ibkr_tasks.models import parse_contract_info

        query = select(ContractRow.conid, ContractRow.raw)
        if conids is not None:
            query = query.where(ContractRow.conid.in_(sorted({int(c) for c in conids})))
        if max_age is not None:
            query = query.where(ContractRow.fetched_at >= datetime.now(UTC) - max_age)
        found: dict[int, ContractInfo] = {}
        with self.session() as session:
            for conid, raw in session.execute(query):
                try:
                    found[conid] = parse_contract_info(raw)
                except (TypeError, ValueError) as exc:
                    logger.warning(
                        "stored contract info of conid %s does not parse (%s): looked up again", conid, exc
                    )
        return found

    def store_contracts(self, infos: Iterable[ContractInfo]) -> int:
        """Keep contract info for later runs (one upsert; a conid stored before is replaced).
        Returns how many were stored."""
        now = datetime.now(UTC)
        rows = {
            info.conid: {
                "conid": info.conid,
                "symbol": info.symbol,
                "sec_type": info.sec_type,
                "currency": info.currency,
                "multiplier": info.multiplier,
                "is_event_contract": info.is_event_contract,
                "raw": info.raw,
                "fetched_at": now,
            }
            for info in infos
        }
        if rows:
            with self.write() as session:
                upsert(
                    session,
                    table(ContractRow),
                    [rows[c] for c in sorted(rows)],
                    conflict=("conid",),
                    update=(
                        "symbol",
                        "sec_type",
                        "currency",
                        "multiplier",
                        "is_event_contract",
                        "raw",
                        "fetched_at",
                    ),
                )
        return len(rows)

    # --- orders audit -----------------------------------------------------------------------

    def record_order(
        self, account_id: str, coid: str, request: Any, run_id: str | None = None
    ) -> OrderRecord:
        """Write the intent row for an order BEFORE sending it (see :mod:`ibkr_tasks.ledger.orders`)."""
        account_id = validate_account_id(account_id)
        with self.write(account_id) as session:
            return orders_mod.record_order(session, account_id, coid, request, run_id)

    def update_order(
        self,
        account_id: str,
        coid: str,
        *,
        order_id: str | None = None,
        status: OrderStatus | str | None = None,
        prompts: Iterable[Any] | None = None,
        error: str | None = None,
    ) -> OrderRecord:
        """Record the broker order id, status, prompts seen (appended) and error of an order.

        An IBKR status word (``Filled``) is stored in this project's vocabulary (``filled``), the
        word itself in ``orders.ibkr_status`` (see :func:`ibkr_tasks.models.statuses.order_status`)."""
        account_id = validate_account_id(account_id)
        with self.write(account_id) as session:
            return orders_mod.update_order(
                session, account_id, coid, order_id=order_id, status=status, prompts=prompts, error=error
            )

    def find_order(self, account_id: str, coid: str) -> OrderRecord | None:
        """The audit row of an order by its cOID, or None."""
        with self.session() as session:
            return orders_mod.find_order(session, validate_account_id(account_id), coid)

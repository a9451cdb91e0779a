"""Ledger positions from fills, broker snapshots, and position breaks.

The ledger position of an (account, conid) is the opening position (from the FIRST broker snapshot
the ledger saw for that account, recorded in ``accounts.opening_snapshot_at``; when the run that
filed it is abandoned, the earliest snapshot of a run that was not, else the next one) plus the signed sum
of the current (not superseded) fills traded after that snapshot: ``+quantity`` for B, ``-quantity``
for S, X (option expiry) and N (ForecastEx netting), as ``Fill.signed_quantity`` defines. A fill
traded exactly at the opening snapshot's time counts as already in the opening position.
Before any snapshot, the opening is empty and every current fill counts. Fills a statement cancelled
(``fills.cancelled``) never count. A position as of a moment before the opening snapshot (an older
statement's date) is the opening minus the fills traded between that moment and the opening.

Quantities are summed in Python with Decimal (one streamed query), so SQLite and PostgreSQL give
exactly the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ibkr_tasks.errors import ForeignAccountRows, LedgerError
from ibkr_tasks.ledger.ingest import _insert_for, ensure_account
from ibkr_tasks.ledger.jsonable import to_jsonable
from ibkr_tasks.ledger.locks import lock_account
from ibkr_tasks.ledger.schema import Account, BreakRow, FillRow, PositionSnapshotRow, table
from ibkr_tasks.ledger.types import ensure_utc
from ibkr_tasks.models.runs import PositionBreak
from ibkr_tasks.models.statuses import BreakStatus

if TYPE_CHECKING:
    from ibkr_tasks.models import Position

POSITION = "position"
_ZERO = Decimal(0)


@dataclass(frozen=True)
class LedgerPosition:
    """What the ledger says an account holds in one instrument."""

    conid: int
    quantity: Decimal
    multiplier: Decimal | None
    symbol: str | None = None
    sec_type: str | None = None


@dataclass
class ReconcileResult:
    """What one reconciliation of positions found for one account."""

    account_id: str
    run_id: str
    taken_at: datetime
    opening: bool = False
    snapshot_rows: int = 0
    breaks: list[PositionBreak] = field(default_factory=list)
    resolved: int = 0

    def counts(self) -> dict[str, int]:
        """The counts in the shape ``Ledger.finish_run`` stores in ``reconciliation_runs``."""
        return {"breaks": len(self.breaks)}


def ledger_positions(
    session: Session, account_id: str, as_of: datetime | None = None
) -> dict[int, LedgerPosition]:
    """Ledger positions per conid (zero positions included) as of ``as_of`` (default: all fills)."""
    opening_at = session.scalar(select(Account.opening_snapshot_at).where(Account.account_id == account_id))
    quantities: dict[int, Decimal] = {}
    info: dict[int, tuple[Decimal | None, str | None, str | None]] = {}
    if opening_at is not None:
        for row in session.execute(
            select(
                PositionSnapshotRow.conid,
                PositionSnapshotRow.position,
                PositionSnapshotRow.multiplier,
                PositionSnapshotRow.symbol,
                PositionSnapshotRow.asset_class,
            ).where(
                PositionSnapshotRow.account_id == account_id,
                PositionSnapshotRow.taken_at == opening_at,
            )
        ):
            quantities[row.conid] = row.position
            info[row.conid] = (row.multiplier, row.symbol, row.asset_class)

    query = select(
        FillRow.conid,
        FillRow.side,
        FillRow.quantity,
        FillRow.multiplier,
        FillRow.symbol,
        FillRow.sec_type,
    ).where(FillRow.account_id == account_id, FillRow.superseded.is_(False), FillRow.cancelled.is_(False))
    as_of = ensure_utc(as_of) if as_of is not None else None
    # Before the opening snapshot (a statement of an earlier day): the opening minus what was traded
    # between that moment and the opening.
    backwards = opening_at is not None and as_of is not None and as_of < opening_at
    if backwards:
        query = query.where(FillRow.trade_time > as_of, FillRow.trade_time <= opening_at)
    else:
        if opening_at is not None:
            query = query.where(FillRow.trade_time > opening_at)
        if as_of is not None:
            query = query.where(FillRow.trade_time <= as_of)
    # Oldest first, so the newest fill's multiplier/symbol wins for the instrument.
    query = query.order_by(FillRow.trade_time)
    for conid, side, quantity, multiplier, symbol, sec_type in session.execute(
        query.execution_options(yield_per=5000)
    ):
        signed = quantity if side == "B" else -quantity
        quantities[conid] = quantities.get(conid, _ZERO) + (-signed if backwards else signed)
        if backwards:
            info.setdefault(conid, (multiplier, symbol, sec_type))
        else:
            info[conid] = (multiplier, symbol, sec_type)
    _cancelled_in_opening(session, account_id, opening_at, as_of, quantities)
    return {
        conid: LedgerPosition(conid, qty, *info.get(conid, (None, None, None)))
        for conid, qty in sorted(quantities.items())
    }


def _cancelled_in_opening(
    session: Session,
    account_id: str,
    opening_at: datetime | None,
    as_of: datetime | None,
    quantities: dict[int, Decimal],
) -> None:
    """A cancelled fill is a trade at its trade time undone at its cancellation time. Both on the same
    side of the opening snapshot, it never counts (the query above leaves it out); traded before the
    opening (which holds it) and cancelled after, it leaves the position when it was cancelled."""
    if opening_at is None:
        return
    for conid, side, quantity, trade_time, cancelled_at in session.execute(
        select(FillRow.conid, FillRow.side, FillRow.quantity, FillRow.trade_time, FillRow.cancelled_at).where(
            FillRow.account_id == account_id,
            FillRow.superseded.is_(False),
            FillRow.cancelled.is_(True),
            FillRow.trade_time <= opening_at,
            FillRow.cancelled_at > opening_at,
        )
    ):
        signed = quantity if side == "B" else -quantity
        if as_of is None or cancelled_at <= as_of:
            quantities[conid] = quantities.get(conid, _ZERO) - signed
        if as_of is not None and as_of < trade_time:
            quantities[conid] = quantities.get(conid, _ZERO) - signed  # before it was even traded


def _snapshot_row(p: Position, account_id: str, run_id: str, taken_at: datetime) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "run_id": run_id,
        "taken_at": taken_at,
        "conid": p.conid,
        "position": p.position,
        "avg_cost": p.avg_cost,
        "avg_price": p.avg_price,
        "mkt_price": p.mkt_price,
        "mkt_value": p.mkt_value,
        "currency": p.currency,
        "multiplier": p.multiplier,
        "asset_class": p.asset_class,
        "symbol": p.symbol,
        "is_event_contract": p.is_event_contract,
        "raw": to_jsonable(p.raw),
    }


def reconcile_positions(
    session: Session,
    account_id: str,
    broker_positions: Iterable[Position],
    run_id: str,
    taken_at: datetime | None = None,
    *,
    not_before: datetime | None = None,
) -> ReconcileResult:
    """Store the broker's snapshot and write a ``position`` break for every conid that differs.

    A conid missing on one side counts as zero there; a zero position is the same as no position.
    The first snapshot of an account defines its opening positions and has no breaks. Open position
    breaks of earlier runs are resolved when the conid now matches, or marked ``superseded`` by this
    run's break when it still differs. Runs in the caller's transaction.

    The snapshot's time: without ``taken_at`` the ledger chooses it under the account's lock (see
    :func:`choose_snapshot_time`): now, but not before ``not_before`` (the newest trade time the
    caller ingested) and after every snapshot of the account filed by another run, so two runs of
    one account never pick the same time. Calling it again for the same run replaces that run's
    snapshot and breaks (a retry). With an explicit ``taken_at``, calling it again for the same run
    and time replaces that snapshot; another run's snapshot at that time raises LedgerError.
    """
    if taken_at is not None and not_before is not None:
        raise ValueError("give the snapshot's time (taken_at) or its lower bound (not_before), not both")
    positions: dict[int, Position] = {}
    foreign: set[str] = set()
    for p in broker_positions:
        if p.account_id != account_id:
            foreign.add(p.account_id)
        positions[p.conid] = p  # a conid repeated across pages: the last report wins
    if foreign:
        raise ForeignAccountRows(
            f"reconcile for account {account_id} was handed positions of {', '.join(sorted(foreign))}: "
            "nothing was written; fetch positions per account"
        )

    lock_account(session, account_id)
    replaced_opening = False
    if taken_at is None:
        taken_at = choose_snapshot_time(session, account_id, run_id, not_before)
        # A retry of this run: its earlier snapshot (and, when that was the opening, the opening)
        # gives way to this one.
        replaced_opening = _drop_own_snapshots(session, account_id, run_id)
    else:
        taken_at = ensure_utc(taken_at)
    ensure_account(session, account_id, taken_at)
    result = ReconcileResult(account_id=account_id, run_id=run_id, taken_at=taken_at)

    # One snapshot per instant: a retry of this run replaces its own, another run's is never touched
    # (were it the opening one, replacing it would silently skip the comparison).
    taken_by = session.scalar(
        select(PositionSnapshotRow.run_id)
        .where(
            PositionSnapshotRow.account_id == account_id,
            PositionSnapshotRow.taken_at == taken_at,
            PositionSnapshotRow.run_id != run_id,
        )
        .limit(1)
    )
    if taken_by is not None:
        raise LedgerError(
            f"{account_id}: run {taken_by!r} already filed a positions snapshot at {taken_at.isoformat()}; "
            f"file run {run_id!r}'s snapshot at a later time (nothing was written)"
        )
    session.execute(
        delete(PositionSnapshotRow).where(
            PositionSnapshotRow.account_id == account_id,
            PositionSnapshotRow.taken_at == taken_at,
            PositionSnapshotRow.run_id == run_id,
        )
    )
    if positions:
        session.execute(
            _insert_for(session)(table(PositionSnapshotRow)),
            [_snapshot_row(p, account_id, run_id, taken_at) for p in positions.values()],
        )
    result.snapshot_rows = len(positions)

    opening_at = session.scalar(select(Account.opening_snapshot_at).where(Account.account_id == account_id))
    if opening_at is None or opening_at == taken_at or replaced_opening:
        session.execute(
            update(Account)
            .where(Account.account_id == account_id)
            .values(opening_snapshot_at=taken_at, opening_run_id=run_id)
        )
        result.opening = True
        # The books open at the broker's word: open position breaks of earlier runs (possible only
        # when an abandoned run's opening gave way to this one) describe nothing any more.
        result.resolved = _write_breaks(session, account_id, run_id, [], taken_at)
        return result

    ledger = ledger_positions(session, account_id, as_of=taken_at)
    broken: list[PositionBreak] = []
    for conid in sorted(set(ledger) | set(positions)):
        expected = ledger[conid].quantity if conid in ledger else _ZERO
        actual = positions[conid].position if conid in positions else _ZERO
        if expected != actual:
            mine = ledger.get(conid)
            theirs = positions.get(conid)
            broken.append(
                PositionBreak(
                    conid=conid,
                    expected=expected,
                    actual=actual,
                    multiplier=theirs.multiplier if theirs else (mine.multiplier if mine else None),
                    symbol=theirs.symbol if theirs else (mine.symbol if mine else None),
                )
            )
    result.breaks = broken
    result.resolved = _write_breaks(session, account_id, run_id, broken, taken_at)
    return result


def choose_snapshot_time(
    session: Session, account_id: str, run_id: str, not_before: datetime | None = None
) -> datetime:
    """The time ``run_id`` files its positions snapshot of ``account_id`` under.

    Call it holding the account's lock (a ledger write transaction), so that no other run can file
    a snapshot between the choice and the insert. It is now, or ``not_before`` when that is later
    (positions are fetched after the trades call, so the snapshot includes every fill that call
    returned, whatever the broker's clock said about them), and always after every snapshot of the
    account filed by another run, abandoned runs included (times of one account are unique).
    """
    candidates = [datetime.now(UTC)]
    if not_before is not None:
        candidates.append(ensure_utc(not_before))
    newest = session.scalar(
        select(func.max(PositionSnapshotRow.taken_at)).where(
            PositionSnapshotRow.account_id == account_id, PositionSnapshotRow.run_id != run_id
        )
    )
    if newest is not None:
        candidates.append(newest + timedelta(microseconds=1))
    return max(candidates)


def _drop_own_snapshots(session: Session, account_id: str, run_id: str) -> bool:
    """Delete ``run_id``'s earlier snapshots of the account; True when one of them was the opening."""
    deleted = _rowcount(
        session.execute(
            delete(PositionSnapshotRow).where(
                PositionSnapshotRow.account_id == account_id, PositionSnapshotRow.run_id == run_id
            )
        )
    )
    if not deleted:
        return False
    opening_run = session.scalar(select(Account.opening_run_id).where(Account.account_id == account_id))
    return opening_run == run_id


def _write_breaks(
    session: Session, account_id: str, run_id: str, broken: list[PositionBreak], now: datetime
) -> int:
    """Replace this run's position breaks with ``broken``; settle earlier runs' open ones."""
    broken_conids = [b.conid for b in broken]
    # This run again (a retry): forget what it wrote before, the new comparison is the truth.
    session.execute(
        delete(BreakRow).where(
            BreakRow.account_id == account_id, BreakRow.run_id == run_id, BreakRow.kind == POSITION
        )
    )
    earlier_open = (
        update(BreakRow)
        .where(
            BreakRow.account_id == account_id,
            BreakRow.kind == POSITION,
            BreakRow.status == BreakStatus.OPEN,
            BreakRow.run_id != run_id,
        )
        .execution_options(synchronize_session=False)
    )
    resolved = _rowcount(
        session.execute(
            earlier_open.where(BreakRow.conid.not_in(broken_conids)).values(
                status=BreakStatus.RESOLVED, resolved_at=now, resolved_run=run_id
            )
        )
    )
    if broken:
        session.execute(
            earlier_open.where(BreakRow.conid.in_(broken_conids)).values(
                status=BreakStatus.SUPERSEDED, resolved_at=now, resolved_run=run_id
            )
        )
        session.execute(
            _insert_for(session)(table(BreakRow)),
            [
                {
                    "account_id": account_id,
                    "run_id": run_id,
                    "kind": POSITION,
                    "subject": f"conid:{b.conid}",
                    "conid": b.conid,
                    "execution_id": None,
                    "expected": b.expected,
                    "actual": b.actual,
                    "delta": b.delta,
                    "currency": None,
                    "detail": to_jsonable({"multiplier": b.multiplier, "symbol": b.symbol}),
                    "status": BreakStatus.OPEN,
                    "detected_at": now,
                }
                for b in broken
            ],
        )
    return resolved


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (``CursorResult.rowcount``)."""
    return int(getattr(result, "rowcount", 0) or 0)

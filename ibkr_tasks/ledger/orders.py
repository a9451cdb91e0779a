"""The orders audit trail: an intent row before a request is sent, then what IBKR answered.

``record_order`` is written BEFORE the order request goes out, so that after a crash or a timeout
the cOID can be looked up (at IBKR and here) instead of the order being sent twice.
``prompts`` accumulates every confirmation prompt seen and how it was answered, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ibkr_tasks.errors import LedgerError
from ibkr_tasks.ledger.ingest import _insert_for, ensure_account
from ibkr_tasks.ledger.jsonable import dumps, to_jsonable
from ibkr_tasks.ledger.schema import OrderRow
from ibkr_tasks.models.statuses import OrderStatus, order_status

INTENT = OrderStatus.INTENT


@dataclass(frozen=True)
class OrderRecord:
    """One row of ``orders``, detached from the database."""

    account_id: str
    coid: str
    order_id: str | None
    run_id: str | None
    request: Any
    prompts: list[Any]
    status: OrderStatus
    error: str | None
    created_at: datetime
    updated_at: datetime
    ibkr_status: str | None = None
    """IBKR's own word for the status (``PreSubmitted``, ``Filled``, ...) when IBKR said it."""

    @classmethod
    def from_row(cls, row: OrderRow) -> OrderRecord:
        return cls(
            account_id=row.account_id,
            coid=row.coid,
            order_id=row.order_id,
            run_id=row.run_id,
            request=row.request,
            prompts=list(row.prompts or []),
            status=OrderStatus(row.status),
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            ibkr_status=row.ibkr_status,
        )


def find_order(session: Session, account_id: str, coid: str) -> OrderRecord | None:
    """The audit row of ``coid`` in ``account_id``, or None."""
    row = session.scalar(select(OrderRow).where(OrderRow.account_id == account_id, OrderRow.coid == coid))
    return OrderRecord.from_row(row) if row is not None else None


def record_order(
    session: Session, account_id: str, coid: str, request: Any, run_id: str | None = None
) -> OrderRecord:
    """Write the intent to place ``request`` under ``coid`` (status ``intent``) and return the row.

    Recording the same cOID with the same request again returns the existing row (a retried task);
    the same cOID with a different request raises LedgerError, because IBKR would treat both as one
    order.
    """
    now = datetime.now(UTC)
    body = to_jsonable(request)
    ensure_account(session, account_id, now)
    session.execute(
        _insert_for(session)(OrderRow)
        .values(
            account_id=account_id,
            coid=coid,
            order_id=None,
            run_id=run_id,
            request=body,
            prompts=[],
            status=INTENT,
            error=None,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[OrderRow.account_id, OrderRow.coid])
    )
    record = find_order(session, account_id, coid)
    assert record is not None  # just inserted or already there
    if dumps(record.request) != dumps(body):
        raise LedgerError(
            f"cOID {coid!r} is already recorded for account {account_id} with a different request; "
            "use a new cOID for a different order (IBKR rejects or merges a reused cOID)"
        )
    return record


def update_order(
    session: Session,
    account_id: str,
    coid: str,
    *,
    order_id: str | None = None,
    status: OrderStatus | str | None = None,
    prompts: Iterable[Any] | None = None,
    error: str | None = None,
) -> OrderRecord:
    """Record what happened to the order: broker order id, status, prompts seen (appended), error.

    ``status`` is this project's word (:class:`~ibkr_tasks.models.statuses.OrderStatus`) or IBKR's
    (``PreSubmitted``, ``Filled``, ...): IBKR's is stored translated, and as said in ``ibkr_status``.
    """
    row = session.scalar(
        select(OrderRow).where(OrderRow.account_id == account_id, OrderRow.coid == coid).with_for_update()
    )
    if row is None:
        raise LedgerError(
            f"no order with cOID {coid!r} recorded for account {account_id}: call record_order before sending"
        )
    if order_id is not None:
        row.order_id = str(order_id)
    if status is not None:
        ours, ibkr_word = order_status(status)
        row.status = ours
        if ibkr_word is not None:
            row.ibkr_status = ibkr_word
    if prompts is not None:
        row.prompts = [*(row.prompts or []), *(to_jsonable(p) for p in prompts)]
    if error is not None:
        row.error = error
    row.updated_at = datetime.now(UTC)
    session.flush()
    return OrderRecord.from_row(row)

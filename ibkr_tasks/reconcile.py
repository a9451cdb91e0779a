"""The nightly run's self-check on the trades scope: fills that one answer may not have covered.

IBKR answers ``/iserver/account/trades`` for the selected account (an FA master: its sub-accounts).
When one request without ``accountId`` served several accounts (trades scope ``login``, or ``auto`` on
an FA login) and held no row at all for one of them, that can mean the account did not trade, or that
the answer did not cover it. The positions tell them apart: if the account's positions moved since
the ledger's latest snapshot, it traded, and its trades are asked for by ``accountId`` before the
reconciliation reports the difference as a break.

The flow composes it (flows/nightly_reconciliation.py)::

    reason = fills_to_recheck(ledger, account_id, fills, positions)
    if reason:
        fills = (await collect_fills(client, [account_id], days=days, scope="account"))[account_id]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from sqlalchemy import select

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.schema import PositionSnapshotRow
from ibkr_tasks.models import Fill, ParseResult, Position

__all__ = ["fills_to_recheck", "latest_snapshot_positions", "moved_positions"]


def latest_snapshot_positions(ledger: Ledger, account_id: str) -> dict[int, Decimal] | None:
    """``{conid: position}`` of the newest broker snapshot the ledger filed for the account (zeros
    left out); None when it has none (an abandoned run's snapshot does not count)."""
    acct = validate_account_id(account_id)
    taken_at = ledger.latest_snapshot_at(acct)
    if taken_at is None:
        return None
    with ledger.session() as session:
        rows = session.execute(
            select(PositionSnapshotRow.conid, PositionSnapshotRow.position).where(
                PositionSnapshotRow.account_id == acct, PositionSnapshotRow.taken_at == taken_at
            )
        )
        return {conid: position for conid, position in rows if position != 0}


def moved_positions(before: Mapping[int, Decimal], positions: Iterable[Position]) -> list[int]:
    """The conids whose position differs between ``before`` and ``positions`` (sorted)."""
    now = {p.conid: p.position for p in positions if p.position != 0}
    return sorted(
        c for c in before.keys() | now.keys() if before.get(c, Decimal(0)) != now.get(c, Decimal(0))
    )


def fills_to_recheck(
    ledger: Ledger,
    account_id: str,
    fills: Mapping[str, ParseResult[Fill]],
    positions: Iterable[Position],
) -> str | None:
    """Why the account's trades must be asked for by ``accountId`` before its positions are
    reconciled, or None when the fills at hand can be trusted.

    ``fills`` is the client's answer (:class:`ibkr_tasks.client.api.ScopedFills`): only an account
    it served through a request without ``accountId`` (``login_wide``), with no row at all, whose
    positions moved since the ledger's latest snapshot, needs it. Without an earlier snapshot nothing
    can have moved: the first snapshot is the account's opening position.
    """
    acct = validate_account_id(account_id)
    if acct not in getattr(fills, "login_wide", ()):
        return None
    batch = fills.get(acct)
    if batch is not None and (batch.items or batch.rejected):
        return None
    before = latest_snapshot_positions(ledger, acct)
    if before is None:
        return None
    moved = moved_positions(before, positions)
    if not moved:
        return None
    shown = ", ".join(str(c) for c in moved[:5]) + (" ..." if len(moved) > 5 else "")
    return (
        f"the trades answer for the whole login held no row for {acct}, but {len(moved)} of its "
        f"positions moved since the last snapshot (conid {shown})"
    )

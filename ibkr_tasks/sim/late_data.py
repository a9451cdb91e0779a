"""Late data: commissions that arrive or change after a fill was first shown, and corrections.

A pending execution moves one stage on at the trades response *after* one that showed it (first its
commission stages, then its correction is published and the original marked superseded), so the
ground truth always equals what the last trades response showed. ``/sim/advance`` and the end-of-day
statement finalise everything traded before a given time at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ibkr_tasks.sim import trade_rows
from ibkr_tasks.sim.entities import Execution
from ibkr_tasks.sim.journal import Journal


def expose(journal: Journal, shown: Iterable[Execution]) -> None:
    """Rows an earlier trades response showed move one stage on: commissions, then corrections."""
    for ex in shown:
        if ex in journal.pending:
            _step(journal, ex)


def finalise_all(journal: Journal, before: datetime | None = None) -> None:
    """Everything pending (traded before ``before``, if given) reaches its final state."""
    for ex in list(journal.pending):
        if before is not None and ex.trade_time >= before:
            continue
        ex.stage = len(ex.commission_stages) - 1
        trade_rows.encode_row(ex)
        trade_rows.touch(journal.accounts[ex.account_id], ex.trade_time)
        _release_correction(journal, ex)
        journal.pending.pop(ex, None)
        journal.shown.discard(ex)


def _step(journal: Journal, ex: Execution) -> None:
    if ex.stage < len(ex.commission_stages) - 1:
        ex.stage += 1
        trade_rows.encode_row(ex)
        trade_rows.touch(journal.accounts[ex.account_id], ex.trade_time)
    else:
        _release_correction(journal, ex)
    if not ex.pending:
        journal.pending.pop(ex, None)
        journal.shown.discard(ex)


def _release_correction(journal: Journal, ex: Execution) -> None:
    fix = ex.correction
    if fix is None:
        return
    ex.correction = None
    ex.superseded = True
    acct = journal.accounts[ex.account_id]
    journal.publish(acct, fix)
    acct.reprice(ex, fix.price)

"""Tasks that write the ledger. Each is one transaction for one account (set-based inside)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from ibkr_tasks.formatting import money, number, signed
from ibkr_tasks.ledger import IngestResult, Ledger, ReconcileResult
from ibkr_tasks.models import Fill, Position, RejectedRow


@task(name="ingest-fills", task_run_name="ingest-fills-{account_id}", cache_policy=NO_CACHE, retries=1)
async def ingest_fills(
    ledger: Ledger,
    account_id: str,
    fills: Sequence[Fill],
    run_id: str,
    rejected: Sequence[RejectedRow] = (),
    *,
    as_state: bool = False,
) -> IngestResult | State[IngestResult]:
    """Idempotent upsert of one account's fills and commissions; unparseable rows to quarantine.

    Safe to retry: the ingest is idempotent and runs in one transaction. With ``as_state`` the task
    returns its Completed state, whose message (shown on the task run in the UI) names the changed
    commissions; ``await state.aresult()`` gives the result.
    """
    result = await asyncio.to_thread(ledger.ingest, account_id, list(fills), run_id, rejected=list(rejected))
    get_run_logger().info("%s: %s", account_id, result.describe())
    if not as_state:
        return result
    changed = result.commission_breaks
    if not changed:
        return Completed(message="no commission changes", data=result)
    listed = "; ".join(
        f"{b.execution_id} {money(b.expected, missing='pending')} -> {money(b.actual, b.currency)}"
        for b in changed[:5]
    )
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    return Completed(message=f"{len(changed)} commission change(s): {listed}{more}", data=result)


@task(
    name="reconcile-positions",
    task_run_name="reconcile-positions-{account_id}",
    cache_policy=NO_CACHE,
    retries=1,
)
async def reconcile_positions(
    ledger: Ledger,
    account_id: str,
    positions: Sequence[Position],
    run_id: str,
    taken_at: datetime | None = None,
    not_before: datetime | None = None,
    *,
    as_state: bool = False,
) -> ReconcileResult | State[ReconcileResult]:
    """Store the broker's positions and write a break for every conid the ledger disagrees on.

    Without ``taken_at`` the ledger chooses the snapshot's time under the account's lock, not before
    ``not_before`` (the newest trade time of the fills the run ingested). With ``as_state`` the task
    returns its Completed state, whose message (shown on the task run in the UI) names the breaks;
    ``await state.aresult()`` gives the result.
    """
    result = await asyncio.to_thread(
        ledger.reconcile, account_id, list(positions), run_id, taken_at=taken_at, not_before=not_before
    )
    n = len(result.breaks)
    log = get_run_logger()
    listed = "; ".join(
        f"{b.symbol or 'conid'} ({b.conid}) ledger {number(b.expected)}, broker {number(b.actual)}, "
        f"{signed(b.delta)}"
        for b in result.breaks[:5]
    ) + (f" and {n - 5} more" if n > 5 else "")
    resolved = f"; {result.resolved} earlier break(s) resolved" if result.resolved else ""
    if n:
        log.warning("%s: %d position break(s): %s%s", account_id, n, listed, resolved)
        message = f"{n} position break(s): {listed}{resolved}"
    else:
        log.info("%s: positions agree with the ledger%s", account_id, resolved)
        message = f"positions agree with the ledger{resolved}"
    return Completed(message=message, data=result) if as_state else result


@task(name="quarantine-rows", cache_policy=NO_CACHE, retries=1)
async def quarantine_rows(ledger: Ledger, rejected: Sequence[RejectedRow], run_id: str) -> int:
    """Keep rows that belong to no account (no parsable account id) in the ledger's quarantine."""
    n = await asyncio.to_thread(ledger.quarantine, list(rejected), run_id)
    if n:
        get_run_logger().warning("%d row(s) of no recognisable account quarantined", n)
    return n

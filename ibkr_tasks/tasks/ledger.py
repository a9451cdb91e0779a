"""Tasks that write the ledger. Each is one transaction for one account (set-based inside)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from ibkr_tasks.ledger import IngestResult, Ledger, ReconcileResult
from ibkr_tasks.models import Fill, Position, RejectedRow


@task(name="ingest-fills", task_run_name="ingest-fills-{account_id}", cache_policy=NO_CACHE, retries=1)
async def ingest_fills(
    ledger: Ledger,
    account_id: str,
    fills: Sequence[Fill],
    run_id: str,
    rejected: Sequence[RejectedRow] = (),
) -> IngestResult:
    """Idempotent upsert of one account's fills and commissions; unparseable rows to quarantine.

    Safe to retry: the ingest is idempotent and runs in one transaction.
    """
    result = await asyncio.to_thread(ledger.ingest, account_id, list(fills), run_id, rejected=list(rejected))
    get_run_logger().info(
        "%s: fills new=%d updated=%d superseded=%d, commissions finalised=%d changed=%d, quarantined=%d",
        account_id,
        result.fills_new,
        result.fills_updated,
        result.fills_superseded,
        result.commissions_finalised,
        result.commissions_changed,
        result.quarantined,
    )
    return result


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
) -> ReconcileResult:
    """Store the broker's positions and write a break for every conid the ledger disagrees on.

    Without ``taken_at`` the ledger chooses the snapshot's time under the account's lock, not before
    ``not_before`` (the newest trade time of the fills the run ingested).
    """
    result = await asyncio.to_thread(
        ledger.reconcile, account_id, list(positions), run_id, taken_at=taken_at, not_before=not_before
    )
    n = len(result.breaks)
    log = get_run_logger()
    if n:
        log.warning("%s: %d position break(s)", account_id, n)
    else:
        log.info("%s: positions agree with the ledger", account_id)
    return result


@task(name="quarantine-rows", cache_policy=NO_CACHE, retries=1)
async def quarantine_rows(ledger: Ledger, rejected: Sequence[RejectedRow], run_id: str) -> int:
    """Keep rows that belong to no account (no parsable account id) in the ledger's quarantine."""
    n = await asyncio.to_thread(ledger.quarantine, list(rejected), run_id)
    if n:
        get_run_logger().warning("%d row(s) of no recognisable account quarantined", n)
    return n

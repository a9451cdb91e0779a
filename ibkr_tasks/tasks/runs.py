"""Starting an account's run in the ledger, closing the runs that can no longer be running.

The ledger knows nothing of Prefect: this module asks Prefect which flow runs of the account's
``running`` ledger runs have ended, and hands the ledger their ids.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from ibkr_tasks.ledger import Ledger


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


async def ended_flow_runs(flow_run_ids: Iterable[str]) -> set[str]:
    """The ids among ``flow_run_ids`` whose Prefect flow run is in a final state.

    Final means Completed, Failed, Cancelled or Crashed: such a flow run is not running and never
    runs again. A flow run Prefect does not know is not reported (it may belong to another server).
    """
    wanted: dict[uuid.UUID, str] = {}
    for text in flow_run_ids:
        try:
            wanted[uuid.UUID(str(text))] = str(text)
        except ValueError:
            continue  # not a Prefect flow run id
    if not wanted:
        return set()
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(wanted))), limit=len(wanted)
        )
    return {wanted[run.id] for run in runs if run.state is not None and run.state.is_final()}


async def start_account_run(
    ledger: Ledger, account_id: str, run_id: str, flow_run_id: str | None = None
) -> list[str]:
    """Record the start of ``run_id`` for ``account_id``; close the account's runs that can no longer
    be running as ``abandoned`` (flow run ended, per Prefect, or older than the ledger's
    ``run_max_age``). Returns the run ids closed, and logs them."""
    log = _logger()
    running = await asyncio.to_thread(ledger.running_runs, account_id)
    others = [r.flow_run_id for r in running if r.run_id != run_id and r.flow_run_id]
    ended: set[str] = set()
    if others:
        try:
            ended = await ended_flow_runs(others)
        except Exception as exc:  # Prefect unreachable: the age limit still closes dead runs
            log.warning(
                "%s: could not ask Prefect about %d earlier run(s) (%s: %s); only the age limit applies",
                account_id,
                len(others),
                type(exc).__name__,
                exc,
            )
    abandoned = await asyncio.to_thread(
        ledger.start_run, account_id, run_id, flow_run_id=flow_run_id, ended_flow_runs=ended
    )
    if abandoned:
        log.warning(
            "%s: %d earlier run(s) can no longer be running and were closed as abandoned: %s",
            account_id,
            len(abandoned),
            ", ".join(abandoned),
        )
    return abandoned

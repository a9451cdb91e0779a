"""Prefect tasks over the IBKR client and the ledger.

One task is one unit a user wants to see, retry or inspect in the UI: a session refresh, one
account's positions (all pages), one trades call for all accounts, one account's ledger ingest. Never
a task per row or per page.

Tasks take live objects (an :class:`~ibkr_tasks.client.api.IBKRClient`, a
:class:`~ibkr_tasks.ledger.Ledger`) and are declared with ``cache_policy=NO_CACHE``: such inputs
cannot be hashed, and a cached "fetch today's fills" or "place this order" would be wrong anyway.
Reads retry on transient errors; nothing that changes state at IBKR retries at the task level.
"""

from ibkr_tasks.tasks.ibkr import (
    cancel_all,
    collect_fills,
    fetch_positions,
    list_accounts,
    place_order,
    refresh_session,
    snapshot,
)
from ibkr_tasks.tasks.ledger import ingest_fills, quarantine_rows, reconcile_positions

__all__ = [
    "cancel_all",
    "collect_fills",
    "fetch_positions",
    "ingest_fills",
    "list_accounts",
    "place_order",
    "quarantine_rows",
    "reconcile_positions",
    "refresh_session",
    "snapshot",
]

"""The SQL ledger: the book of record per account that reconciliation writes and users query.

Tables (names are part of the product): ``accounts``, ``fills``, ``commissions``,
``commission_history``, ``fill_history``, ``position_snapshots``, ``reconciliation_runs``, ``breaks``, ``orders``,
``quarantine``, ``quotes`` (market data) and ``contracts`` (contract info kept across runs). See ``docs/ledger.md``.

    from ibkr_tasks.ledger import Ledger
    ledger = Ledger()                      # IBKR_LEDGER_URL or sqlite:///ibkr_ledger.db
    result = ledger.ingest("DU1234567", fills, run_id="2026-11-25")
    ledger.reconcile("DU1234567", positions, run_id="2026-11-25")
"""

from ibkr_tasks.ledger.engine import DEFAULT_URL, create_ledger_engine, resolve_url
from ibkr_tasks.ledger.ingest import IngestResult, ingest_fills, quarantine_rows
from ibkr_tasks.ledger.ledger import Ledger
from ibkr_tasks.ledger.orders import OrderRecord, find_order, record_order, update_order
from ibkr_tasks.ledger.positions import LedgerPosition, ReconcileResult, ledger_positions, reconcile_positions
from ibkr_tasks.ledger.schema import (
    Account,
    Base,
    BreakRow,
    CommissionHistoryRow,
    CommissionRow,
    ContractRow,
    FillHistoryRow,
    FillRow,
    OrderRow,
    PositionSnapshotRow,
    QuarantineRow,
    QuoteRow,
    ReconciliationRunRow,
)
from ibkr_tasks.models.runs import RUN_COUNTS, CommissionBreak, PositionBreak, RunCounts

__all__ = [
    "DEFAULT_URL",
    "RUN_COUNTS",
    "Account",
    "Base",
    "BreakRow",
    "CommissionBreak",
    "CommissionHistoryRow",
    "CommissionRow",
    "ContractRow",
    "FillHistoryRow",
    "FillRow",
    "IngestResult",
    "Ledger",
    "LedgerPosition",
    "OrderRecord",
    "OrderRow",
    "PositionBreak",
    "PositionSnapshotRow",
    "QuarantineRow",
    "QuoteRow",
    "ReconcileResult",
    "ReconciliationRunRow",
    "RunCounts",
    "create_ledger_engine",
    "find_order",
    "ingest_fills",
    "ledger_positions",
    "quarantine_rows",
    "reconcile_positions",
    "record_order",
    "resolve_url",
    "update_order",
]

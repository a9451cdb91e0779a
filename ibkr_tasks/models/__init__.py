"""Pydantic models shared by the client and the ledger. Decimal for every amount and quantity.

Parsers never drop a row silently: :func:`parse_fills` and :func:`parse_positions` return a
:class:`ParseResult` whose ``rejected`` list holds every row that could not be parsed, with the reason.
"""

from ibkr_tasks.models.accounts import (
    AccountInfo,
    ContractInfo,
    ContractSearchResult,
    parse_account,
    parse_contract_info,
)
from ibkr_tasks.models.common import ParseResult, RejectedRow
from ibkr_tasks.models.fills import (
    Fill,
    FillsByAccount,
    fill_account_id,
    parse_fill,
    parse_fills,
    split_execution_id,
)
from ibkr_tasks.models.marketdata import DEFAULT_SNAPSHOT_FIELDS, FIELD_IDS, Snapshot, parse_snapshot
from ibkr_tasks.models.orders import (
    CancelResult,
    EventContractPair,
    LiveOrder,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderType,
    PromptRecord,
    Side,
    TimeInForce,
)
from ibkr_tasks.models.positions import Position, parse_position, parse_positions

__all__ = [
    "DEFAULT_SNAPSHOT_FIELDS",
    "FIELD_IDS",
    "AccountInfo",
    "CancelResult",
    "ContractInfo",
    "ContractSearchResult",
    "EventContractPair",
    "Fill",
    "FillsByAccount",
    "LiveOrder",
    "OrderRequest",
    "OrderResult",
    "OrderSide",
    "OrderType",
    "ParseResult",
    "Position",
    "PromptRecord",
    "RejectedRow",
    "Side",
    "Snapshot",
    "TimeInForce",
    "fill_account_id",
    "parse_account",
    "parse_contract_info",
    "parse_fill",
    "parse_fills",
    "parse_position",
    "parse_positions",
    "parse_snapshot",
    "split_execution_id",
]

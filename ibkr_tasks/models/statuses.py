"""Every status vocabulary of this project, one :class:`enum.StrEnum` each.

The ledger's tables enforce them (CHECK constraints listing the values, migration 0008), so a
misspelt status fails where it is written instead of hiding in a query that never matches it.
Members are strings: ``OrderStatus.FILLED == "filled"``, and they are stored as their value.

IBKR has order status words of its own (``PreSubmitted``, ``Filled``, ...). They are translated into
:class:`OrderStatus` where they enter the ledger (:func:`order_status`); the word IBKR used is kept
beside it (``orders.ibkr_status``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BreakStatus",
    "CommissionStatus",
    "FillChange",
    "OrderStatus",
    "OutcomeStatus",
    "RunStatus",
    "order_status",
]


class CommissionStatus(StrEnum):
    """``commissions.status``: ``pending`` while IBKR has not reported the amount (NULL, never 0)."""

    PENDING = "pending"
    FINAL = "final"


class RunStatus(StrEnum):
    """``reconciliation_runs.status``. ``abandoned``: the run can no longer be running (its flow run
    ended, or it is older than the ledger's limit) and never reported its end."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"


class BreakStatus(StrEnum):
    """``breaks.status``: ``resolved`` = matches again, ``superseded`` = a later run's break replaces it."""

    OPEN = "open"
    RESOLVED = "resolved"
    SUPERSEDED = "superseded"


class FillChange(StrEnum):
    """``fill_history.change``: why a stored fill was rewritten.

    ``updated``: IBKR sent different content for the execution. ``rederived``: the same payload row,
    but this version of the parser derives different fields from it (a parser fix).
    """

    UPDATED = "updated"
    REDERIVED = "rederived"


class OrderStatus(StrEnum):
    """``orders.status``: where an order we placed stands, in this project's words."""

    INTENT = "intent"  # written before the request is sent; stays until IBKR answers
    PLANNED = "planned"  # a dry run's order: never sent
    SUBMITTED = "submitted"  # IBKR took it and it is working
    FILLED = "filled"
    CANCEL_REQUESTED = "cancel_requested"  # we asked IBKR to cancel it
    CANCELLED = "cancelled"
    INACTIVE = "inactive"  # IBKR holds it but will not work it (rejected by the exchange, outside hours)
    REJECTED = "rejected"  # IBKR refused the request
    PROMPT_REFUSED = "prompt_refused"  # a confirmation prompt was answered no: never placed
    UNKNOWN = "unknown"  # the request may or may not have reached IBKR
    ERROR = "error"  # placing failed before IBKR could take it


class OutcomeStatus(StrEnum):
    """What one account's reconciliation run came to (reports and events, not a table)."""

    PENDING = "pending"
    COMPLETED = "completed"
    BREAKS = "breaks"
    FAILED = "failed"


# IBKR's order status words (Client Portal ``status``/``order_status``, TWS ``OrderStatus``).
_IBKR_ORDER_STATUS = {
    "inactive": OrderStatus.INACTIVE,
    "pendingsubmit": OrderStatus.SUBMITTED,
    "presubmitted": OrderStatus.SUBMITTED,
    "submitted": OrderStatus.SUBMITTED,
    "apipending": OrderStatus.SUBMITTED,
    "pendingcancel": OrderStatus.CANCEL_REQUESTED,
    "cancelled": OrderStatus.CANCELLED,
    "precancelled": OrderStatus.CANCELLED,
    "apicancelled": OrderStatus.CANCELLED,
    "filled": OrderStatus.FILLED,
    "warnstate": OrderStatus.SUBMITTED,
}


def order_status(word: str) -> tuple[OrderStatus, str | None]:
    """``word`` in this project's vocabulary, and IBKR's own word when it was one of IBKR's.

    ``"PreSubmitted"`` -> ``(SUBMITTED, "PreSubmitted")``; ``"cancel_requested"`` ->
    ``(CANCEL_REQUESTED, None)``. A word neither vocabulary knows is ``UNKNOWN``, with the word kept.
    """
    try:
        return OrderStatus(word), None
    except ValueError:
        pass
    key = word.strip().replace("_", "").replace(" ", "").lower()
    return _IBKR_ORDER_STATUS.get(key, OrderStatus.UNKNOWN), word

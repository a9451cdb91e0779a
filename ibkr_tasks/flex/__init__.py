"""IBKR Flex statements: models, the XML parser and the Flex Web Service client.

The Flex Web Service serves IBKR's own end-of-day Activity statements and Trade Confirmation
statements as XML; see docs/flex.md.
"""

from ibkr_tasks.flex.errors import (
    FlexParseError,
    FlexRangeError,
    FlexServiceError,
    FlexServiceUnavailable,
    FlexTokenError,
)
from ibkr_tasks.flex.models import (
    FlexCancellation,
    FlexCashTransaction,
    FlexExecution,
    FlexOpenPosition,
    FlexResponse,
    FlexStatement,
    FlexStatementKind,
    row_digest,
)

__all__ = [
    "FlexCancellation",
    "FlexCashTransaction",
    "FlexExecution",
    "FlexOpenPosition",
    "FlexParseError",
    "FlexRangeError",
    "FlexResponse",
    "FlexServiceError",
    "FlexServiceUnavailable",
    "FlexStatement",
    "FlexStatementKind",
    "FlexTokenError",
    "row_digest",
]

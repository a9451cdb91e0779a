"""Typed errors raised by ibkr-tasks.

Every error says what went wrong and, where there is one, what to do about it. No error message
ever carries a secret: transport code builds messages from the method, path and a redacted body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IBKRError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(IBKRError):
    """Settings are missing or inconsistent (e.g. no access token, bad TLS options)."""


class TransportError(IBKRError):
    """The request could not be completed (connection error, timeout) after the allowed retries."""


class APIError(IBKRError):
    """IBKR answered with an error status or an error body."""

    def __init__(self, message: str, *, status_code: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.path = path


class NotAuthenticated(APIError):
    """No valid session: the gateway or api.ibkr.com rejected the credentials (HTTP 401)."""


class NoBridge(APIError):
    """The brokerage (iserver) session is not open yet: call /iserver/auth/ssodh/init."""


class CompetingSession(IBKRError):
    """Another login (TWS, mobile, Client Portal) holds the brokerage session for this username."""


class RateLimited(APIError):
    """IBKR answered 429 and the client gave up waiting for the limit to clear."""


class ServerError(APIError):
    """IBKR answered 5xx and the request was not (or could no longer be) retried."""


class PreflightRequired(APIError):
    """IBKR asked for a preflight call first ("Please query /accounts first")."""


class AccountMismatch(IBKRError):
    """A row or a request belongs to another account than the one asked for.

    Raised instead of silently touching or booking another account's data.
    """


class LiveAccountRefused(IBKRError):
    """A state-changing action on a live (non-``DU``) account without explicit permission."""


class OrderError(IBKRError):
    """Base class of order placement problems.

    When placing fails, the client sets ``prompts`` (every question IBKR asked and its answer),
    ``coid`` and ``account_id`` on the error.
    """

    prompts: Sequence[Any] = ()
    coid: str | None = None
    account_id: str | None = None


class OrderRejected(OrderError):
    """IBKR rejected the order (``{"error": ...}`` with HTTP 200, or an HTTP error)."""


class UnknownPrompt(OrderError):
    """IBKR asked a confirmation question that the prompt policy does not allow; the order was not placed."""

    def __init__(self, message: str, *, message_ids: list[str], text: str) -> None:
        super().__init__(message)
        self.message_ids = message_ids
        self.text = text


class OrderStateUnknown(OrderError):
    """The order request may or may not have reached IBKR (timeout after sending).

    Never resend blindly: look the order up by its cOID first.
    """


class ParseError(IBKRError):
    """A payload could not be parsed into a model."""


class LedgerError(IBKRError):
    """Base class of ledger problems."""


class ForeignAccountRows(LedgerError, AccountMismatch):
    """Rows of another account were handed to an account's ingest: the caller filtered wrongly."""


class UnsupportedDatabase(LedgerError, ConfigurationError):
    """The ledger URL names a database (or driver) the ledger does not support; SQLite and PostgreSQL are."""


class RequestFailed(TransportError):
    """A request got no HTTP answer (timeout, connection error) after the allowed retries.

    ``maybe_sent`` is True when the request may have reached IBKR before the failure (e.g. a read
    timeout): for an order, look it up by its cOID before doing anything else; never resend blindly.
    """

    def __init__(self, message: str, *, method: str, path: str, maybe_sent: bool) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.maybe_sent = maybe_sent


class RebalanceRefused(IBKRError):
    """A rebalance plan or its execution was refused by a guard (live account, limits, scope, prices).

    ``reason`` is a short machine-readable code (``live_account``, ``order_notional``,
    ``total_notional``, ``unlisted_conid``, ``event_contract_sell``, ``stale_price``,
    ``missing_price``, ``currency``, ``working_orders``, ``invalid_target``); the message says what
    to change.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

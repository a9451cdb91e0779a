"""Typed errors of the Flex module: a file that is not a Flex response, and Flex Web Service failures.

No message carries the Flex token: service errors are built from IBKR's error code and message only.
"""

from __future__ import annotations

from ibkr_tasks.errors import APIError, IBKRError

__all__ = [
    "FlexParseError",
    "FlexRangeError",
    "FlexServiceError",
    "FlexServiceUnavailable",
    "FlexTokenError",
]


class FlexParseError(IBKRError):
    """The input is not a readable Flex response (not XML, not a ``FlexQueryResponse``, truncated ...).

    ``where`` says where reading stopped (``line 12, column 4`` and/or the element being read);
    ``source`` names the file when the caller gave one. Row-level problems are never raised: they
    become rejected rows and the rest of the statement goes through.
    """

    def __init__(self, message: str, *, where: str | None = None, source: str | None = None) -> None:
        parts = [message]
        if where:
            parts.append(f"at {where}")
        if source:
            parts.append(f"in {source}")
        super().__init__(" ".join(parts))
        self.where = where
        self.source = source
        self.reason = message


class FlexServiceError(APIError):
    """The Flex Web Service answered with an error code that retrying will not fix.

    ``code`` is IBKR's numeric error code (``"1014"``), ``ibkr_message`` its text, ``advice`` what to
    do about it.
    """

    def __init__(
        self, code: str | None, ibkr_message: str | None, advice: str, *, path: str | None = None
    ) -> None:
        label = f"Flex Web Service error {code}" if code else "Flex Web Service error"
        text = f"{label}: {ibkr_message or 'no message'}. {advice}".strip()
        super().__init__(text, path=path)
        self.code = code
        self.ibkr_message = ibkr_message
        self.advice = advice


class FlexTokenError(FlexServiceError):
    """The token was refused (expired 1012, IP restriction 1013, invalid 1015, bad request 1020)."""


class FlexServiceUnavailable(FlexServiceError):
    """A try-again code (1019 generation in progress, 1018 throttled, 1009 busy, ...) persisted past the
    allowed number of polls."""


class FlexRangeError(IBKRError):
    """A requested statement period is invalid (more than 365 days, or the end before the start)."""

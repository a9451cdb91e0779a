"""Client for IBKR's Flex Web Service v3: SendRequest, then GetStatement until the statement is ready.

Flow (IBKR, https://www.ibkrguides.com/clientportal/performanceandstatements/flex3.htm):

1. ``GET {IBKR_FLEX_URL}/SendRequest?t=TOKEN&q=QUERY_ID&v=3`` (optionally ``fd``/``td`` = yyyyMMdd,
   at most 365 days, overriding the query's period) answers a ``FlexStatementResponse`` with a
   ``ReferenceCode`` and the ``Url`` to fetch it from.
2. ``GET {Url}?t=TOKEN&q=REFERENCE_CODE&v=3`` answers the statement (a ``FlexQueryResponse``), or a
   ``FlexStatementResponse`` with an error code: 1019 "generation in progress" and the other
   try-again codes are polled with backoff, 1018 "too many requests" waits longer, the rest raise.

The ``Url`` from step 1 is used as given (IBKR may send another host than the one asked). A
User-Agent is always sent. The token never appears in a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO

import httpx

from ibkr_tasks import __version__
from ibkr_tasks.client.redact import register_secret
from ibkr_tasks.client.settings import FlexSettings
from ibkr_tasks.errors import ConfigurationError, TransportError
from ibkr_tasks.flex.errors import FlexRangeError, FlexServiceError, FlexServiceUnavailable, FlexTokenError

__all__ = [
    "ERROR_CODES",
    "MAX_RANGE_DAYS",
    "RETRY_CODES",
    "THROTTLE_CODES",
    "FlexPolling",
    "FlexReference",
    "FlexWebService",
]

logger = logging.getLogger("ibkr_tasks.flex")

USER_AGENT = f"ibkr-tasks/{__version__} Python/{platform.python_version()}"
MAX_RANGE_DAYS = 365

# IBKR's v3 error codes, with what to do about each.
ERROR_CODES: dict[str, str] = {
    "1001": "Statement could not be generated at this time; try again shortly.",
    "1003": "Statement is not available: check the query's period, or the fd/td override against it.",
    "1004": "Statement is incomplete at this time; try again shortly.",
    "1005": "Settlement data is not ready; try again shortly.",
    "1006": "FIFO P/L data is not ready; try again shortly.",
    "1007": "MTM P/L data is not ready; try again shortly.",
    "1008": "MTM and FIFO P/L data are not ready; try again shortly.",
    "1009": "The server is under heavy load; try again shortly.",
    "1010": "Legacy Flex Queries are no longer supported: convert the query to an Activity Flex Query.",
    "1011": "The service account is inactive: check the Flex Web Service configuration in Client Portal.",
    "1012": "The token has expired: generate a new one (Performance & Reports > Flex Queries > Flex Web "
    "Service Configuration) and update IBKR_FLEX_TOKEN or the credentials block.",
    "1013": "IP restriction: this machine's IP is not allowed for the token; add it or remove the restriction.",
    "1014": "The query is invalid: check IBKR_FLEX_QUERY_ID against the Query ID shown in Flex Queries.",
    "1015": "The token is invalid: copy the current token (a newly generated token replaces the old one).",
    "1016": "The account is invalid for this query.",
    "1017": "The reference code is invalid or expired: request the statement again.",
    "1018": "Too many requests have been made from this token; waiting before trying again.",
    "1019": "Statement generation in progress; trying again shortly.",
    "1020": "Invalid request or unable to validate request: check the token and the query id.",
    "1021": "Statement could not be retrieved at this time; try again shortly.",
}
RETRY_CODES = frozenset({"1001", "1004", "1005", "1006", "1007", "1008", "1009", "1019", "1021"})
THROTTLE_CODES = frozenset({"1018"})
TOKEN_CODES = frozenset({"1012", "1013", "1015", "1020"})


@dataclass(frozen=True)
class FlexReference:
    """What SendRequest answers: the reference code and the URL to fetch the statement from."""

    reference_code: str
    url: str


@dataclass(frozen=True)
class FlexPolling:
    """How GetStatement is polled. Tests set the delays to 0."""

    first_delay: float = 5.0
    """Seconds before the first GetStatement (IBKR needs a few seconds to generate)."""
    retry_delay: float = 5.0
    """First wait after a try-again code; multiplied by ``backoff`` on each further one."""
    backoff: float = 1.5
    max_delay: float = 60.0
    throttle_delay: float = 10.0
    """Wait after 1018 (too many requests); doubled on each further 1018, capped at ``max_delay``."""
    max_attempts: int = 30
    """GetStatement (and SendRequest) attempts before :class:`FlexServiceUnavailable`."""


def _check_range(from_date: date | None, to_date: date | None) -> None:
    if (from_date is None) != (to_date is None):
        raise FlexRangeError("give both from_date and to_date to override the query's period, or neither")
    if from_date is not None and to_date is not None:
        if to_date < from_date:
            raise FlexRangeError(f"to_date {to_date} is before from_date {from_date}")
        days = (to_date - from_date).days + 1
        if days > MAX_RANGE_DAYS:
            raise FlexRangeError(
                f"{from_date}..{to_date} is {days} days; the Flex Web Service serves at most {MAX_RANGE_DAYS} "
                "days per request: split the range into chunks"
            )


def _envelope(body: bytes) -> dict[str, str] | None:
    """The fields of a ``FlexStatementResponse`` (status, codes, reference, URL), or None when the body
    is something else (the statement itself)."""
    head = body.lstrip()[:200]
    if b"<FlexStatementResponse" not in head:
        return None
    try:
        root = ET.fromstring(body)  # noqa: S314 - a few hundred bytes from IBKR; expat refuses entity bombs
    except ET.ParseError:
        return None
    fields = {child.tag: (child.text or "").strip() for child in root}
    fields["timestamp"] = root.get("timestamp", "")
    return fields


def _raise_for(fields: dict[str, str], path: str) -> None:
    code = fields.get("ErrorCode") or None
    message = fields.get("ErrorMessage") or None
    advice = ERROR_CODES.get(code or "", "See IBKR's Flex Web Service error codes.")
    cls = FlexTokenError if code in TOKEN_CODES else FlexServiceError
    raise cls(code, message, advice, path=path)


class FlexWebService:
    """Async Flex Web Service v3 client.

    Example::

        async with FlexWebService(FlexSettings()) as flex:
            xml = await flex.fetch(from_date=date(2025, 1, 1), to_date=date(2025, 3, 31))
    """

    def __init__(
        self,
        settings: FlexSettings | None = None,
        *,
        polling: FlexPolling | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or FlexSettings()
        if self.settings.token is not None:
            # httpx logs every request URL, and the token travels in the query string (t=...): it is
            # redacted wherever install_log_redaction() was called (flows and tasks call it).
            register_secret(self.settings.token.get_secret_value())
        self.polling = polling or FlexPolling()
        self._sleep = sleep
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=self.settings.timeout, follow_redirects=True)

    def __repr__(self) -> str:
        return f"FlexWebService(url={self.settings.url!r}, query_id={self.settings.query_id!r})"

    async def __aenter__(self) -> FlexWebService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def _token(self) -> str:
        if self.settings.token is None or not self.settings.token.get_secret_value():
            raise ConfigurationError(
                "no Flex Web Service token: set IBKR_FLEX_TOKEN or the credentials block's flex_token"
            )
        return self.settings.token.get_secret_value()

    async def _get(self, url: str, params: dict[str, str], what: str) -> httpx.Response:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/xml, text/xml"}
        try:
            response = await self._http.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            # Never str(exc.request.url): it holds the token.
            raise TransportError(f"Flex Web Service {what} failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise FlexServiceError(
                str(response.status_code),
                f"HTTP {response.status_code} from {what}",
                "Check IBKR_FLEX_URL; IBKR's service answers errors as XML with HTTP 200.",
                path=what,
            )
        return response

    async def send_request(
        self, query_id: str | None = None, *, from_date: date | None = None, to_date: date | None = None
    ) -> FlexReference:
        """SendRequest: ask IBKR to generate the statement; returns its reference code and URL."""
        _check_range(from_date, to_date)
        query = query_id or self.settings.query_id
        if not query:
            raise ConfigurationError("no Flex Query id: pass query_id or set IBKR_FLEX_QUERY_ID")
        params = {"t": self._token(), "q": str(query), "v": "3"}
        if from_date is not None and to_date is not None:
            params["fd"] = from_date.strftime("%Y%m%d")
            params["td"] = to_date.strftime("%Y%m%d")
        delay, throttle = self.polling.retry_delay, self.polling.throttle_delay
        code: str | None = None
        message: str | None = None
        for attempt in range(1, self.polling.max_attempts + 1):
            response = await self._get(f"{self.settings.url}/SendRequest", params, "SendRequest")
            fields = _envelope(response.content)
            if fields is None:
                raise FlexServiceError(
                    None, "SendRequest did not answer a FlexStatementResponse", "Check IBKR_FLEX_URL."
                )
            if fields.get("Status") == "Success" and fields.get("ReferenceCode"):
                url = fields.get("Url") or f"{self.settings.url}/GetStatement"
                logger.info(
                    "Flex statement requested for query %s (reference %s)", query, fields["ReferenceCode"]
                )
                return FlexReference(fields["ReferenceCode"], url)
            code, message = fields.get("ErrorCode", ""), fields.get("ErrorMessage")
            if code in THROTTLE_CODES or code in RETRY_CODES:
                wait = throttle if code in THROTTLE_CODES else delay
                logger.warning(
                    "Flex SendRequest answered %s; waiting %.1fs (attempt %d)", code, wait, attempt
                )
                await self._sleep(wait)
                if code in THROTTLE_CODES:
                    throttle = min(throttle * 2, self.polling.max_delay)
                else:
                    delay = min(delay * self.polling.backoff, self.polling.max_delay)
                continue
            _raise_for(fields, "SendRequest")
        raise FlexServiceUnavailable(code, message, "Gave up after the allowed attempts; try later.")

    async def get_statement(self, reference: FlexReference, *, to: IO[bytes] | Path | None = None) -> bytes:
        """GetStatement, polled until the statement is ready. Returns the XML (or writes it to ``to``
        and returns ``b""``, so a large statement never has to sit in memory as one bytes object)."""
        params = {"t": self._token(), "q": reference.reference_code, "v": "3"}
        delay, throttle = self.polling.retry_delay, self.polling.throttle_delay
        await self._sleep(self.polling.first_delay)
        fields: dict[str, str] = {}
        for attempt in range(1, self.polling.max_attempts + 1):
            response = await self._get(reference.url, params, "GetStatement")
            body = response.content
            fields = _envelope(body) or {}
            if not fields:
                if b"<FlexQueryResponse" not in body.lstrip()[:500]:
                    raise FlexServiceError(
                        None,
                        "GetStatement answered something that is not a Flex statement",
                        "Check the query's output format: it must be XML, not CSV or text.",
                    )
                if to is None:
                    return body
                if isinstance(to, Path):
                    to.write_bytes(body)
                else:
                    to.write(body)
                return b""
            code = fields.get("ErrorCode", "")
            if code in THROTTLE_CODES or code in RETRY_CODES:
                wait = throttle if code in THROTTLE_CODES else delay
                logger.info("Flex GetStatement answered %s; waiting %.1fs (attempt %d)", code, wait, attempt)
                await self._sleep(wait)
                if code in THROTTLE_CODES:
                    throttle = min(throttle * 2, self.polling.max_delay)
                else:
                    delay = min(delay * self.polling.backoff, self.polling.max_delay)
                continue
            _raise_for(fields, "GetStatement")
        raise FlexServiceUnavailable(
            fields.get("ErrorCode"),
            fields.get("ErrorMessage"),
            f"The statement was not ready after {self.polling.max_attempts} attempts; try again later.",
            path="GetStatement",
        )

    async def fetch(
        self,
        query_id: str | None = None,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        to: IO[bytes] | Path | None = None,
    ) -> bytes:
        """SendRequest then GetStatement: the statement's XML (see :meth:`get_statement` for ``to``)."""
        reference = await self.send_request(query_id, from_date=from_date, to_date=to_date)
        return await self.get_statement(reference, to=to)

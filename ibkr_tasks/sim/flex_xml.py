"""Flex XML as IBKR prints it, written by the simulator for its Flex Web Service.

The simulator has its own writer (it imports nothing of the project it tests): ``FlexStatementResponse``
envelopes and ``FlexQueryResponse`` statements, in the Date Format, Time Format and Date/Time
Separator a Flex query can be set to. Times without a zone are US/Eastern wall-clock times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TextIO
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")
MAX_RANGE_DAYS = 365  # the longest period one Flex request may cover

_PY_DATE = {
    "yyyyMMdd": "%Y%m%d",
    "yyyy-MM-dd": "%Y-%m-%d",
    "MM/dd/yyyy": "%m/%d/%Y",
    "MM/dd/yy": "%m/%d/%y",
    "dd/MM/yyyy": "%d/%m/%Y",
    "dd/MM/yy": "%d/%m/%y",
    "dd-MMM-yy": "%d-%b-%y",
}
DATE_FORMATS = tuple(_PY_DATE)
"""The Date Format values a Flex query offers."""
TIME_FORMATS = ("HHmmss", "HH:mm:ss", "HHmmss TimeZone", "HH:mm:ss TimeZone")
"""The Time Format values a Flex query offers (with or without the zone printed)."""
SEPARATORS = (";", ",", " ", "", ", ")
"""Date/Time separators: ``;`` (default), ``,``, a space, none, and the legacy ``", "``."""


@dataclass(frozen=True)
class FlexFormat:
    """A Flex query's Date Format, Time Format and Date/Time Separator."""

    date_format: str = "yyyyMMdd"
    time_format: str = "HHmmss"
    separator: str = ";"

    def __post_init__(self) -> None:
        if self.date_format not in DATE_FORMATS:
            raise ValueError(f"date_format must be one of {DATE_FORMATS}")
        if self.time_format not in TIME_FORMATS:
            raise ValueError(f"time_format must be one of {TIME_FORMATS}")
        if self.separator not in SEPARATORS:
            raise ValueError(f"separator must be one of {SEPARATORS!r}")

    def date(self, value: date | None) -> str:
        if value is None:
            return ""
        return value.strftime(_PY_DATE[self.date_format])

    def time(self, value: datetime) -> str:
        """An aware instant as the statement's wall-clock time (US/Eastern), with the zone if set."""
        local = value.astimezone(EASTERN)
        text = local.strftime("%H:%M:%S" if self.time_format.startswith("HH:") else "%H%M%S")
        if self.time_format.endswith("TimeZone"):
            text += " " + (local.tzname() or "ET")
        return text

    def datetime(self, value: datetime | None) -> str:
        if value is None:
            return ""
        if value.tzinfo is None:
            raise ValueError("datetimes written to a statement must be aware")
        local_date = value.astimezone(EASTERN).date()
        return f"{self.date(local_date)}{self.separator}{self.time(value)}"


@dataclass
class Section:
    """A section container (``Trades``, ``CashTransactions`` ...) and its rows ``(element, attributes)``."""

    name: str
    rows: Iterable[tuple[str, Mapping[str, str]]]


def _attrs(values: Mapping[str, object]) -> str:
    return "".join(
        f" {name}={quoteattr('' if value is None else str(value))}" for name, value in values.items()
    )


def write_response(
    out: TextIO,
    *,
    query_name: str,
    query_type: str = "AF",
    statements: Iterable[tuple[Mapping[str, object], Iterable[Section]]],
    count: int | None = None,
) -> None:
    """Write a ``FlexQueryResponse`` with one ``FlexStatement`` per ``(header attributes, sections)``.

    ``count`` is the ``FlexStatements count`` to print; when omitted the statements are gathered first
    and counted. Given, they are written as they come, so a generator of a huge statement streams.
    """
    if count is None:
        statements = list(statements)
        count = len(statements)
    out.write(f"<FlexQueryResponse{_attrs({'queryName': query_name, 'type': query_type})}>\n")
    out.write(f'<FlexStatements count="{count}">\n')
    for header, sections in statements:
        out.write(f"<FlexStatement{_attrs(header)}>\n")
        for section in sections:
            out.write(f"<{section.name}>\n")
            for element, row in section.rows:
                out.write(f"<{element}{_attrs(row)} />\n")
            out.write(f"</{section.name}>\n")
        out.write("</FlexStatement>\n")
    out.write("</FlexStatements>\n</FlexQueryResponse>\n")

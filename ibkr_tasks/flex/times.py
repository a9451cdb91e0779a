"""Dates and times as Flex prints them, in every format a Flex query can be configured to use.

A Flex query's General Configuration chooses (IBKR, "Delivery Configuration and General
Configuration", https://www.ibkrguides.com/reportingreference/reportguide/delivery%20configuration%20and%20general%20configuration.htm):

- Date Format: ``yyyyMMdd`` (default), ``yyyy-MM-dd``, ``MM/dd/yyyy``, ``MM/dd/yy``, ``dd/MM/yyyy``,
  ``dd/MM/yy``, ``dd-MMM-yy``;
- Time Format: ``HHmmss`` (default), ``HH:mm:ss``, each optionally followed by a time zone
  (``14:30:00 EDT``);
- Date/Time Separator: ``;`` (default), ``,``, a space, or none; older files print ``", "``.

Times without a zone are US/Eastern wall-clock times (``America/New_York``); a printed zone wins.
Everything returned here is aware UTC. Slash dates are ambiguous between month-first and day-first:
:class:`FlexDateReader` takes the order from the caller, or from a value that settles it
(a component above 12), and refuses to guess otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DATE_FORMATS",
    "EASTERN",
    "AmbiguousDate",
    "FlexDateReader",
    "ParsedDateTime",
    "slash_order_evidence",
]

EASTERN = ZoneInfo("America/New_York")

DATE_FORMATS = ("yyyyMMdd", "yyyy-MM-dd", "MM/dd/yyyy", "MM/dd/yy", "dd/MM/yyyy", "dd/MM/yy", "dd-MMM-yy")
"""The Date Format values a Flex query offers."""

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}

_DATE = (
    r"(?:(?P<ymd>\d{8})"
    r"|(?P<iso>\d{4}-\d{2}-\d{2})"
    r"|(?P<slash4>\d{1,2}/\d{1,2}/\d{4})"
    r"|(?P<slash2>\d{1,2}/\d{1,2}/\d{2})"
    r"|(?P<mon>\d{1,2}-[A-Za-z]{3}-\d{2}))"
)
_TIME = r"(?:(?P<hms>\d{6})|(?P<colon>\d{1,2}:\d{2}:\d{2}))"
_ZONE = r"(?:\s*(?P<zone>[A-Za-z][A-Za-z0-9_/+-]*|[+-]\d{2}:?\d{2}))?"
_SEP = r"(?:, |;|,|T| |)"
_DATETIME_RE = re.compile(rf"^{_DATE}(?:{_SEP}{_TIME}{_ZONE})?$")
_TIME_RE = re.compile(rf"^{_TIME}{_ZONE}$")
_SLASH_RE = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})(?![\d/])")

# Zone abbreviations a Flex query may print with "HH:mm:ss TimeZone", as fixed UTC offsets (the
# abbreviation itself says whether daylight time applies). Ambiguous ones (IST, CST in China ...)
# are not guessed: the row is rejected with the reason.
_ZONE_OFFSETS = {
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "WET": 0,
    "BST": 60,
    "WEST": 60,
    "CET": 60,
    "MET": 60,
    "CEST": 120,
    "MEST": 120,
    "EET": 120,
    "EEST": 180,
    "MSK": 180,
    "HKT": 480,
    "SGT": 480,
    "AWST": 480,
    "JST": 540,
    "KST": 540,
    "ACST": 570,
    "ACDT": 630,
    "AEST": 600,
    "AEDT": 660,
    "NZST": 720,
    "NZDT": 780,
    "EST": -300,
    "EDT": -240,
    "CDT": -300,
    "MST": -420,
    "MDT": -360,
    "PST": -480,
    "PDT": -420,
}
_ZONE_NAMES = {"ET": EASTERN, "EST5EDT": EASTERN, "US/EASTERN": EASTERN}


class AmbiguousDate(ValueError):
    """A slash date whose order (month-first or day-first) nothing in the statement settles."""


@dataclass(frozen=True, slots=True)
class ParsedDateTime:
    """A Flex date, with its time when one was printed (aware UTC)."""

    date: date
    at: datetime | None


def _zone(text: str | None) -> tzinfo:
    if not text:
        return EASTERN
    upper = text.upper()
    if upper in _ZONE_NAMES:
        return _ZONE_NAMES[upper]
    if upper in _ZONE_OFFSETS:
        return timezone(timedelta(minutes=_ZONE_OFFSETS[upper]))
    offset = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if offset:
        minutes = int(offset.group(2)) * 60 + int(offset.group(3))
        return timezone(timedelta(minutes=minutes if offset.group(1) == "+" else -minutes))
    if "/" in text:
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ValueError(f"time zone {text!r} is not one this parser knows; the time is not guessed")


def slash_order_evidence(text: str) -> set[bool]:
    """Which slash-date orders the slash dates in ``text`` prove: ``True`` = day-first
    (``dd/MM``), ``False`` = month-first (``MM/dd``). Empty when nothing settles it."""
    found: set[bool] = set()
    for first, second, _year in _SLASH_RE.findall(text):
        a, b = int(first), int(second)
        if a > 12 >= b:
            found.add(True)
        elif b > 12 >= a:
            found.add(False)
    return found


class FlexDateReader:
    """Reads Flex dates and times for one response.

    ``date_format`` is the query's Date Format when the caller knows it (one of :data:`DATE_FORMATS`);
    it only matters for slash dates. Without it, the order comes from :meth:`learn` (evidence found in
    the statement); a slash date read before anything settled the order raises :class:`AmbiguousDate`
    unless its day and month are equal.
    """

    def __init__(self, date_format: str | None = None, *, zone: tzinfo = EASTERN) -> None:
        if date_format is not None and date_format not in DATE_FORMATS:
            raise ValueError(
                f"date_format {date_format!r} is not a Flex Date Format; use one of {DATE_FORMATS}"
            )
        self.day_first: bool | None = None
        if date_format is not None and "/" in date_format:
            self.day_first = date_format.startswith("dd")
        self.zone = zone

    def learn(self, evidence: set[bool]) -> None:
        if len(evidence) > 1:
            raise AmbiguousDate(
                "the statement holds slash dates that are only valid month-first and others only valid "
                "day-first; pass date_format explicitly"
            )
        if evidence and self.day_first is None:
            self.day_first = next(iter(evidence))

    def _date(self, match: re.Match[str]) -> date:
        if match.group("ymd"):
            text = match.group("ymd")
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if match.group("iso"):
            return date.fromisoformat(match.group("iso"))
        if match.group("mon"):
            day, month, year = match.group("mon").split("-")
            if month.upper() not in _MONTHS:
                raise ValueError(f"month {month!r} is not a month")
            return date(2000 + int(year), _MONTHS[month.upper()], int(day))
        text = match.group("slash4") or match.group("slash2")
        first, second, year_text = text.split("/")
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        a, b = int(first), int(second)
        day_first = self.day_first
        if day_first is None:
            if a > 12 >= b:
                day_first = True
            elif b > 12 >= a:
                day_first = False
            elif a == b:
                day_first = False
            else:
                raise AmbiguousDate(
                    f"date {text!r} reads as month-first and as day-first and nothing in the statement "
                    "says which; pass date_format ('MM/dd/yyyy' or 'dd/MM/yyyy' ...) as the query sets it"
                )
        day, month = (a, b) if day_first else (b, a)
        return date(year, month, day)

    def datetime(self, value: str) -> ParsedDateTime:
        """A date, or a date and time, in any Flex format -> date (+ aware UTC instant)."""
        text = value.strip()
        match = _DATETIME_RE.match(text)
        if not match:
            raise ValueError(f"{value!r} is not a Flex date or date/time")
        day = self._date(match)
        if not (match.group("hms") or match.group("colon")):
            return ParsedDateTime(day, None)
        clock = self._clock(match)
        local = datetime.combine(day, clock).replace(tzinfo=_zone(match.group("zone")))
        return ParsedDateTime(day, local.astimezone(UTC))

    def date(self, value: str) -> dt.date:
        """A date-only field (a date/time printed there is tolerated: its date is taken)."""
        return self.datetime(value).date

    def combine(self, day: dt.date, value: str) -> dt.datetime:
        """A date plus a separate time field (``tradeDate`` + ``tradeTime``) -> aware UTC."""
        match = _TIME_RE.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a Flex time (HHmmss or HH:mm:ss)")
        local = datetime.combine(day, self._clock(match)).replace(tzinfo=_zone(match.group("zone")))
        return local.astimezone(UTC)

    @staticmethod
    def _clock(match: re.Match[str]) -> time:
        if match.group("hms"):
            text = match.group("hms")
            return time(int(text[:2]), int(text[2:4]), int(text[4:]))
        hours, minutes, seconds = (int(part) for part in match.group("colon").split(":"))
        return time(hours, minutes, seconds)

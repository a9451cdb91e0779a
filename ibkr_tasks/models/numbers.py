"""Lenient number and time parsing for the values IBKR sends.

The Client Portal Web API sends numbers in many shapes: JSON numbers, plain strings (``"420.08"``),
strings with thousands separators (``"1,300"``), market-data prefixes (``"C168.42"`` = prior close,
``"H168.42"`` = trading halted), volume suffixes (``"1.2K"``, ``"3.4M"``), percentages (``"0.54%"``)
and amounts with a currency (``"1.00 USD"``). See docs/ibkr-api.md#formats.

Everything here returns :class:`~decimal.Decimal` (never ``float``). JSON floats are converted through
their shortest ``repr`` so ``0.1`` becomes ``Decimal("0.1")``, not the binary expansion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ibkr_tasks.models.bounds import check_int64

__all__ = [
    "MarketValue",
    "parse_amount_with_currency",
    "parse_conid",
    "parse_decimal",
    "parse_epoch_ms",
    "parse_market_value",
    "parse_trade_time",
]

_MAX_EXPONENT = 30
_SUFFIX = {"K": Decimal(1_000), "M": Decimal(1_000_000), "B": Decimal(1_000_000_000)}
_AMOUNT_WITH_CCY = re.compile(
    r"^\s*(?P<num>[-+]?[0-9][0-9,]*(?:\.[0-9]*)?|[-+]?\.[0-9]+)\s*(?P<ccy>[A-Z]{3})?\s*$"
)

# Trade times before this are not real executions (a 0 / 1970 timestamp is a parsing bug upstream).
_EARLIEST_TRADE = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST_TRADE = datetime(2100, 1, 1, tzinfo=UTC)  # e.g. microseconds sent where ms were expected
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_decimal(value: Any) -> Decimal:
    """Parse a JSON number or numeric string into a finite Decimal.

    Accepts ints, floats, Decimals and strings with thousands separators. Raises ``ValueError`` with a
    readable message for anything else (``None``, ``""``, ``"abc"``, ``NaN``, booleans).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got boolean {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text:
            raise ValueError("expected a number, got an empty string")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    if result and not -_MAX_EXPONENT <= result.adjusted() <= _MAX_EXPONENT:
        # "1e999999999" is a valid Decimal whose int() or quantize() would take forever.
        raise ValueError(f"number {value!r} is out of range for an amount, price, size or time")
    return result


_DIGITS = re.compile(r"[+-]?[0-9]+")


def parse_conid(value: Any) -> int:
    """A contract id: a JSON integer or a string of ASCII digits, within the ledger's 64-bit range.

    Raises ``ValueError`` for anything else (floats, booleans, ``"1_000"``, full-width digits, ...).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"conid {value!r} is not an integer")
    if isinstance(value, str):
        text = value.strip()
        if not _DIGITS.fullmatch(text):
            raise ValueError(f"conid {value[:40]!r} is not an integer")
        if len(text) > 25:
            raise ValueError(f"conid {text[:25]}... is outside the ledger's 64-bit integer range")
        value = int(text)
    elif not isinstance(value, int):
        raise ValueError(f"conid {value!r} is not an integer")
    try:
        return check_int64(value)
    except ValueError as exc:
        raise ValueError(f"conid {exc}") from None


def parse_amount_with_currency(value: Any) -> tuple[Decimal, str | None]:
    """Parse ``"1.00"``, ``"1.00 USD"``, ``"1,005,254 USD"`` or a JSON number into (amount, currency)."""
    if isinstance(value, str):
        match = _AMOUNT_WITH_CCY.match(value)
        if not match:
            raise ValueError(f"expected an amount like '1.00' or '1.00 USD', got {value!r}")
        return parse_decimal(match.group("num")), match.group("ccy")
    return parse_decimal(value), None


@dataclass(frozen=True, slots=True)
class MarketValue:
    """A market-data value with the flags IBKR encodes in its prefix.

    ``is_prior_close``: the value carried a ``C`` prefix (no trade today, this is the prior close).
    ``is_halted``: the value carried an ``H`` prefix (trading halted).
    """

    value: Decimal
    is_prior_close: bool = False
    is_halted: bool = False


def parse_market_value(value: Any) -> MarketValue | None:
    """Parse one snapshot field: ``"C168.42"``, ``"H1.5"``, ``"1,300"``, ``"1.2K"``, ``"3.4M"``, ``"0.54%"``.

    Returns ``None`` for absent/empty values and for placeholders that are not numbers (``"-"``,
    ``"N/A"``); raises nothing, because one odd field must not sink a whole snapshot.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            return MarketValue(parse_decimal(value))
        except ValueError:
            return None
    text = value.strip().replace(",", "")
    prior_close = halted = False
    while text[:1] in {"C", "H"}:
        prior_close = prior_close or text[0] == "C"
        halted = halted or text[0] == "H"
        text = text[1:].strip()
    text = text.removesuffix("%")
    factor = Decimal(1)
    if text[-1:].upper() in _SUFFIX:
        factor = _SUFFIX[text[-1].upper()]
        text = text[:-1]
    try:
        number = parse_decimal(text) * factor
    except ValueError:
        return None
    return MarketValue(number, is_prior_close=prior_close, is_halted=halted)


def parse_epoch_ms(value: Any) -> datetime:
    """Epoch milliseconds (int, float or digit string; 64-bit values are fine) -> aware UTC datetime.

    Raises ``ValueError`` for non-numbers and for times before 2000 (0 / 1970 is never a real trade).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected epoch milliseconds, got {value!r}")
    millis = parse_decimal(value)
    try:
        when = _EPOCH + timedelta(milliseconds=int(millis))
    except OverflowError:
        raise ValueError(f"epoch milliseconds {value!r} is out of range") from None
    if not _EARLIEST_TRADE <= when < _LATEST_TRADE:
        raise ValueError(f"epoch milliseconds {value!r} is not between 2000 and 2100; not a real trade time")
    return when


def parse_trade_time(value: Any) -> datetime:
    """IBKR's ``trade_time`` text ``YYYYMMDD-HH:mm:ss`` (UTC per the OpenAPI spec) -> aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'YYYYMMDD-HH:mm:ss', got {value!r}")
    try:
        when = datetime.strptime(value.strip(), "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"expected 'YYYYMMDD-HH:mm:ss', got {value!r}") from None
    if when < _EARLIEST_TRADE:
        raise ValueError(f"trade_time {value!r} is before 2000; not a real trade time")
    return when

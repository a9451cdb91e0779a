"""What the ledger can hold: the bounds every parsed fill and position is checked against.

A value the ledger's columns cannot store must be refused when the row is parsed (the row is then
quarantined with the reason), never found out by the database half-way through an account's ingest,
where one such row would fail every row of the account. The bounds are the ledger's column types
(``ibkr_tasks/ledger/schema.py``; ``tests/test_poison_rows.py`` checks that the two agree):

- integers (``conid``): ``BIGINT`` on PostgreSQL, ``INTEGER`` on SQLite, both signed 64-bit;
  ``fills.revision`` is a 32-bit ``INTEGER`` on PostgreSQL;
- amounts and quantities: ``NUMERIC(28, 10)`` on PostgreSQL (:class:`~ibkr_tasks.ledger.types.Amount`,
  which stores the same rounded decimal text on SQLite), so at most 18 digits before the point. The
  parsers accept magnitudes below ``10**17``: one digit is kept free so that the difference of two
  accepted values (a break's ``delta``) and the sum of up to ten of them still fit the column.
  Digits beyond the 10th decimal place are rounded by the ledger, not refused;
- text: ``VARCHAR(n)`` columns refuse longer values on PostgreSQL; no text (and no string anywhere in a
  stored payload) may contain a NUL character or an unpaired UTF-16 surrogate, which PostgreSQL
  (text and JSONB) and the UTF-8 drivers cannot store;
- payload rows (``raw``): JSON (JSONB on PostgreSQL), which has no NaN or Infinity.

Non-finite numbers (NaN, Infinity) are never a valid amount, whatever the column.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator

__all__ = [
    "AMOUNT_LIMIT",
    "AMOUNT_PRECISION",
    "AMOUNT_SCALE",
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "TEXT_LENGTHS",
    "check_amount",
    "check_int64",
    "check_payload",
    "check_revision",
    "check_text",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

AMOUNT_PRECISION = 28
"""Digits of an amount column (``NUMERIC(28, 10)``)."""
AMOUNT_SCALE = 10
"""Decimal places of an amount column; more are rounded (half away from zero)."""
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_PRECISION - AMOUNT_SCALE - 1)
"""Parsed amounts and quantities are smaller than this in magnitude (see the module docstring)."""

TEXT_LENGTHS = {
    "execution_id": 64,
    "symbol": 64,
    "sec_type": 16,
    "currency": 8,
    "order_ref": 64,
    "order_id": 64,
    "exchange": 32,
    "asset_class": 16,
    "position_symbol": 128,
}
"""Longest text the ledger column of each parsed field holds (``VARCHAR(n)``, in characters)."""

# Python refuses to turn longer integers into text (sys.get_int_max_str_digits), so a payload holding
# one could not even be written as JSON; JSON decoding never produces one.
_MAX_INT_BITS = 4000 * 3


def check_int64(value: int) -> int:
    """``value`` if a signed 64-bit column holds it, else ValueError."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{value} is outside the ledger's 64-bit integer range")
    return value


def check_revision(value: int) -> int:
    """An execution id's correction number: 0 .. 2**31-1 (``fills.revision``)."""
    if not 0 <= value <= INT32_MAX:
        raise ValueError(f"correction number {value} is outside 0..{INT32_MAX}")
    return value


def check_amount(value: Decimal) -> Decimal:
    """``value`` if it is finite and smaller than :data:`AMOUNT_LIMIT` in magnitude, else ValueError."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    if abs(value) >= AMOUNT_LIMIT:
        raise ValueError(
            f"{value} is too large for the ledger (the limit is {AMOUNT_LIMIT:,.0f} in magnitude)"
        )
    return value


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (not valid Unicode)"
    return None


def check_text(value: str, limit: int | None = None) -> str:
    """``value`` if a ledger text column holds it (no NUL, valid Unicode, at most ``limit`` characters)."""
    problem = _text_problem(value)
    if problem is not None:
        raise ValueError(f"text {value[:40]!r} {problem}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"text {value[:40]!r}... is {len(value)} characters long; the ledger holds {limit}")
    return value


def check_payload(value: Any) -> Any:
    """``value`` if it can be stored as a JSON document on both databases, else ValueError.

    Refused: NaN and Infinity, strings (keys included) with NUL or unpaired surrogates, integers too
    long to write as text, and anything that is not a JSON type (dict with string keys, list, str,
    int, float, bool, None; Decimal is accepted and stored as its text).
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem is not None:
                raise ValueError(f"payload value{where} {problem}")
        elif isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:
                raise ValueError(f"payload value{where} is an integer too long to store")
        elif isinstance(item, float | Decimal):
            if not (math.isfinite(item) if isinstance(item, float) else item.is_finite()):
                raise ValueError(f"payload value{where} is {item!r}; JSON has no NaN or Infinity")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"payload key {key!r}{where} is not a string")
                problem = _text_problem(key)
                if problem is not None:
                    raise ValueError(f"payload key {key[:40]!r}{where} {problem}")
                stack.append((sub, f"{where}[{key[:40]!r}]"))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
        else:
            raise ValueError(f"payload value{where} is a {type(item).__name__}, not a JSON value")
    return value


# --- the same bounds as field types of the models the ledger stores ---------------------------------


def _text_of(field: str) -> Any:
    limit = TEXT_LENGTHS[field]
    return Annotated[str, AfterValidator(lambda value: check_text(value, limit))]


LedgerInt = Annotated[int, AfterValidator(check_int64)]
"""An integer a 64-bit ledger column holds (a conid)."""
LedgerAmount = Annotated[Decimal, AfterValidator(check_amount)]
"""A finite amount or quantity within :data:`AMOUNT_LIMIT`."""
Revision = Annotated[int, AfterValidator(check_revision)]
Payload = Annotated[dict[str, Any], AfterValidator(check_payload)]
"""A payload row the ledger can keep as a JSON document."""
ExecutionIdText = _text_of("execution_id")
SymbolText = _text_of("symbol")
SecTypeText = _text_of("sec_type")
CurrencyText = _text_of("currency")
OrderRefText = _text_of("order_ref")
OrderIdText = _text_of("order_id")
ExchangeText = _text_of("exchange")
AssetClassText = _text_of("asset_class")
PositionSymbolText = _text_of("position_symbol")

"""Column types that behave the same on SQLite and PostgreSQL.

- :class:`Amount`: every amount and quantity. ``NUMERIC(28, 10)`` on PostgreSQL; on SQLite the
  exact decimal text (SQLite's NUMERIC affinity would silently turn values into binary floats).
  Python always sees :class:`decimal.Decimal`, normalised (``Decimal("1.5")``, not ``1.5000000000``),
  rounded to 10 decimal places on the way in on both dialects (PostgreSQL's rule, half away from zero).
- :class:`UTCDateTime`: timezone-aware timestamps. ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; on
  SQLite a naive UTC text value. Python always gets an aware UTC ``datetime`` back and naive ones
  are refused on the way in (a naive time is ambiguous, and ambiguity in a ledger is a bug).
- :data:`JSONDoc`: JSON, stored as JSONB on PostgreSQL.
- :class:`ExactJSON`: a payload kept exactly as received, as JSON text in a ``TEXT`` column (see
  :func:`~ibkr_tasks.ledger.jsonable.exact_json`); for rows that JSONB cannot hold (NaN, NUL) and
  for bare values that SQLite's JSON column would turn into floats.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ibkr_tasks.ledger.jsonable import exact_json
from ibkr_tasks.models.bounds import AMOUNT_PRECISION, AMOUNT_SCALE

# The parsers check amounts against the same numbers (ibkr_tasks.models.bounds), so that a value
# this column cannot hold is rejected when its row is parsed.
PRECISION = AMOUNT_PRECISION
SCALE = AMOUNT_SCALE
_QUANTUM = Decimal(1).scaleb(-SCALE)
_ONE = Decimal(1)


def canonical_decimal(value: Decimal) -> Decimal:
    """``value`` rounded to the ledger scale and without trailing zeros (``1.50`` -> ``1.5``, ``1E+2`` -> ``100``)."""
    if not value.is_finite():
        raise ValueError(f"the ledger stores finite amounts only, got {value!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE:
        value = value.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    if not value:
        return Decimal(0)
    value = value.normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(Decimal(1))
    return value


class Amount(TypeDecorator[Decimal]):
    """An exact decimal amount or quantity (see the module docstring)."""

    impl = Numeric(PRECISION, SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(48))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # Hot path of every bulk write: plain string and Decimal operations only.
        if value is None:
            return None
        if type(value) is not Decimal:
            if isinstance(value, float | bool):
                raise TypeError(f"ledger amounts must be Decimal, not {type(value).__name__} ({value!r})")
            value = Decimal(value)
        if not value.is_finite():
            raise ValueError(f"the ledger stores finite amounts only, got {value!r}")
        if dialect.name != "sqlite":
            return value  # NUMERIC(28, 10) rounds beyond 10 places itself, half away from zero
        return decimal_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            return Decimal(value)  # SQLite: the canonical text written by process_bind_param
        # PostgreSQL: NUMERIC(28, 10) comes back with 10 decimal places; drop the trailing zeros.
        if value == value.to_integral_value():
            return value.quantize(_ONE)
        return value.normalize()


def decimal_text(value: Decimal) -> str:
    """The canonical text of a finite Decimal as SQLite stores it: ``"1.5"``, ``"100"``, ``"-0.25"``."""
    text = format(value, "f")
    whole, dot, fraction = text.partition(".")
    if dot:
        if len(fraction) > SCALE:
            return format(canonical_decimal(value), "f")
        fraction = fraction.rstrip("0")
        text = f"{whole}.{fraction}" if fraction else whole
    return "0" if text == "-0" else text


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; raise ValueError for a naive datetime."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"naive datetime {value.isoformat()} given: pass a timezone-aware (UTC) datetime")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both dialects (see the module docstring)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is not UTC:
            value = ensure_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # SQLite: one function each way instead of ours plus SQLAlchemy's DATETIME string conversion
    # (bulk writes call it for every timestamp of every row). Same text format as SQLAlchemy's.
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: Any) -> str | None:
            if value is None:
                return None
            if not isinstance(value, datetime):
                raise TypeError(f"expected a datetime, got {type(value).__name__}")
            if value.tzinfo is not UTC:
                value = ensure_utc(value)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

        return process


JSONDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""A JSON document column type (JSONB on PostgreSQL)."""


class ExactJSON(TypeDecorator[Any]):
    """A payload as received, stored as JSON text (``TEXT``) and read back to the same Python value."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else exact_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)

"""Turning payloads and models into JSON the ledger can store (and hash) deterministically."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: Decimal and times as strings, models as their JSON form."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=json_default, ensure_ascii=False)


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces): equal content gives equal text."""
    return _CANONICAL.encode(value)


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dict/list/str/int/float/bool/None)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.loads(dumps(value))


def digest(*parts: Any) -> str:
    """A stable hex digest of ``parts`` (their canonical JSON)."""
    return hashlib.blake2b(_storable(dumps, parts).encode("utf-8"), digest_size=20).hexdigest()


_EXACT = json.JSONEncoder(separators=(",", ":"), default=json_default, ensure_ascii=False)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _storable(encode: Any, value: Any) -> str:
    """``encode(value)`` as text every database and UTF-8 driver takes: an unpaired surrogate (which
    ``json.loads`` produces from an escape like ``"\\ud800"``) is written back as that escape; NUL and
    other control characters are escaped by JSON itself."""
    try:
        text = encode(value)
    except (ValueError, RecursionError) as exc:  # an integer too long to write out, a cycle
        text = encode(f"<payload that cannot be written as JSON: {type(exc).__name__}: {str(exc)[:200]}>")
    return _SURROGATE.sub(_escape_surrogate, text)


def exact_json(value: Any) -> str:
    """A payload as compact JSON text that reads back (``json.loads``) to the same value.

    Keys stay in the order received. Integers keep every digit and floats their shortest ``repr``.
    NaN and Infinity, which JSON has no spelling for, are written ``NaN``/``Infinity``/``-Infinity``
    (as Python and JSON5 spell them), so the text says exactly what was received.
    """
    return _storable(_EXACT.encode, value)

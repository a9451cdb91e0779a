"""Turning payloads and models into JSON the ledger can store (and hash) deterministically."""

from __future__ import annotations

import hashlib
import json
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
    return hashlib.blake2b(dumps(parts).encode("utf-8"), digest_size=20).hexdigest()

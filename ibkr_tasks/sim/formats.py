"""IBKR's JSON encoding and value formats, shared by every payload the simulator renders.

Formats follow docs/ibkr-api.md and the real captures in tests/fixtures/ibkr: prices are strings
(``"420.08"``, ``"0.0"``), sizes and amounts JSON numbers, trade times ``YYYYMMDD-HH:mm:ss`` UTC,
``*_r`` times epoch milliseconds, commissions strings without currency (``"1.0"``, ``"1.02"``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the gateway sends it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def fmt_price(p: Decimal) -> str:
    """A price string the way the trades payload shows it (``"420.08"``, ``"0.0"``)."""
    if p == 0:
        return "0.0"
    return format(p, "f")


def fmt_commission(c: Decimal) -> str:
    """``1.00`` -> ``"1.0"``, ``1.02`` -> ``"1.02"``, ``0.90`` -> ``"0.9"`` (as in real captures)."""
    text = format(c.quantize(Decimal("0.01")), "f").rstrip("0")
    return text + "0" if text.endswith(".") else text


def fmt_qty(q: Decimal) -> str:
    """A quantity without trailing zeros (``"100"``, ``"0.5"``)."""
    return format(q.normalize(), "f")


def thousands(q: Decimal) -> str:
    """A quantity with thousands separators when whole (``"1,000"``), else as :func:`fmt_qty`."""
    if q == q.to_integral_value():
        return f"{int(q):,}"
    return fmt_qty(q)


def num(d: Decimal) -> float:
    """JSON number at the API edge (the real payloads use floats)."""
    return float(d)


def ibkr_time(t: datetime) -> str:
    """``YYYYMMDD-HH:mm:ss`` UTC (trades ``trade_time``)."""
    return t.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")


def ms(t: datetime) -> int:
    """Epoch milliseconds."""
    return int(t.timestamp() * 1000)


def short_time(t: datetime) -> str:
    """``YYMMDDhhmmss`` (orders ``lastExecutionTime`` / status ``order_time``)."""
    return t.astimezone(UTC).strftime("%y%m%d%H%M%S")

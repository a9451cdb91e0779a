"""Builders of realistic :class:`~ibkr_tasks.models.Fill` and ``Position`` objects for ledger tests and benchmarks.

Execution ids follow IBKR's ``8hex.8hex.NN.NN`` shape; the last ``NN`` is the revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ibkr_tasks.models import Fill, Position

_SYMBOLS = {265598: "AAPL", 272093: "MSFT", 8314: "IBM", 76792991: "TSLA", 4815747: "NVDA"}
T0 = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def execution_id(n: int, revision: int = 1, session: int = 0x6576FD38) -> str:
    """A well-formed execution id: ``0000002a.6576fd38.01.01`` for n=42."""
    return f"{n:08x}.{session:08x}.01.{revision:02d}"


def make_fill(
    account_id: str = "DU1234567",
    n: int = 1,
    *,
    revision: int = 1,
    conid: int = 265598,
    side: str = "B",
    quantity: str | Decimal = "10",
    price: str | Decimal = "187.25",
    multiplier: str | Decimal = "1",
    commission: str | Decimal | None = "1.02",
    commission_currency: str | None = "USD",
    trade_time: datetime | None = None,
    order_ref: str | None = None,
    **extra: Any,
) -> Fill:
    """One fill of ``account_id``; ``n`` picks the execution family, ``revision`` its correction number."""
    eid = execution_id(n, revision)
    family = eid.rsplit(".", 1)[0]
    qty, px, mult = Decimal(quantity), Decimal(price), Decimal(multiplier)
    when = trade_time or (T0 + timedelta(seconds=n))
    symbol = _SYMBOLS.get(conid, f"C{conid}")
    raw = {
        "execution_id": eid,
        "symbol": symbol,
        "side": side,
        "size": str(qty),
        "price": str(px),
        "order_ref": order_ref,
        "account": account_id,
        "conid": conid,
        "net_amount": str(qty * px * mult),
        "trade_time_r": int(when.timestamp() * 1000),
        "sec_type": "STK",
        "exchange": "ISLAND",
    }
    if commission is not None:
        raw["commission"] = str(commission)
    fields: dict[str, Any] = {
        "execution_id": eid,
        "execution_family": family,
        "revision": revision,
        "account_id": account_id,
        "conid": conid,
        "symbol": symbol,
        "sec_type": "STK",
        "side": side,
        "quantity": qty,
        "price": px,
        "multiplier": mult,
        "net_amount": qty * px * mult,
        "currency": "USD",
        "commission": None if commission is None else Decimal(commission),
        "commission_currency": None if commission is None else commission_currency,
        "trade_time": when,
        "order_ref": order_ref,
        "order_id": str(1_000_000 + n),
        "exchange": "ISLAND",
        "is_event_contract": False,
        "raw": raw,
    }
    fields.update(extra)
    return Fill(**fields)


def make_position(
    account_id: str = "DU1234567",
    conid: int = 265598,
    position: str | Decimal = "10",
    *,
    multiplier: str | Decimal = "1",
    **extra: Any,
) -> Position:
    """One broker position row of ``account_id``."""
    fields: dict[str, Any] = {
        "account_id": account_id,
        "conid": conid,
        "position": Decimal(position),
        "multiplier": Decimal(multiplier),
        "currency": "USD",
        "asset_class": "STK",
        "symbol": _SYMBOLS.get(conid, f"C{conid}"),
        "raw": {"acctId": account_id, "conid": conid, "position": str(position)},
    }
    fields.update(extra)
    return Position(**fields)


def stream_fills(account_id: str, count: int, *, start: int = 0, seed: int = 0) -> Iterator[Fill]:
    """``count`` varied fills of ``account_id`` (buys and sells over five stocks), built one at a time."""
    conids = list(_SYMBOLS)
    for i in range(start, start + count):
        k = i * 7919 + seed
        yield make_fill(
            account_id,
            i + 1,
            conid=conids[k % len(conids)],
            side="B" if k % 3 else "S",
            quantity=str(1 + k % 200),
            price=f"{100 + k % 97}.{k % 100:02d}",
            commission=None if k % 11 == 0 else f"{1 + k % 3}.{k % 100:02d}",
            trade_time=T0 + timedelta(seconds=i),
            order_ref=f"rb-{i // 10}",
        )

"""Market-data snapshots (``GET /iserver/marketdata/snapshot``) as typed :class:`Snapshot` objects.

IBKR returns each field as a string under its numeric id (docs/ibkr-api.md#market-data): ``"31"`` last (``C``
prefix = prior close, ``H`` = halted), ``"84"``/``"86"`` bid/ask, ``"88"``/``"85"`` bid/ask size
(commas), ``"87"`` volume (``K``/``M`` suffix), ``"83"`` change % (``"0.54%"``)... The first request for
a conid is a pre-flight that returns only ``conid``/``conidEx``: :attr:`Snapshot.has_data` is False then.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from ibkr_tasks.models.numbers import parse_market_value

__all__ = ["DEFAULT_SNAPSHOT_FIELDS", "FIELD_IDS", "Snapshot", "parse_snapshot"]

# Snapshot attribute -> IBKR field id (ids from IBKR's field table, see docs/ibkr-api.md#market-data).
FIELD_IDS: dict[str, str] = {
    "last": "31",
    "bid": "84",
    "ask": "86",
    "bid_size": "88",
    "ask_size": "85",
    "last_size": "7059",
    "volume": "87",
    "high": "70",
    "low": "71",
    "change": "82",
    "change_pct": "83",
    "open": "7295",
    "close": "7296",
    "prior_close": "7741",
    "mark": "7635",
}
_TEXT_FIELDS = {"symbol": "55", "availability": "6509"}
DEFAULT_SNAPSHOT_FIELDS: tuple[str, ...] = (*FIELD_IDS.values(), *_TEXT_FIELDS.values())


class Snapshot(BaseModel):
    """Latest values of one conid. Absent fields are None; amounts are Decimal."""

    model_config = ConfigDict(frozen=True)

    conid: int
    updated: datetime | None = None
    last: Decimal | None = None
    last_is_prior_close: bool = False
    halted: bool = False
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None
    last_size: Decimal | None = None
    volume: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    change: Decimal | None = None
    change_pct: Decimal | None = None
    open: Decimal | None = None
    close: Decimal | None = None
    prior_close: Decimal | None = None
    mark: Decimal | None = None
    symbol: str | None = None
    availability: str | None = None
    raw: dict[str, Any]

    @property
    def has_data(self) -> bool:
        """False for a pre-flight answer (no field values yet)."""
        return any(key.isdigit() and key not in {"6119", "6509"} for key in self.raw)


def parse_snapshot(row: Mapping[str, Any]) -> Snapshot:
    """Parse one snapshot element; unparseable field values become None (the raw row keeps them)."""
    values: dict[str, Any] = {}
    for name, field_id in FIELD_IDS.items():
        parsed = parse_market_value(row.get(field_id))
        values[name] = None if parsed is None else parsed.value
        if name == "last" and parsed is not None:
            values["last_is_prior_close"] = parsed.is_prior_close
            values["halted"] = parsed.is_halted
    for name, field_id in _TEXT_FIELDS.items():
        value = row.get(field_id)
        values[name] = None if value in (None, "") else str(value)
    updated = row.get("_updated")
    when = None
    if isinstance(updated, int | float) and not isinstance(updated, bool) and updated > 0:
        when = datetime.fromtimestamp(updated / 1000, tz=UTC)
    conid = row.get("conid")
    if conid in (None, ""):
        conid = str(row.get("conidEx", "")).split("@", 1)[0]
    return Snapshot(conid=int(conid), updated=when, raw=dict(row), **values)

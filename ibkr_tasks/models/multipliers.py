"""Contract multipliers and event-contract detection.

Why this matters: a ledger that books an option at 1x instead of 100x is wrong by 100x. IBKR's
trades payload does not carry a multiplier (docs/ibkr-api.md#trades), so it comes from, in order:

1. the payload row itself, when it has a positive ``multiplier`` (positions, the simulator);
2. contract info the caller looked up (``/iserver/contract/{conid}/info`` or ``/iserver/secdef/info``,
   passed in as ``multipliers={conid: Decimal}``);
3. the security type: event contracts (ForecastEx ``OPT`` on exchange ``FORECASTX``, CME ``FOP`` with a
   trading class starting ``EC``) are 1; other ``OPT``/``FOP`` are 100; cash-like types (``STK``,
   ``CASH``, ``CFD``, ``CRYPTO``, ``FUND``, ``CMDTY``) are 1 (docs/ibkr-api.md#contracts);
4. for anything else (``FUT``, ``WAR``, ``BOND``, ...): derived from the payload when it is exact
   (fills: ``net_amount = size x price x multiplier``; positions: ``avgCost = avgPrice x multiplier``);
5. otherwise the row is rejected ("multiplier unknown") rather than booked at a guessed 1x.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ibkr_tasks.models.numbers import parse_decimal

__all__ = [
    "ONE_MULTIPLIER_SEC_TYPES",
    "OPTION_SEC_TYPES",
    "derive_multiplier",
    "is_event_contract_row",
    "resolve_multiplier",
]

OPTION_SEC_TYPES = frozenset({"OPT", "FOP"})
ONE_MULTIPLIER_SEC_TYPES = frozenset({"STK", "CASH", "CFD", "CRYPTO", "FUND", "CMDTY", "ETF"})


def _is_true_flag(value: Any) -> bool:
    """IBKR flags arrive as true, 1, "1" or "true"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in {"1", "true"}


def is_event_contract_row(row: Mapping[str, Any], sec_type: str | None) -> bool:
    """True when a payload row describes an event contract (ForecastEx or CME event contract).

    Signals (docs/ibkr-api.md#event-contracts): trades ``is_event_trading == "1"``, positions ``isEventContract``,
    live orders ``isEventTrading``; exchange or listing exchange ``FORECASTX``; CME event contracts
    are ``FOP`` whose trading class starts with ``EC`` (e.g. ``ECNQ``).
    """
    for flag in ("is_event_trading", "isEventContract", "isEventTrading", "is_event_contract"):
        if _is_true_flag(row.get(flag)):
            return True
    for key in ("exchange", "listing_exchange", "listingExchange", "listing_exchange_name"):
        value = row.get(key)
        if isinstance(value, str) and value.upper().startswith("FORECASTX"):
            return True
    if sec_type == "FOP":
        for key in ("trading_class", "tradingClass"):
            value = row.get(key)
            if isinstance(value, str) and value.upper().startswith("EC"):
                return True
    return False


def positive_or_none(value: Any) -> Decimal | None:
    """A multiplier from a payload: positive Decimal, or None for null/0/0.0/unparseable."""
    if value is None or value == "":
        return None
    try:
        number = parse_decimal(value)
    except ValueError:
        return None
    return number if number > 0 else None


def derive_multiplier(total: Decimal | None, per_unit: Decimal | None) -> Decimal | None:
    """``total / per_unit`` when it is a clean multiplier (within 0.01% of a number with 2 decimals)."""
    if total is None or per_unit is None or per_unit == 0 or total == 0:
        return None
    candidate = abs(total / per_unit)
    rounded = candidate.quantize(Decimal("0.01"))
    if rounded <= 0:
        return None
    if abs(candidate - rounded) / rounded > Decimal("0.0001"):
        return None
    return rounded.normalize() if rounded == rounded.to_integral_value() else rounded


def resolve_multiplier(
    *,
    conid: int,
    sec_type: str | None,
    is_event_contract: bool,
    payload_multiplier: Any = None,
    known: Mapping[int, Decimal] | None = None,
    derived: Decimal | None = None,
) -> Decimal | None:
    """Apply the precedence in the module docstring; None means "unknown, reject the row"."""
    from_payload = positive_or_none(payload_multiplier)
    if from_payload is not None:
        return from_payload
    if known is not None:
        from_contract = positive_or_none(known.get(conid))
        if from_contract is not None:
            return from_contract
    kind = (sec_type or "").upper()
    if is_event_contract:
        return Decimal(1)
    if kind in OPTION_SEC_TYPES:
        return Decimal(100)
    if kind in ONE_MULTIPLIER_SEC_TYPES:
        return Decimal(1)
    return derived

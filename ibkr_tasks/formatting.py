"""How numbers read wherever a person sees them: logs, artifacts, state messages, events.

One place decides: plain digits (never ``1.25E+3``), thousands grouped (``173,569.4``), no
meaningless trailing zeros on quantities, two decimals at least on money, the currency after the
amount, and a word instead of ``None``. Machine-read text (cOIDs, JSON payload fields, the ledger)
keeps the exact ``str(Decimal)`` or :func:`number` with ``group=False``.

    >>> number(Decimal("1.25E+3"))
    '1,250'
    >>> money(Decimal("2336647.471"), "USD")
    '2,336,647.471 USD'
    >>> money(None, "USD")
    'unknown'
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["money", "number", "signed"]

_CENT = Decimal("0.01")


def number(value: Decimal | int | float | str | None, *, group: bool = True, missing: str = "") -> str:
    """A quantity or price as a person reads it: ``1,250``, ``-3.5``, ``0.0001``; ``missing`` for None."""
    if value is None:
        return missing
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not dec.is_finite():
        return str(dec)
    dec = dec.normalize()
    if dec == 0:
        return "0"
    if dec == dec.to_integral_value():
        dec = dec.quantize(Decimal(1))  # 1.25E+3 -> 1250 (normalize alone keeps the exponent)
    return format(dec, ",f" if group else "f")


def signed(value: Decimal | int | None, *, missing: str = "") -> str:
    """A difference with its sign: ``+2``, ``-1,000``, ``0``."""
    if value is None:
        return missing
    text = number(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def money(
    value: Decimal | int | float | str | None,
    currency: str | None = None,
    *,
    missing: str = "unknown",
    sign: bool = False,
) -> str:
    """An amount with two decimals at least (more when they carry information) and its currency:
    ``173,569.40 USD``, ``3.155 USD``, ``-12.00``; ``missing`` (``unknown``) for None."""
    if value is None:
        return missing
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if dec.is_finite():
        dec = abs(dec) if dec == 0 else dec  # never "-0.00"
        exact = dec.normalize()
        dec = exact if exact.as_tuple().exponent < -2 else dec.quantize(_CENT)  # type: ignore[operator]
        text = format(dec, ",f")
        if sign and dec > 0:
            text = f"+{text}"
    else:
        text = str(dec)
    return f"{text} {currency}" if currency else text

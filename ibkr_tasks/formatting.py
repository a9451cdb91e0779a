"""How numbers read wherever a person sees them: logs, artifacts, state messages, events.

One function decides, :func:`fmt`: plain digits (never ``1.25E+3``), thousands grouped
(``173,569.4``), no meaningless trailing zeros on quantities, two decimals at least on money, the
currency after the amount, a sign on a difference when asked, and for None one word for all:
``unknown`` (a caller that means something more precise says so: ``missing="pending"``).
Machine-read text (cOIDs, JSON payload fields) keeps the exact ``str(Decimal)``: :func:`exact`.

    >>> fmt(Decimal("1.25E+3"))
    '1,250'
    >>> fmt(Decimal("2336647.471"), "USD", money=True)
    '2,336,647.471 USD'
    >>> fmt(None, "USD", money=True)
    'unknown'
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["MISSING", "exact", "fmt", "money", "number", "signed"]

MISSING = "unknown"
"""What a missing value (None) reads as, unless the caller says otherwise."""

_CENT = Decimal("0.01")

Numeric = Decimal | int | float | str | None


def fmt(
    value: Numeric,
    currency: str | None = None,
    *,
    money: bool = False,
    sign: bool = False,
    group: bool = True,
    missing: str = MISSING,
) -> str:
    """``value`` as a person reads it.

    A quantity or price: ``1,250``, ``-3.5``, ``0.0001``. With ``money``: two decimals at least (more
    when they carry information), ``173,569.40``, ``3.155``, never ``-0.00``. With ``sign``: ``+2``
    for a positive difference. ``currency`` follows the amount. ``missing`` for None.
    """
    if value is None:
        return missing
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not dec.is_finite():
        text = str(dec)
    else:
        if dec == 0:
            dec = Decimal(0).quantize(_CENT) if money else Decimal(0)  # never "-0.00"
        exact_value = dec.normalize()
        if money:
            exponent = exact_value.as_tuple().exponent
            dec = exact_value if isinstance(exponent, int) and exponent < -2 else dec.quantize(_CENT)
        elif exact_value == exact_value.to_integral_value():
            dec = exact_value.quantize(Decimal(1))  # 1.25E+3 -> 1250 (normalize alone keeps the exponent)
        else:
            dec = exact_value
        text = format(dec, ",f" if group else "f")
        if sign and dec > 0:
            text = f"+{text}"
    return f"{text} {currency}" if currency else text


def exact(value: Decimal | None) -> str | None:
    """A decimal for machines (event payloads, JSON): its exact text, None kept as None."""
    return None if value is None else str(value)


# The names callers outside the reports still use; each is fmt with the None it always had.
def number(value: Numeric, *, group: bool = True, missing: str = "") -> str:
    """:func:`fmt` of a quantity or price; ``""`` for None unless ``missing`` says otherwise."""
    return fmt(value, group=group, missing=missing)


def signed(value: Decimal | int | None, *, missing: str = "") -> str:
    """:func:`fmt` of a difference with its sign: ``+2``, ``-1,000``, ``0``."""
    return fmt(value, sign=True, missing=missing)


def money(value: Numeric, currency: str | None = None, *, missing: str = MISSING, sign: bool = False) -> str:
    """:func:`fmt` of an amount: ``173,569.40 USD``, ``3.155 USD``, ``-12.00``."""
    return fmt(value, currency, money=True, sign=sign, missing=missing)

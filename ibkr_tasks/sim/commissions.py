"""The simulated broker's commission schedule (docs/simulator.md; loosely after IBKR Pro "fixed").

- USD stocks: 0.005 USD/share, min 1.00, max 1% of trade value
- CAD stocks: 0.01 CAD/share, min 1.00 CAD, max 0.5% of trade value
- EUR stocks: 0.05% of trade value, min 1.25 EUR
- options: 0.65/contract, min 1.00; futures: 0.85/contract; ForecastEx: 0.01/contract
- expiries (X) and netting (N): 0.00 (not priced here)

The commission currency is the instrument's currency.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from ibkr_tasks.sim.catalog import CENT, Instrument


def commission_for(inst: Instrument, size: Decimal, price: Decimal) -> Decimal:
    """Commission of one B/S execution under the schedule above."""
    value = size * price * inst.multiplier
    if inst.is_event:
        fee = size * Decimal("0.01")
    elif inst.sec_type == "OPT":
        fee = max(size * Decimal("0.65"), Decimal("1.00"))
    elif inst.sec_type == "FUT":
        fee = size * Decimal("0.85")
    elif inst.currency == "CAD":
        fee = min(
            max(size * Decimal("0.01"), Decimal("1.00")), max(value * Decimal("0.005"), Decimal("1.00"))
        )
    elif inst.currency == "EUR":
        fee = max(value * Decimal("0.0005"), Decimal("1.25"))
    else:
        fee = min(
            max(size * Decimal("0.005"), Decimal("1.00")), max(value * Decimal("0.01"), Decimal("1.00"))
        )
    return fee.quantize(CENT, rounding=ROUND_HALF_UP)

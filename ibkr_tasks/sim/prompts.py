"""Order reply prompts: which of IBKR's questions an order is asked, and their wording.

Only prompts that fit the order are asked: ``o354`` (no market data) any order, ``o10151`` (market
order risk) market orders, ``o163`` (price percentage) a limit more than 3 % from the last price,
``o403`` (will fill at once) a crossing limit, and the account's precautionary limits: ``o383`` a
quantity over the scenario's ``order_size_limit`` and ``o451`` a value estimate over its
``order_value_limit``, with the order's real value in the text. With prompts on
(``prompt_chain_max`` > 0) the limit prompts that fit are always asked and the others drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.formats import fmt_qty
from ibkr_tasks.sim.state import SimState, to_decimal

__all__ = [
    "LIMIT_PROMPTS",
    "PROMPTS",
    "OrderFacts",
    "fitting_prompts",
    "order_facts",
    "prompt_chain",
    "prompt_text",
]

# Reply prompts by message id, worded as IBKR words them (docs/ibkr-api.md#prompts): the ids and texts
# of IBKR's list of suppressible messages; o354 as captured; o10151 known only by its opening sentence
# (the rest is the simulator's, ending like the others). Placeholders: {order} ("BUY 650 AAPL
# NASDAQ.NMS"), {value} and {currency} (the order's value estimate), {size_limit}, {value_limit}.
ARE_YOU_SURE = "Are you sure you want to submit this order?"
PROMPTS: dict[str, str] = {
    "o163": 'The following order "{order}" price exceeds \nthe Percentage constraint of 3%.\n' + ARE_YOU_SURE,
    "o354": "You are submitting an order without market data. We strongly recommend against this as it may "
    "result in erroneous and unexpected trades.\n" + ARE_YOU_SURE,
    "o383": 'The following order "{order}" size exceeds the Size Limit of {size_limit}.\n' + ARE_YOU_SURE,
    "o403": "This order will most likely trigger and fill immediately.\n" + ARE_YOU_SURE,
    "o451": 'The following order "{order}" value estimate of {value} {currency} exceeds \nthe Total Value '
    "Limit of {value_limit} {currency}.\n" + ARE_YOU_SURE,
    "o10151": "A Market Order is an instruction to trade your order at any available price.\n" + ARE_YOU_SURE,
}
# The account's precautionary limits: IBKR asks these whenever the order exceeds them (not at random).
LIMIT_PROMPTS = ("o383", "o451")


@dataclass(frozen=True)
class OrderFacts:
    """What the prompts of an order depend on, at the simulator's now."""

    order_type: str
    limit: Decimal | None
    last: Decimal
    crosses: bool
    quantity: Decimal
    value: Decimal  # quantity x (limit, else last price) x multiplier, in the order's currency
    size_limit: Decimal
    value_limit: Decimal


def order_facts(st: SimState, ticket: dict[str, Any], inst: Instrument, qty: Decimal) -> OrderFacts:
    bid, ask, last = st.book.catalog.quote(inst, st.clock.now())
    limit = to_decimal(ticket.get("price")) if ticket.get("orderType") == "LMT" else None
    buy = ticket.get("side") == "BUY"
    return OrderFacts(
        order_type=str(ticket.get("orderType")),
        limit=limit,
        last=last,
        crosses=limit is not None and (limit >= ask if buy else limit <= bid),
        quantity=qty,
        value=qty * (limit if limit is not None else last) * inst.multiplier,
        size_limit=st.scenario.order_size_limit,
        value_limit=st.scenario.order_value_limit,
    )


def fitting_prompts(facts: OrderFacts) -> list[str]:
    """The prompts IBKR could ask about this order, in ``PROMPTS`` order: never a market-order
    question for a limit order, never a limit-price question for a market order, a limit question only
    when the order exceeds that limit."""
    limit, last = facts.limit, facts.last
    fits = {
        "o163": limit is not None and last > 0 and abs(limit - last) / last > Decimal("0.03"),
        "o354": True,
        "o383": facts.quantity > facts.size_limit,
        "o403": facts.order_type == "LMT" and facts.crosses,
        "o451": facts.value > facts.value_limit,
        "o10151": facts.order_type == "MKT",
    }
    return [mid for mid in PROMPTS if fits[mid]]


def prompt_chain(st: SimState, facts: OrderFacts) -> list[str]:
    """The message ids to ask, in order (empty when prompts are off: ``prompt_chain_max`` 0).

    The limit prompts that fit (``o383``, ``o451``) are always asked; the other fitting ones are drawn
    to make ``prompt_chain_min``..``prompt_chain_max`` prompts in all. Suppressed ids are never asked.
    Deterministic under the scenario seed (the ``orders`` random stream)."""
    q = st.quirks
    if not q.prompt_chain_max:
        return []
    rng = st.rng_orders
    hops = rng.randint(q.prompt_chain_min, q.prompt_chain_max)
    fitting = [m for m in fitting_prompts(facts) if m not in st.session.suppressed]
    required = [m for m in fitting if m in LIMIT_PROMPTS]
    optional = [m for m in fitting if m not in LIMIT_PROMPTS]
    rng.shuffle(optional)
    chain = required + optional[: max(0, hops - len(required))]
    rng.shuffle(chain)
    return chain


def _amount(value: Decimal) -> str:
    """An amount as IBKR prints it in prompts: thousands grouped, 2 decimals (``57,040.00``)."""
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"


def _limit(value: Decimal) -> str:
    """A limit as IBKR prints it in prompts: grouped, decimals only when it has some (``1,000,000``)."""
    return f"{int(value):,}" if value == value.to_integral_value() else _amount(value)


def prompt_text(message_id: str, ticket: dict[str, Any], inst: Instrument, facts: OrderFacts) -> str:
    """The text of ``message_id`` for this order, with its real value estimate and the account's limits."""
    return PROMPTS[message_id].format(
        order=f"{ticket.get('side')} {fmt_qty(facts.quantity)} {inst.symbol} {inst.exchange}",
        value=_amount(facts.value),
        currency=inst.currency,
        size_limit=_limit(facts.size_limit),
        value_limit=_limit(facts.value_limit),
    )

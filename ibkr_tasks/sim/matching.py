"""Order matching: API orders against the simulated market (quotes and size at the touch).

Market orders fill at once at the ask (buy) or bid (sell), in two executions when bigger than the
size at the touch; limit orders fill only when crossing, at most the size at the touch (a partial
fill; the rest stays ``Submitted`` and is tried again at every ``/sim/advance``). Each fill is an
execution carrying the order's cOID as ``order_ref``; buying an event contract nets the other outcome.
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal

from ibkr_tasks.sim.activity import netting, venue
from ibkr_tasks.sim.entities import Execution, Order
from ibkr_tasks.sim.journal import Journal


def try_fill(journal: Journal, order: Order, now: datetime, rng: random.Random) -> list[Execution]:
    """Fill what ``order`` can take at ``now``; its status becomes Filled or Submitted."""
    if not order.working or order.remaining <= 0:
        return []
    cat = journal.catalog
    inst = order.inst
    bid, ask, _ = cat.quote(inst, now)
    touch = cat.size_at_touch(inst, now)
    buy = order.side == "BUY"
    price = ask if buy else bid
    acct = journal.accounts[order.account_id]
    chunks: list[Decimal] = []
    if order.order_type == "MKT":
        rest = order.remaining
        first = min(rest, touch)
        chunks = [first] if first == rest else [first, rest - first]
    else:
        assert order.limit is not None
        crosses = order.limit >= ask if buy else order.limit <= bid
        if not crosses:
            order.status = "Submitted"
            return []
        chunks = [min(order.remaining, touch)]
    made: list[Execution] = []
    exch = venue(inst, None)
    for size in chunks:
        ex = journal.record(
            acct, inst, "B" if buy else "S", size, price, now, exch, order.coid, order.order_id, rng
        )
        made.append(ex)
        order.filled += size
        order.value += size * price
        order.last_exec = ex.trade_time
        order.executions.append(ex)
        if buy:
            made.extend(netting(journal, acct, inst, size, now, rng))
    order.status = "Filled" if order.remaining <= 0 else "Submitted"
    return made

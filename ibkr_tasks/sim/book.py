"""The simulated brokerage as a whole: the :class:`Book` behind ``SimState.book``.

It builds the login (catalogue, accounts, opening book, history; :mod:`accounts`, :mod:`activity`),
keeps the records (:class:`~ibkr_tasks.sim.journal.Journal`, which it is), fills orders
(:mod:`matching`), releases late data (:mod:`late_data`) and lets time pass (:meth:`Book.advance`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from ibkr_tasks.sim import late_data, matching, trade_rows
from ibkr_tasks.sim.accounts import build_accounts
from ibkr_tasks.sim.activity import Activity
from ibkr_tasks.sim.catalog import Catalog
from ibkr_tasks.sim.entities import Execution, JunkRow, Order
from ibkr_tasks.sim.journal import Journal
from ibkr_tasks.sim.scenario import Scenario

__all__ = ["Book", "Execution", "JunkRow", "Order"]


class Book(Journal):
    """The brokerage model behind the API. All randomness comes from ``random.Random`` seeded streams."""

    def __init__(self, scenario: Scenario, start: datetime) -> None:
        start = start.replace(microsecond=0)
        synth = max(0, scenario.positions_per_account + 20 - 7)
        super().__init__(scenario, start, Catalog(scenario.seed, start.date(), synth))
        self._rng_live = random.Random(f"{scenario.seed}|live")
        self.accounts.update(build_accounts(scenario, self.catalog, self.start.date()))
        self._activity = Activity(self)
        self._activity.history()
        self.warm(self.start)

    def warm(self, now: datetime) -> None:
        """Pre-join the trades JSON of the last 7 days of every account (startup and /sim/advance), so
        a trades request only streams ready segments."""
        for acct in self.accounts.values():
            trade_rows.warm(acct, now)

    def try_fill(self, order: Order, now: datetime) -> list[Execution]:
        """Fill ``order`` against the simulated market at ``now`` (:func:`matching.try_fill`)."""
        return matching.try_fill(self, order, now, self._rng_live)

    def expose(self, shown: Iterable[Execution]) -> None:
        """Rows an earlier trades response showed move one stage on (:func:`late_data.expose`)."""
        late_data.expose(self, shown)

    def finalise_all(self, before: datetime | None = None) -> None:
        """Everything pending (traded before ``before``, if given) reaches its final state."""
        late_data.finalise_all(self, before)

    def advance(self, start: datetime, end: datetime) -> None:
        """Generate the activity of ``[start, end)`` for every account, fill crossing limit orders at
        ``end``, then finalise the pending commissions and publish the pending corrections of fills
        traded before ``start`` (the new period's own late data stays pending until shown)."""
        self._activity.period(start, end)
        span = (end - start).total_seconds()
        at = end - timedelta(seconds=1) if span >= 1 else end
        for acct in self.accounts.values():
            for order in acct.orders.values():
                if order.working:
                    self.try_fill(order, at)
        self.finalise_all(before=start)  # the new period's fills keep their late commissions etc.
        self.warm(end)

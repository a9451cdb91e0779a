"""The journal of the simulated broker: every execution it records, and the accounts it moves.

Recording an execution (:meth:`Journal.record`) prices its commission under the schedule (with the
late/changed commission stages and the pending correction the quirks ask for), moves the account's
position and cash, and publishes the row. Positions therefore always follow from the opening book
plus every non-superseded execution, and the ground truth reads the same objects the API payloads are
rendered from. Executions whose row will still change are kept in ``pending`` for
:mod:`ibkr_tasks.sim.late_data`. Ids (execution ids, order ids, UUIDs) come from seeded streams.
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal

from ibkr_tasks.sim import trade_rows
from ibkr_tasks.sim.catalog import CENT, Catalog, Instrument
from ibkr_tasks.sim.commissions import commission_for
from ibkr_tasks.sim.entities import Account, Execution, JunkRow, Pos
from ibkr_tasks.sim.scenario import Quirks, Scenario


class Journal:
    """Accounts, executions and the pending late data; all randomness from seeded ``random.Random``."""

    def __init__(self, scenario: Scenario, start: datetime, catalog: Catalog) -> None:
        self.scenario = scenario
        self.quirks: Quirks = scenario.quirks
        self.start = start.replace(microsecond=0)
        self.catalog = catalog
        self._rng_ids = random.Random(f"{scenario.seed}|ids")
        self._exec_counter = 0x0000E000 + self._rng_ids.randint(0, 0xFFF)
        self._order_counter = 1_370_000_000 + self._rng_ids.randint(0, 99_999)
        self.accounts: dict[str, Account] = {}
        self.executions: dict[str, Execution] = {}
        # executions whose row will still change; a dict as an insertion-ordered set, so the order in
        # which late data is released never depends on object ids (determinism across processes)
        self.pending: dict[Execution, None] = {}
        # Pending executions a trades response has shown: they move one stage on at the next one.
        self.shown: set[Execution] = set()

    # ------------------------------------------------------------------ ids
    def _next_exec_id(self, when: datetime) -> str:
        self._exec_counter += 1
        return f"{self._exec_counter & 0xFFFFFFFF:08x}.{int(when.timestamp()) & 0xFFFFFFFF:08x}.01.01"

    def next_order_id(self) -> int:
        self._order_counter += 1
        return self._order_counter

    def uuid(self, rng: random.Random | None = None) -> str:
        h = f"{(rng or self._rng_ids).getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    # ------------------------------------------------------------------ recording
    def record(
        self,
        acct: Account,
        inst: Instrument,
        side: str,
        size: Decimal,
        price: Decimal,
        when: datetime,
        exchange: str,
        order_ref: str | None,
        order_id: int | None,
        rng: random.Random,
    ) -> Execution:
        """Record one execution: commission stages, a pending correction, position, cash, its row."""
        when = when.replace(microsecond=0)
        q = self.quirks
        if side in ("B", "S"):
            final = commission_for(inst, size, price)
            stages: list[Decimal | None] = [final]
            if q.changed_commission and rng.random() < q.changed_commission:
                stages = [final, (final + Decimal(rng.randint(1, 25)) / 100).quantize(CENT)]
            if q.late_commissions and rng.random() < q.late_commissions:
                stages.insert(0, None)
        else:
            stages = [Decimal("0.00")]
        ex = Execution(
            self._next_exec_id(when),
            acct.account_id,
            inst,
            side,
            size,
            price,
            when,
            exchange,
            order_ref,
            order_id,
            stages,
        )
        if side in ("B", "S") and q.corrections and rng.random() < q.corrections:
            fix = price + inst.tick if rng.random() < 0.5 else max(price - inst.tick, inst.tick)
            ex.correction = Execution(
                ex.execution_id[:-2] + "02",
                acct.account_id,
                inst,
                side,
                size,
                fix,
                when,
                exchange,
                order_ref,
                order_id,
                [stages[-1]],
            )
        acct.apply(ex)
        self.publish(acct, ex)
        return ex

    def publish(self, acct: Account, entry: Execution | JunkRow) -> None:
        """Show a row in the account's trades payload from now on (and in the truth, if an execution)."""
        trade_rows.insert(acct, entry)
        if isinstance(entry, Execution):
            self.executions[entry.execution_id] = entry
            if entry.pending:
                self.pending[entry] = None

    # ------------------------------------------------------------------ views
    def trading_accounts(self) -> list[Account]:
        return [a for a in self.accounts.values() if a.trading]

    def default_account(self) -> str:
        """The account a new brokerage session selects: the FA master, else the first trading account."""
        master = next((a.account_id for a in self.accounts.values() if a.kind == "master"), None)
        return master or next((a.account_id for a in self.trading_accounts()), next(iter(self.accounts)))

    def open_positions(self, acct: Account) -> list[tuple[Instrument, Pos]]:
        cat = self.catalog.by_conid
        return [(cat[c], p) for c, p in acct.positions.items() if p.qty != 0]

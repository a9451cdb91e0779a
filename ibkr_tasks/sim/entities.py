"""The brokerage's entities: accounts with their positions and cash, executions, junk rows, orders.

Plain data with the little arithmetic that belongs to it: an account moves its position and cash for
an execution (:meth:`Account.apply`) and for the price of a correction (:meth:`Account.reprice`).
Contracts are :class:`ibkr_tasks.sim.catalog.Instrument`. Each account keeps its trade rows (executions
and junk rows) sorted by time; :mod:`ibkr_tasks.sim.trade_rows` maintains that index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ibkr_tasks.sim.catalog import Instrument

ZERO = Decimal(0)


@dataclass(slots=True, eq=False)
class Execution:
    """One execution report (a row of /iserver/account/trades)."""

    execution_id: str
    account_id: str
    inst: Instrument
    side: str  # B S X N
    size: Decimal
    price: Decimal
    trade_time: datetime
    exchange: str
    order_ref: str | None
    order_id: int | None
    commission_stages: list[Decimal | None]
    stage: int = 0
    superseded: bool = False
    correction: Execution | None = None  # a pending .02 not yet published
    row: bytes | None = None  # cached JSON of the current row

    @property
    def commission(self) -> Decimal | None:
        return self.commission_stages[self.stage]

    @property
    def final_commission(self) -> Decimal:
        return self.commission_stages[-1] or ZERO

    @property
    def net_amount(self) -> Decimal:
        return self.size * self.price * self.inst.multiplier

    @property
    def signed_size(self) -> Decimal:
        return self.size if self.side == "B" else -self.size

    @property
    def pending(self) -> bool:
        """True while something about this row will still change (commission stage, correction)."""
        return self.stage < len(self.commission_stages) - 1 or self.correction is not None


@dataclass(slots=True, eq=False)
class JunkRow:
    """A malformed trades row: shown in the payload, never applied to positions."""

    account_id: str
    trade_time: datetime
    raw: dict[str, Any]
    row: bytes | None = None


@dataclass(slots=True)
class Pos:
    """A holding: quantity and total cost (currency units, multiplier included)."""

    qty: Decimal = ZERO
    cost: Decimal = ZERO


@dataclass(slots=True, eq=False)
class Order:
    """An order placed through the API."""

    order_id: int
    account_id: str
    inst: Instrument
    side: str  # BUY | SELL
    order_type: str  # MKT | LMT
    quantity: Decimal
    limit: Decimal | None
    tif: str
    coid: str | None
    created: datetime
    epoch: int
    status: str = "PreSubmitted"
    filled: Decimal = ZERO
    value: Decimal = ZERO  # sum of size * price of fills
    last_exec: datetime | None = None
    executions: list[Execution] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def avg_price(self) -> Decimal | None:
        return (self.value / self.filled) if self.filled else None

    @property
    def working(self) -> bool:
        return self.status in {"PreSubmitted", "Submitted", "PendingSubmit"}


@dataclass(slots=True, eq=False)
class Account:
    """One account of the login: holdings, cash per currency, trade rows and orders."""

    account_id: str
    kind: str  # paper | live | master
    faclient: bool = False
    currency: str = "USD"
    positions: dict[int, Pos] = field(default_factory=dict)
    cash: dict[str, Decimal] = field(default_factory=dict)
    entries: list[Execution | JunkRow] = field(default_factory=list)  # trade rows, by trade time
    times: list[float] = field(default_factory=list)  # epoch seconds of ``entries``
    junk: list[JunkRow] = field(default_factory=list)
    orders: dict[int, Order] = field(default_factory=dict)
    conids: list[int] = field(default_factory=list)  # every conid ever held, in first-seen order
    day_versions: dict[int, int] = field(default_factory=dict)  # UTC day ordinal -> change counter
    day_rows: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # day -> (version, joined rows)

    @property
    def trading(self) -> bool:
        return self.kind != "master"

    def hold(self, inst: Instrument, qty: Decimal, cost: Decimal) -> None:
        """An opening holding."""
        self.positions[inst.conid] = Pos(qty, cost)
        self.conids.append(inst.conid)

    def apply(self, ex: Execution) -> None:
        """Move position, cost basis and cash for one execution (its final commission included)."""
        pos = self.positions.get(ex.inst.conid)
        if pos is None:
            pos = self.positions[ex.inst.conid] = Pos()
            self.conids.append(ex.inst.conid)
        delta = ex.signed_size
        mult = ex.inst.multiplier
        if pos.qty == 0 or (pos.qty > 0) == (delta > 0):
            pos.cost += delta * ex.price * mult
        else:
            closing = min(abs(delta), abs(pos.qty))
            pos.cost -= pos.cost * closing / abs(pos.qty)
            rest = abs(delta) - closing
            if rest:
                pos.cost = (rest if delta > 0 else -rest) * ex.price * mult
        pos.qty += delta
        if pos.qty == 0:
            pos.cost = ZERO
        ccy = ex.inst.currency
        amount = ex.net_amount
        if ex.side == "B":
            self.cash[ccy] = self.cash.get(ccy, ZERO) - amount
        elif ex.side in ("S", "N"):
            self.cash[ccy] = self.cash.get(ccy, ZERO) + amount
        self.cash[ccy] -= ex.final_commission

    def reprice(self, ex: Execution, price: Decimal) -> None:
        """A price-only correction of ``ex``: cash and cost basis move by the price difference."""
        diff = (price - ex.price) * ex.size * ex.inst.multiplier
        pos = self.positions.get(ex.inst.conid)
        if pos is not None and pos.qty != 0:
            pos.cost += diff if ex.side == "B" else -diff
        ccy = ex.inst.currency
        self.cash[ccy] += -diff if ex.side == "B" else diff

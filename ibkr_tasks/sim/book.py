"""The simulated brokerage: accounts, executions, positions, cash and orders.

Positions always follow from an opening book plus every non-superseded execution; the ground truth
endpoint reads the same objects the API payloads are rendered from. Each account keeps its own
time-sorted list of trade rows (executions and junk rows) so a trades request only slices lists.

Commission schedule (documented in docs/simulator.md; loosely after IBKR Pro "fixed"):
- USD stocks: 0.005 USD/share, min 1.00, max 1% of trade value
- CAD stocks: 0.01 CAD/share, min 1.00 CAD, max 0.5% of trade value
- EUR stocks: 0.05% of trade value, min 1.25 EUR
- options: 0.65/contract, min 1.00; futures: 0.85/contract; ForecastEx: 0.01/contract
- expiries (X) and netting (N): 0.00
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ibkr_tasks.sim.catalog import CENT, Catalog, Instrument
from ibkr_tasks.sim.scenario import Scenario

ZERO = Decimal(0)


def commission_for(inst: Instrument, size: Decimal, price: Decimal) -> Decimal:
    """Commission of one B/S execution under the simulator's schedule (see the module docstring)."""
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
    """One account of the login."""

    account_id: str
    kind: str  # paper | live | master
    faclient: bool = False
    currency: str = "USD"
    positions: dict[int, Pos] = field(default_factory=dict)
    cash: dict[str, Decimal] = field(default_factory=dict)
    entries: list[Execution | JunkRow] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    junk: list[JunkRow] = field(default_factory=list)
    orders: dict[int, Order] = field(default_factory=dict)
    conids: list[int] = field(default_factory=list)  # every conid ever held, in first-seen order
    day_versions: dict[int, int] = field(default_factory=dict)  # UTC day ordinal -> change counter
    day_rows: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # day -> (version, joined rows)

    def touch(self, when: datetime) -> None:
        """A trades row of day ``when`` changed: its cached JSON segment must be rebuilt."""
        day = when.toordinal()
        self.day_versions[day] = self.day_versions.get(day, 0) + 1

    def day_segment(self, day: int) -> bytes:
        """The JSON rows (comma-joined, newest first) traded on UTC day ``day`` (a date ordinal)."""
        version = self.day_versions.get(day, 0)
        cached = self.day_rows.get(day)
        if cached is not None and cached[0] == version:
            return cached[1]
        start = datetime.combine(date.fromordinal(day), time(0), tzinfo=UTC).timestamp()
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_left(self.times, start + 86400)
        joined = b",".join([e.row or b"" for e in reversed(self.entries[lo:hi])])
        self.day_rows[day] = (version, joined)
        return joined

    @property
    def trading(self) -> bool:
        return self.kind != "master"


class Book:
    """The brokerage model behind the API. All randomness comes from ``random.Random`` seeded streams."""

    def __init__(self, scenario: Scenario, start: datetime) -> None:
        self.scenario = scenario
        self.quirks = scenario.quirks
        self.start = start.replace(microsecond=0)
        seed = scenario.seed
        synth = max(0, scenario.positions_per_account + 20 - 7)
        self.catalog = Catalog(seed, self.start.date(), synth)
        self._rng_ids = random.Random(f"{seed}|ids")
        self._rng_live = random.Random(f"{seed}|live")
        self._exec_counter = 0x0000E000 + self._rng_ids.randint(0, 0xFFF)
        self._order_counter = 1_370_000_000 + self._rng_ids.randint(0, 99_999)
        self.accounts: dict[str, Account] = {}
        self.executions: dict[str, Execution] = {}
        # executions whose row will still change; a dict as an insertion-ordered set, so the order in
        # which late data is released never depends on object ids (determinism across processes)
        self.pending: dict[Execution, None] = {}
        # Pending executions a trades response has shown: they move one stage on at the next one.
        self.shown: set[Execution] = set()
        self._junk_rngs: dict[str, random.Random] = {}
        self._far_expiry = self.start.date() + timedelta(days=30)
        self._build_accounts()
        self._history()
        self.warm(self.start)

    def warm(self, now: datetime) -> None:
        """Pre-join the trades JSON of the last 7 days of every account (startup and /sim/advance), so
        a trades request only streams ready segments."""
        today = now.toordinal()
        for acct in self.accounts.values():
            for day in range(today - 6, today + 1):
                acct.day_segment(day)

    # ------------------------------------------------------------------ accounts and opening book
    def _build_accounts(self) -> None:
        sc = self.scenario
        rng = random.Random(f"{sc.seed}|accounts")
        used: set[str] = set()

        def new_id(prefix: str, letter: bool) -> str:
            while True:
                if letter:
                    ident = f"{prefix}{rng.choice('HMOPQRTVWXZ')}{rng.randint(100000, 999999)}"
                else:
                    ident = f"{prefix}{rng.randint(1000000, 9999999)}"
                if ident not in used:
                    used.add(ident)
                    return ident

        if sc.fa:
            master = new_id("DF", False)
            self.accounts[master] = Account(master, "master")
        for n in range(sc.accounts):
            ident = new_id("DU", letter=(n % 2 == 1))
            self.accounts[ident] = Account(ident, "paper", faclient=sc.fa)
        if sc.live_account:
            ident = new_id("U", False)
            self.accounts[ident] = Account(ident, "live")
        for acct in self.accounts.values():
            acct.cash = {"USD": sc.opening_cash} if acct.trading else {"USD": ZERO}
            if acct.trading:
                acct.cash.update({"CAD": ZERO, "EUR": ZERO})
                self._opening_book(acct)

    def _opening_book(self, acct: Account) -> None:
        n = self.scenario.positions_per_account
        if n == 0:
            return
        rng = random.Random(f"{self.scenario.seed}|book|{acct.account_id}")
        cat = self.catalog
        special: list[Instrument] = []
        today = self.start.date()
        series = {d: [o for o in cat.options if o.expiry == today + timedelta(days=d)] for d in (-1, 1, 30)}
        if self.quirks.option_expiries:
            # one option that expires inside the history (X rows already there), one that expires
            # tomorrow (X rows after an /sim/advance)
            first = series[-1] if self.scenario.history_days >= 2 else series[30]
            special.append(rng.choice(first))
            special.append(rng.choice(series[1]))
        else:
            # without expiry processing, hold nothing that expires during a run
            special.extend(rng.sample(series[30], 2))
        special.append(cat.events[0])  # a YES holding, so buying NO nets it
        special.append(cat.futures[0])
        special.append(cat.by_conid[195014116])
        special.append(cat.by_conid[14204])
        chosen: list[Instrument] = special[:n]
        taken = {i.conid for i in chosen}
        pool = [s for s in cat.stocks if s.conid not in taken]
        chosen.extend(rng.sample(pool, max(0, min(n - len(chosen), len(pool)))))
        for inst in chosen:
            qty = self._random_size(inst, rng, opening=True)
            if inst.sec_type == "STK" and rng.random() < 0.05:
                qty = -qty
            avg = inst.base_price * Decimal(str(round(rng.uniform(0.8, 1.2), 4)))
            avg = max(Catalog._round(avg, inst.tick), inst.tick)
            acct.positions[inst.conid] = Pos(qty, qty * avg * inst.multiplier)
            acct.conids.append(inst.conid)

    def _random_size(self, inst: Instrument, rng: random.Random, opening: bool = False) -> Decimal:
        if inst.is_event:
            return Decimal(rng.randint(10, 200) if opening else rng.randint(1, 40))
        if inst.sec_type == "OPT":
            return Decimal(rng.randint(1, 10))
        if inst.sec_type == "FUT":
            return Decimal(rng.randint(1, 3))
        if not opening and inst.currency == "USD" and rng.random() < 0.05:
            return Decimal("0.5")
        return Decimal(rng.randint(1, 1000) if opening else rng.randint(1, 200))

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

    # ------------------------------------------------------------------ history and activity
    def _history(self) -> None:
        sc = self.scenario
        midnight = datetime.combine(self.start.date(), time(0), tzinfo=UTC)
        for acct in self.accounts.values():
            if not acct.trading:
                continue
            rng = random.Random(f"{sc.seed}|hist|{acct.account_id}")
            for d in range(sc.history_days - 1, -1, -1):
                day_start = midnight - timedelta(days=d)
                day_end = min(day_start + timedelta(days=1), self.start)
                self.activity(acct, day_start, day_end, sc.fills_per_account_per_day, rng)

    def activity(
        self, acct: Account, start: datetime, end: datetime, count: int, rng: random.Random
    ) -> list[Execution]:
        """Generate ``count`` fills (plus expiries, netting, junk) for ``acct`` in ``[start, end)``."""
        span = int((end - start).total_seconds())
        made: list[Execution] = []
        if span <= 0:
            return made
        events: list[tuple[datetime, str, Instrument | None]] = []
        for sec in sorted(rng.randrange(span) for _ in range(count)):
            events.append((start + timedelta(seconds=sec), "fill", None))
        if self.quirks.option_expiries:
            day = start.date()
            while datetime.combine(day, time(0), tzinfo=UTC) < end:
                at = datetime.combine(day, time(20, 30), tzinfo=UTC)
                if start <= at < end:
                    for conid, pos in list(acct.positions.items()):
                        inst = self.catalog.by_conid[conid]
                        if (
                            inst.sec_type == "OPT"
                            and not inst.is_event
                            and inst.expiry == day
                            and pos.qty > 0
                        ):
                            events.append((at, "expire", inst))
                day += timedelta(days=1)
        events.sort(key=lambda e: (e[0], e[1] != "fill"))
        for when, kind, expiring in events:
            if kind == "expire":
                assert expiring is not None
                held = acct.positions.get(expiring.conid)
                if held is not None and held.qty > 0:
                    made.append(
                        self._record(acct, expiring, "X", held.qty, ZERO, when, "OCC", None, None, rng)
                    )
                continue
            made.extend(self._random_fill(acct, when, rng))
        return made

    def _tradeable(self, inst: Instrument, when: datetime) -> bool:
        return inst.expiry is None or inst.expiry > when.date()

    def _random_fill(self, acct: Account, when: datetime, rng: random.Random) -> list[Execution]:
        cat = self.catalog
        held = acct.conids
        if held and rng.random() < 0.8:
            inst = cat.by_conid[rng.choice(held)]
        else:
            pick = rng.random()
            if pick < 0.7:
                inst = rng.choice(cat.stocks)
            elif pick < 0.85:
                inst = rng.choice(cat.options)
            elif pick < 0.93:
                inst = rng.choice(cat.events)
            else:
                inst = rng.choice(cat.futures)
        if not self._tradeable(inst, when):
            inst = rng.choice(cat.stocks)
        size = self._random_size(inst, rng)
        if inst.is_event:
            side = "B"
            if rng.random() < 0.5 and inst.pair_conid is not None:
                inst = cat.by_conid[inst.pair_conid]
        else:
            side = rng.choice("BS")
        if inst.sec_type == "OPT" and not inst.is_event:
            if not self.quirks.option_expiries and inst.expiry != self._far_expiry:
                # nothing expires during a run when expiries are not processed
                inst = next(o for o in cat.options if o.expiry == self._far_expiry and o.right == inst.right)
            holding = acct.positions.get(inst.conid)
            have = holding.qty if holding is not None else ZERO
            if side == "S" and have < size:
                # options are only sold to close here, so every holding expires long (side X)
                if have > 0:
                    size = have
                else:
                    side = "B"
        bid, ask, _ = cat.quote(inst, when)
        price = ask if side == "B" else bid
        order_ref = self.uuid(rng) if rng.random() < 0.5 else None
        order_id = self.next_order_id()
        exch = _venue(inst, rng)
        execs = [self._record(acct, inst, side, size, price, when, exch, order_ref, order_id, rng)]
        execs.extend(self._netting(acct, inst, size, when, rng))
        if self.quirks.malformed_ratio:
            # its own random stream: the same seed gives the same fills with or without junk rows
            junk_rng = self._junk_rngs.setdefault(
                acct.account_id, random.Random(f"{self.scenario.seed}|junk|{acct.account_id}")
            )
            if junk_rng.random() < self.quirks.malformed_ratio:
                self._junk(acct, execs[0], junk_rng)
        return execs

    def _netting(
        self, acct: Account, inst: Instrument, bought: Decimal, when: datetime, rng: random.Random
    ) -> list[Execution]:
        """ForecastEx: buying NO while long YES (or the reverse) nets both (docs/ibkr-api.md#event-contracts)."""
        if not (self.quirks.event_netting and inst.is_event and inst.pair_conid is not None):
            return []
        pair = self.catalog.by_conid[inst.pair_conid]
        held = acct.positions.get(pair.conid)
        if held is None or held.qty <= 0:
            return []
        qty = min(bought, held.qty)
        out = []
        for leg in (pair, inst):
            px = self.catalog.mid(leg, when)
            out.append(self._record(acct, leg, "N", qty, px, when, "FORECASTX", None, None, rng))
        return out

    # ------------------------------------------------------------------ recording executions
    def _record(
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
        self._apply(acct, ex)
        self._publish(acct, ex)
        return ex

    def _publish(self, acct: Account, entry: Execution | JunkRow) -> None:
        ts = entry.trade_time.timestamp()
        idx = bisect.bisect_right(acct.times, ts)
        acct.times.insert(idx, ts)
        acct.entries.insert(idx, entry)
        encode_row(entry)
        acct.touch(entry.trade_time)
        if isinstance(entry, Execution):
            self.executions[entry.execution_id] = entry
            if entry.pending:
                self.pending[entry] = None

    def _apply(self, acct: Account, ex: Execution) -> None:
        """Move position and cash for one execution."""
        pos = acct.positions.get(ex.inst.conid)
        if pos is None:
            pos = acct.positions[ex.inst.conid] = Pos()
            acct.conids.append(ex.inst.conid)
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
            acct.cash[ccy] = acct.cash.get(ccy, ZERO) - amount
        elif ex.side in ("S", "N"):
            acct.cash[ccy] = acct.cash.get(ccy, ZERO) + amount
        acct.cash[ccy] -= ex.commission_stages[-1] or ZERO

    def _junk(self, acct: Account, like: Execution, rng: random.Random) -> None:
        from ibkr_tasks.sim.render import trade_row

        raw = trade_row(like)
        raw = dict(raw)
        # an id outside the real counter's range, so junk never shifts the ids of real executions
        raw["execution_id"] = f"ffff{rng.getrandbits(16):04x}.{int(like.trade_time.timestamp()):08x}.01.01"
        variant = rng.randrange(5)
        if variant == 0:
            del raw["execution_id"]
        elif variant == 1:
            raw["price"] = "abc"
            raw["size"] = "n/a"
        elif variant == 2:
            raw.pop("account", None)
            raw.pop("accountCode", None)
            raw.pop("account_allocation_name", None)
        elif variant == 3:
            raw["conid"] = "garbage"
            raw["execution_id"] = "not-an-execution-id"
        else:
            raw["trade_time"] = "00000000-99:99:99"
            raw["trade_time_r"] = None
            raw["net_amount"] = "1.2.3"
        junk = JunkRow(acct.account_id, like.trade_time, raw)
        acct.junk.append(junk)
        self._publish(acct, junk)

    # ------------------------------------------------------------------ exposure (late data)
    def expose(self, shown: list[Execution]) -> None:
        """Rows an earlier trades response showed move one stage on: commissions, then corrections."""
        for ex in shown:
            if ex in self.pending:
                self._step(ex)

    def finalise_all(self, before: datetime | None = None) -> None:
        """Everything pending (traded before ``before``, if given) reaches its final state."""
        for ex in list(self.pending):
            if before is not None and ex.trade_time >= before:
                continue
            ex.stage = len(ex.commission_stages) - 1
            encode_row(ex)
            self.accounts[ex.account_id].touch(ex.trade_time)
            self._release_correction(ex)
            self.pending.pop(ex, None)
            self.shown.discard(ex)

    def _step(self, ex: Execution) -> None:
        if ex.stage < len(ex.commission_stages) - 1:
            ex.stage += 1
            encode_row(ex)
            self.accounts[ex.account_id].touch(ex.trade_time)
        else:
            self._release_correction(ex)
        if not ex.pending:
            self.pending.pop(ex, None)
            self.shown.discard(ex)

    def _release_correction(self, ex: Execution) -> None:
        fix = ex.correction
        if fix is None:
            return
        ex.correction = None
        ex.superseded = True
        acct = self.accounts[ex.account_id]
        self._publish(acct, fix)
        # price-only correction: cash and cost basis move by the price difference
        diff = (fix.price - ex.price) * ex.size * ex.inst.multiplier
        pos = acct.positions.get(ex.inst.conid)
        if pos is not None and pos.qty != 0:
            pos.cost += diff if ex.side == "B" else -diff
        ccy = ex.inst.currency
        acct.cash[ccy] += -diff if ex.side == "B" else diff

    # ------------------------------------------------------------------ orders
    def try_fill(self, order: Order, now: datetime) -> list[Execution]:
        """Fill ``order`` against the simulated market at ``now``: market orders at once (in two
        executions when larger than the size at the touch), limits only when crossing and at most the
        size at the touch (partial fills; the rest waits for a later /sim/advance)."""
        if not order.working or order.remaining <= 0:
            return []
        cat = self.catalog
        inst = order.inst
        bid, ask, _ = cat.quote(inst, now)
        touch = cat.size_at_touch(inst, now)
        buy = order.side == "BUY"
        price = ask if buy else bid
        acct = self.accounts[order.account_id]
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
        exch = _venue(inst, None)
        for size in chunks:
            ex = self._record(
                acct,
                inst,
                "B" if buy else "S",
                size,
                price,
                now,
                exch,
                order.coid,
                order.order_id,
                self._rng_live,
            )
            made.append(ex)
            order.filled += size
            order.value += size * price
            order.last_exec = ex.trade_time
            order.executions.append(ex)
            if buy:
                made.extend(self._netting(acct, inst, size, now, self._rng_live))
        order.status = "Filled" if order.remaining <= 0 else "Submitted"
        return made

    # ------------------------------------------------------------------ time passing
    def advance(self, start: datetime, end: datetime) -> None:
        """Generate the activity of ``[start, end)`` for every account, fill crossing limit orders at
        ``end``, then finalise the pending commissions and publish the pending corrections of fills
        traded before ``start`` (the new period's own late data stays pending until shown)."""
        sc = self.scenario
        span = (end - start).total_seconds()
        if span > 0:
            for acct in self.accounts.values():
                if not acct.trading:
                    continue
                rng = random.Random(f"{sc.seed}|adv|{acct.account_id}|{int(start.timestamp())}")
                expected = sc.fills_per_account_per_day * span / 86400
                count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
                self.activity(acct, start, end, count, rng)
        at = end - timedelta(seconds=1) if span >= 1 else end
        for acct in self.accounts.values():
            for order in acct.orders.values():
                if order.working:
                    self.try_fill(order, at)
        self.finalise_all(before=start)  # the new period's fills keep their late commissions etc.
        self.warm(end)

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

    def today(self, now: datetime) -> date:
        return now.date()


def encode_row(entry: Execution | JunkRow) -> None:
    """Render and cache the JSON of a trades row now, so a trades request only joins bytes."""
    from ibkr_tasks.sim.render import dumps, trade_row  # render imports this module

    entry.row = dumps(trade_row(entry) if isinstance(entry, Execution) else entry.raw)


_VENUES = {
    "STK": ("ISLAND", "IEX", "NYSE", "ARCA", "IBKR", "BATS"),
    "OPT": ("CBOE", "ISE", "PHLX", "AMEX"),
    "FUT": ("CME",),
}


def _venue(inst: Instrument, rng: random.Random | None) -> str:
    """Where an execution happened: the event exchange, the home exchange abroad, a US venue otherwise."""
    if inst.is_event:
        return "FORECASTX"
    if inst.sec_type == "STK" and inst.currency != "USD":
        return inst.exchange
    venues = _VENUES[inst.sec_type]
    return venues[0] if rng is None else rng.choice(venues)

"""Generated trading activity: the history before the start and what happens during ``/sim/advance``.

``fills_per_account_per_day`` random fills per account and day (mostly in what the account holds,
options sold only to close), long options expiring at 20:30 UTC on their expiry day (side X, with
``option_expiries``), ForecastEx YES/NO netting (side N, with ``event_netting``) and junk rows
(``malformed_ratio``, from a stream of their own so the same seed gives the same fills with or
without them). Each account and period draws from its own seeded stream.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from ibkr_tasks.sim.accounts import random_size
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.entities import ZERO, Account, Execution, JunkRow
from ibkr_tasks.sim.journal import Journal
from ibkr_tasks.sim.trade_rows import malformed_row

_VENUES = {
    "STK": ("ISLAND", "IEX", "NYSE", "ARCA", "IBKR", "BATS"),
    "OPT": ("CBOE", "ISE", "PHLX", "AMEX"),
    "FUT": ("CME",),
}


def venue(inst: Instrument, rng: random.Random | None) -> str:
    """Where an execution happened: the event exchange, the home exchange abroad, a US venue otherwise."""
    if inst.is_event:
        return "FORECASTX"
    if inst.sec_type == "STK" and inst.currency != "USD":
        return inst.exchange
    venues = _VENUES[inst.sec_type]
    return venues[0] if rng is None else rng.choice(venues)


def netting(
    journal: Journal, acct: Account, inst: Instrument, bought: Decimal, when: datetime, rng: random.Random
) -> list[Execution]:
    """ForecastEx: buying NO while long YES (or the reverse) nets both (docs/ibkr-api.md#event-contracts)."""
    if not (journal.quirks.event_netting and inst.is_event and inst.pair_conid is not None):
        return []
    pair = journal.catalog.by_conid[inst.pair_conid]
    held = acct.positions.get(pair.conid)
    if held is None or held.qty <= 0:
        return []
    qty = min(bought, held.qty)
    out = []
    for leg in (pair, inst):
        px = journal.catalog.mid(leg, when)
        out.append(journal.record(acct, leg, "N", qty, px, when, "FORECASTX", None, None, rng))
    return out


class Activity:
    """Generates the fills, expiries, netting and junk rows of the accounts of a journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._junk_rngs: dict[str, random.Random] = {}
        self._far_expiry = journal.start.date() + timedelta(days=30)

    def history(self) -> None:
        """``history_days`` UTC calendar days of activity up to the start (today until the start time)."""
        j = self.journal
        sc = j.scenario
        midnight = datetime.combine(j.start.date(), time(0), tzinfo=UTC)
        for acct in j.accounts.values():
            if not acct.trading:
                continue
            rng = random.Random(f"{sc.seed}|hist|{acct.account_id}")
            for d in range(sc.history_days - 1, -1, -1):
                day_start = midnight - timedelta(days=d)
                day_end = min(day_start + timedelta(days=1), j.start)
                self.generate(acct, day_start, day_end, sc.fills_per_account_per_day, rng)

    def period(self, start: datetime, end: datetime) -> None:
        """The activity of ``[start, end)`` for every trading account (the daily rate, pro rata)."""
        j = self.journal
        sc = j.scenario
        span = (end - start).total_seconds()
        if span <= 0:
            return
        for acct in j.accounts.values():
            if not acct.trading:
                continue
            rng = random.Random(f"{sc.seed}|adv|{acct.account_id}|{int(start.timestamp())}")
            expected = sc.fills_per_account_per_day * span / 86400
            count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
            self.generate(acct, start, end, count, rng)

    def generate(
        self, acct: Account, start: datetime, end: datetime, count: int, rng: random.Random
    ) -> list[Execution]:
        """``count`` fills (plus expiries, netting, junk) for ``acct`` in ``[start, end)``."""
        j = self.journal
        span = int((end - start).total_seconds())
        made: list[Execution] = []
        if span <= 0:
            return made
        events: list[tuple[datetime, str, Instrument | None]] = []
        for sec in sorted(rng.randrange(span) for _ in range(count)):
            events.append((start + timedelta(seconds=sec), "fill", None))
        if j.quirks.option_expiries:
            day = start.date()
            while datetime.combine(day, time(0), tzinfo=UTC) < end:
                at = datetime.combine(day, time(20, 30), tzinfo=UTC)
                if start <= at < end:
                    for conid, pos in list(acct.positions.items()):
                        inst = j.catalog.by_conid[conid]
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
                    made.append(j.record(acct, expiring, "X", held.qty, ZERO, when, "OCC", None, None, rng))
                continue
            made.extend(self._random_fill(acct, when, rng))
        return made

    def _random_fill(self, acct: Account, when: datetime, rng: random.Random) -> list[Execution]:
        j = self.journal
        cat = j.catalog
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
        if not (inst.expiry is None or inst.expiry > when.date()):  # no longer tradeable
            inst = rng.choice(cat.stocks)
        size = random_size(inst, rng)
        if inst.is_event:
            side = "B"
            if rng.random() < 0.5 and inst.pair_conid is not None:
                inst = cat.by_conid[inst.pair_conid]
        else:
            side = rng.choice("BS")
        if inst.sec_type == "OPT" and not inst.is_event:
            if not j.quirks.option_expiries and inst.expiry != self._far_expiry:
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
        order_ref = j.uuid(rng) if rng.random() < 0.5 else None
        order_id = j.next_order_id()
        exch = venue(inst, rng)
        execs = [j.record(acct, inst, side, size, price, when, exch, order_ref, order_id, rng)]
        execs.extend(netting(j, acct, inst, size, when, rng))
        if j.quirks.malformed_ratio:
            # its own random stream: the same seed gives the same fills with or without junk rows
            junk_rng = self._junk_rngs.setdefault(
                acct.account_id, random.Random(f"{j.scenario.seed}|junk|{acct.account_id}")
            )
            if junk_rng.random() < j.quirks.malformed_ratio:
                junk = JunkRow(acct.account_id, execs[0].trade_time, malformed_row(execs[0], junk_rng))
                acct.junk.append(junk)
                j.publish(acct, junk)
        return execs

"""The login's accounts and their opening book, as the scenario describes them.

``accounts`` paper ``DU...`` accounts (every other one in the letter form), an FA master ``DF...``
with ``fa``, a live ``U...`` account with ``live_account``. Each trading account starts with
``opening_cash`` USD (nothing in CAD and EUR) and ``positions_per_account`` holdings: a soon-expiring
option (or 30-day ones without expiry processing), a YES event holding, the future, the CAD and EUR
stocks, then random stocks. All of it comes from random streams seeded by the scenario's seed.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from ibkr_tasks.sim.catalog import Catalog, Instrument
from ibkr_tasks.sim.entities import ZERO, Account
from ibkr_tasks.sim.scenario import Scenario


def build_accounts(scenario: Scenario, catalog: Catalog, today: date) -> dict[str, Account]:
    """The accounts of the login (FA master first, then the paper accounts, then the live one)."""
    sc = scenario
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

    accounts: dict[str, Account] = {}
    if sc.fa:
        master = new_id("DF", False)
        accounts[master] = Account(master, "master")
    for n in range(sc.accounts):
        ident = new_id("DU", letter=(n % 2 == 1))
        accounts[ident] = Account(ident, "paper", faclient=sc.fa)
    if sc.live_account:
        ident = new_id("U", False)
        accounts[ident] = Account(ident, "live")
    for acct in accounts.values():
        acct.cash = {"USD": sc.opening_cash} if acct.trading else {"USD": ZERO}
        if acct.trading:
            acct.cash.update({"CAD": ZERO, "EUR": ZERO})
            _opening_book(scenario, catalog, today, acct)
    return accounts


def _opening_book(scenario: Scenario, cat: Catalog, today: date, acct: Account) -> None:
    n = scenario.positions_per_account
    if n == 0:
        return
    rng = random.Random(f"{scenario.seed}|book|{acct.account_id}")
    special: list[Instrument] = []
    series = {d: [o for o in cat.options if o.expiry == today + timedelta(days=d)] for d in (-1, 1, 30)}
    if scenario.quirks.option_expiries:
        # one option that expires inside the history (X rows already there), one that expires
        # tomorrow (X rows after an /sim/advance)
        first = series[-1] if scenario.history_days >= 2 else series[30]
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
        qty = random_size(inst, rng, opening=True)
        if inst.sec_type == "STK" and rng.random() < 0.05:
            qty = -qty
        avg = inst.base_price * Decimal(str(round(rng.uniform(0.8, 1.2), 4)))
        avg = max(Catalog._round(avg, inst.tick), inst.tick)
        acct.hold(inst, qty, qty * avg * inst.multiplier)


def random_size(inst: Instrument, rng: random.Random, opening: bool = False) -> Decimal:
    """A plausible quantity for ``inst``: an opening holding, or one generated fill."""
    if inst.is_event:
        return Decimal(rng.randint(10, 200) if opening else rng.randint(1, 40))
    if inst.sec_type == "OPT":
        return Decimal(rng.randint(1, 10))
    if inst.sec_type == "FUT":
        return Decimal(rng.randint(1, 3))
    if not opening and inst.currency == "USD" and rng.random() < 0.05:
        return Decimal("0.5")
    return Decimal(rng.randint(1, 1000) if opening else rng.randint(1, 200))

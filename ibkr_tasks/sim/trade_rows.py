"""Trade rows: the JSON of ``/iserver/account/trades`` rows and each account's index of them by day.

A row is rendered once, when it is published or changes (a late commission, a superseded original),
and cached on its execution. Each account keeps its rows sorted by trade time together with one
pre-joined JSON segment per UTC day, rebuilt only when a row of that day changed, so a trades request
only joins ready bytes. Malformed rows (the ``malformed_ratio`` quirk) are made here too.
"""

from __future__ import annotations

import bisect
import random
from datetime import UTC, date, datetime, time
from typing import Any

from ibkr_tasks.sim.entities import Account, Execution, JunkRow
from ibkr_tasks.sim.formats import dumps, fmt_commission, fmt_price, fmt_qty, ibkr_time, ms, num

_VERB = {"B": "Bot", "S": "Sold"}


def trade_row(ex: Execution) -> dict[str, Any]:
    """One row of GET /iserver/account/trades."""
    inst = ex.inst
    qty = fmt_qty(ex.size)
    price = fmt_price(ex.price)
    if ex.side == "X":
        desc = f"EXPIRED {qty} on {ex.exchange}"
    elif ex.side == "N":
        desc = f"Netting {qty} {inst.outcome} @ {price} on {ex.exchange}"
    else:
        desc = f"{_VERB[ex.side]} {qty} @ {price} on {ex.exchange}"
    row: dict[str, Any] = {
        "execution_id": ex.execution_id,
        "symbol": inst.symbol,
        "supports_tax_opt": "1" if inst.sec_type == "STK" else "0",
        "side": ex.side,
        "order_description": desc,
        "trade_time": ibkr_time(ex.trade_time),
        "trade_time_r": ms(ex.trade_time),
        "size": num(ex.size),
        "price": price,
    }
    if ex.order_ref is not None:
        row["order_ref"] = ex.order_ref
    row["exchange"] = ex.exchange
    if ex.commission is not None:
        row["commission"] = fmt_commission(ex.commission)
    row.update(
        {
            "net_amount": num(ex.net_amount),
            "account": ex.account_id,
            "accountCode": ex.account_id,
            "account_allocation_name": ex.account_id,
            "company_name": inst.company_name,
            "contract_description_1": inst.symbol,
            "sec_type": inst.sec_type,
        }
    )
    if inst.sec_type == "STK":
        row["listing_exchange"] = inst.exchange
    if inst.description_2:
        row["contract_description_2"] = inst.description_2
    row.update(
        {
            "conid": inst.conid,
            "conidEx": inst.conid_ex,
            "directed_exchange": ex.exchange,
            "clearing_id": "IB",
            "clearing_name": "IB",
            "liquidation_trade": "0",
            "is_event_trading": "1" if inst.is_event else "0",
        }
    )
    if ex.order_id is not None:
        row["order_id"] = ex.order_id
    return row


def encode_row(entry: Execution | JunkRow) -> None:
    """Render and cache the JSON of a trades row now, so a trades request only joins bytes."""
    entry.row = dumps(trade_row(entry) if isinstance(entry, Execution) else entry.raw)


def malformed_row(like: Execution, rng: random.Random) -> dict[str, Any]:
    """A junk row modelled on ``like``: one of five ways a row can be broken."""
    raw = dict(trade_row(like))
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
    return raw


# ----------------------------------------------------------------------------------- the row index
def insert(acct: Account, entry: Execution | JunkRow) -> None:
    """Add a row to the account's time-sorted rows (rendered now) and mark its day changed."""
    ts = entry.trade_time.timestamp()
    idx = bisect.bisect_right(acct.times, ts)
    acct.times.insert(idx, ts)
    acct.entries.insert(idx, entry)
    encode_row(entry)
    touch(acct, entry.trade_time)


def touch(acct: Account, when: datetime) -> None:
    """A trades row of day ``when`` changed: its cached JSON segment must be rebuilt."""
    day = when.toordinal()
    acct.day_versions[day] = acct.day_versions.get(day, 0) + 1


def day_segment(acct: Account, day: int) -> bytes:
    """The JSON rows (comma-joined, newest first) traded on UTC day ``day`` (a date ordinal)."""
    version = acct.day_versions.get(day, 0)
    cached = acct.day_rows.get(day)
    if cached is not None and cached[0] == version:
        return cached[1]
    start = datetime.combine(date.fromordinal(day), time(0), tzinfo=UTC).timestamp()
    lo = bisect.bisect_left(acct.times, start)
    hi = bisect.bisect_left(acct.times, start + 86400)
    joined = b",".join([e.row or b"" for e in reversed(acct.entries[lo:hi])])
    acct.day_rows[day] = (version, joined)
    return joined


def warm(acct: Account, now: datetime) -> None:
    """Pre-join the segments of the last 7 days up to ``now`` (startup and /sim/advance)."""
    today = now.toordinal()
    for day in range(today - 6, today + 1):
        day_segment(acct, day)

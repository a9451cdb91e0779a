"""Portfolio endpoints (positions pages, invalidate, portfolio2, summary, ledger) and the trades endpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ibkr_tasks.sim.book import Book
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.entities import Account
from ibkr_tasks.sim.formats import ms, num
from ibkr_tasks.sim.state import (
    SimState,
    bad_account,
    error,
    respond,
)
from ibkr_tasks.sim.trade_rows import day_segment

# Fixed FX for base-currency (USD) columns; illustrative only.
FX_TO_USD = {"USD": Decimal(1), "CAD": Decimal("0.73"), "EUR": Decimal("1.08")}


# ----------------------------------------------------------------------------------- portfolio
def _holdings(st: SimState, acct: Account) -> list[tuple[Instrument, Decimal, Decimal]]:
    live = [(inst, pos.qty, pos.cost) for inst, pos in st.book.open_positions(acct)]
    if not st.quirks.positions_cache:
        return live
    cached = st.positions_cache.get(acct.account_id)
    if cached is None:
        cached = st.positions_cache[acct.account_id] = live
    return cached


async def positions_page(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    try:
        page = int(p["page"])
    except ValueError:
        return error(f"Bad Request: invalid page {p['page']!r}", 400)
    rows = _holdings(st, acct)[page * 100 : (page + 1) * 100] if page >= 0 else []
    now = st.clock.now()
    return respond([position_row(st.book, acct, inst, qty, cost, now) for inst, qty, cost in rows])


async def positions_invalidate(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    st.positions_cache.pop(acct.account_id, None)
    return respond({"message": "success"})


async def portfolio2_positions(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    now = st.clock.now()
    return respond(
        [portfolio2_row(st.book, i, pos.qty, pos.cost, now) for i, pos in st.book.open_positions(acct)]
    )


async def summary(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    return respond(summary_body(st.book, acct, st.clock.now()))


async def ledger(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    return respond(ledger_body(st.book, acct, st.clock.now()))


# ----------------------------------------------------------------------------------- trades
async def trades(st: SimState, req: Request, p: dict[str, str]) -> Response:
    """Executions of the selected account for the current day and ``days - 1`` before it (UTC calendar
    days, max 7), newest first, junk rows included.

    As at IBKR, the answer covers the account the brokerage session has selected (``accountId``
    selects one for this and the following requests, as ``POST /iserver/account`` does): an FA
    master answers for its client sub-accounts, any other account only for itself. A login with
    several accounts that is not an FA master therefore needs one request per account."""
    raw_days = req.query_params.get("days", "1")
    try:
        days = min(max(int(raw_days), 1), 7)
    except ValueError:
        return error(f"Bad Request: days must be an integer, got {raw_days!r}", 400)
    only = req.query_params.get("accountId")
    if only:
        if only not in st.book.accounts:
            return bad_account(only)
        st.session.selected_account = only
    accounts = st.answered_by(st.selected_account())
    now = st.clock.now()
    today = now.toordinal()
    cutoff = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC).timestamp() - 86400 * (days - 1)
    scope = {a.account_id for a in accounts}

    def in_window() -> list[Any]:
        return [
            ex for ex in st.book.pending if ex.account_id in scope and ex.trade_time.timestamp() >= cutoff
        ]

    # Late data moves one stage on per trades response that showed it: rows an earlier response showed
    # move now, before this one is rendered. So /sim/truth always equals what the last response showed.
    st.book.expose([ex for ex in in_window() if ex in st.book.shown])
    parts: list[bytes] = [b"["]
    for acct in accounts:
        for day in range(today, today - days, -1):
            rows = day_segment(acct, day)
            if rows:
                if len(parts) > 1:
                    parts.append(b",")
                parts.append(rows)
    parts.append(b"]")
    st.book.shown.update(in_window())
    # The rows are ready in memory; streaming them avoids one more copy of a response that reaches tens
    # of MB at 100 accounts x 500 fills/day (the work is done here, inside the measured handler time).
    return StreamingResponse(iter(parts), media_type="application/json")


# ----------------------------------------------------------------------------------- rendering
def position_row(
    book: Book, acct: Account, inst: Instrument, qty: Decimal, cost: Decimal, now: datetime
) -> dict:
    """One row of GET /portfolio/{accountId}/positions/{pageId} (docs/ibkr-api.md#positions)."""
    mult = inst.multiplier
    mkt_price = book.catalog.mid(inst, now)
    mkt_value = qty * mkt_price * mult
    avg_cost = cost / qty if qty else Decimal(0)
    avg_price = avg_cost / mult
    fx = FX_TO_USD.get(inst.currency, Decimal(1))
    upnl = mkt_value - cost
    is_stock = inst.sec_type == "STK"
    return {
        "acctId": acct.account_id,
        "conid": inst.conid,
        "contractDesc": inst.contract_desc,
        "position": num(qty),
        "mktPrice": num(mkt_price),
        "mktValue": num(mkt_value),
        "currency": inst.currency,
        "avgCost": num(avg_cost),
        "avgPrice": num(avg_price),
        "realizedPnl": 0.0,
        "unrealizedPnl": num(upnl),
        "exchs": None,
        "expiry": inst.expiry.strftime("%Y%m%d") if inst.expiry else None,
        "putOrCall": inst.right,
        "multiplier": 0.0 if is_stock else num(mult),
        "strike": num(inst.strike) if inst.strike is not None else 0.0,
        "exerciseStyle": None if is_stock else "A",
        "conExchMap": [],
        "assetClass": inst.sec_type,
        "undConid": inst.underlying_conid or 0,
        "model": "",
        "baseMktValue": num(mkt_value * fx),
        "baseMktPrice": num(mkt_price * fx),
        "baseAvgCost": num(avg_cost * fx),
        "baseAvgPrice": num(avg_price * fx),
        "baseRealizedPnl": 0.0,
        "baseUnrealizedPnl": num(upnl * fx),
        "incrementRules": [{"lowerEdge": 0.0, "increment": num(inst.tick)}],
        "displayRule": {
            "magnification": 0,
            "displayRuleStep": [{"decimalDigits": 2, "lowerEdge": 0.0, "wholeDigits": 4}],
        },
        "time": 0,
        "chineseName": "",
        "allExchanges": inst.exchange,
        "listingExchange": inst.exchange,
        "countryCode": inst.country,
        "name": inst.company_name,
        "lastTradingDay": inst.expiry.strftime("%Y-%m-%d") if inst.expiry else None,
        "group": None,
        "sector": None,
        "sectorGroup": None,
        "ticker": inst.symbol,
        "type": "COMMON" if is_stock else "",
        "hasOptions": inst.symbol == "AAPL",
        "fullName": inst.contract_desc,
        "isUS": inst.country == "US",
        "isEventContract": inst.is_event,
        "pageSize": 100,
    }


def portfolio2_row(
    book: Book, inst: Instrument, qty: Decimal, cost: Decimal, now: datetime
) -> dict[str, Any]:
    """One row of GET /portfolio2/{accountId}/positions (payload portfolio2_positions_ibkr-conduit.json)."""
    mult = inst.multiplier
    mkt_price = book.catalog.mid(inst, now)
    mkt_value = qty * mkt_price * mult
    avg_cost = cost / qty if qty else Decimal(0)
    return {
        "position": num(qty),
        "conid": str(inst.conid),
        "avgCost": num(avg_cost),
        "avgPrice": num(avg_cost / mult),
        "currency": inst.currency,
        "description": inst.contract_desc,
        "isLastToLoq": False,
        "marketPrice": num(mkt_price),
        "marketValue": num(mkt_value),
        "realizedPnl": 0.0,
        "secType": inst.sec_type,
        "timestamp": int(now.timestamp()),
        "unrealizedPnl": num(mkt_value - cost),
        "assetClass": inst.sec_type,
        "sector": None,
        "group": None,
        "model": "",
    }


def account_values(book: Book, acct: Account, now: datetime) -> dict[str, Decimal]:
    """Per-currency cash, stock/option/future market values, in the base currency too."""
    vals: dict[str, Decimal] = {}
    stock = opt = fut = Decimal(0)
    for inst, pos in book.open_positions(acct):
        fx = FX_TO_USD.get(inst.currency, Decimal(1))
        mv = pos.qty * book.catalog.mid(inst, now) * inst.multiplier * fx
        if inst.sec_type == "STK":
            stock += mv
        elif inst.sec_type == "OPT":
            opt += mv
        else:
            fut += mv - pos.cost * fx  # futures count only their variation
    cash = sum((amt * FX_TO_USD.get(c, Decimal(1)) for c, amt in acct.cash.items()), Decimal(0))
    vals.update(cash=cash, stock=stock, option=opt, future=fut, netliq=cash + stock + opt + fut)
    return vals


def summary_body(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
    """GET /portfolio/{accountId}/summary: items ``{amount,currency,isNull,timestamp,value,severity}``."""
    v = account_values(book, acct, now)
    stamp = ms(now)

    def amt(x: Decimal) -> dict[str, Any]:
        return {
            "amount": num(x.quantize(Decimal("0.01"))),
            "currency": "USD",
            "isNull": False,
            "timestamp": stamp,
            "value": None,
            "severity": 0,
        }

    gross = abs(v["stock"]) + abs(v["option"])
    init = gross * Decimal("0.25")
    maint = gross * Decimal("0.2")
    out = {
        "accountcode": {
            "amount": 0.0,
            "currency": None,
            "isNull": False,
            "timestamp": stamp,
            "value": acct.account_id,
            "severity": 0,
        },
        "accounttype": {
            "amount": 0.0,
            "currency": None,
            "isNull": False,
            "timestamp": stamp,
            "value": "INDIVIDUAL",
            "severity": 0,
        },
        "accruedcash": amt(Decimal(0)),
        "availablefunds": amt(v["netliq"] - init),
        "buyingpower": amt((v["netliq"] - init) * 4),
        "cushion": {
            "amount": 0.0,
            "currency": None,
            "isNull": False,
            "timestamp": stamp,
            "value": "0.9",
            "severity": 0,
        },
        "equitywithloanvalue": amt(v["netliq"]),
        "excessliquidity": amt(v["netliq"] - maint),
        "grosspositionvalue": amt(gross),
        "initmarginreq": amt(init),
        "maintmarginreq": amt(maint),
        "netliquidation": amt(v["netliq"]),
        "totalcashvalue": amt(v["cash"]),
        "settledcash": amt(v["cash"]),
    }
    return out


def ledger_body(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
    """GET /portfolio/{accountId}/ledger: keyed by currency plus BASE (payload portfolio_ledger_ibind.json)."""
    v = account_values(book, acct, now)
    per_ccy: dict[str, dict[str, Decimal]] = {}
    for inst, pos in book.open_positions(acct):
        d = per_ccy.setdefault(
            inst.currency, {"stock": Decimal(0), "option": Decimal(0), "future": Decimal(0)}
        )
        mv = pos.qty * book.catalog.mid(inst, now) * inst.multiplier
        key = {"STK": "stock", "OPT": "option"}.get(inst.sec_type, "future")
        d[key] += mv if key != "future" else mv - pos.cost
    stamp = int(now.timestamp())

    def entry(ccy: str, cash: Decimal, stock: Decimal, opt: Decimal, fut: Decimal, fx: Decimal) -> dict:
        return {
            "acctcode": acct.account_id,
            "cashbalance": num(cash),
            "cashbalancefxsegment": 0.0,
            "commoditymarketvalue": 0.0,
            "corporatebondsmarketvalue": 0.0,
            "cryptocurrencyvalue": 0.0,
            "currency": ccy,
            "dividends": 0.0,
            "exchangerate": num(fx) if fx != 1 else 1,
            "funds": 0.0,
            "futuremarketvalue": num(fut),
            "futureoptionmarketvalue": 0.0,
            "futuresonlypnl": 0.0,
            "interest": 0.0,
            "issueroptionsmarketvalue": 0.0,
            "key": "LedgerList",
            "moneyfunds": 0.0,
            "netliquidationvalue": num(cash + stock + opt + fut),
            "realizedpnl": 0.0,
            "secondkey": ccy,
            "sessionid": 1,
            "settledcash": num(cash),
            "severity": 0,
            "stockmarketvalue": num(stock),
            "stockoptionmarketvalue": num(opt),
            "tbillsmarketvalue": 0.0,
            "tbondsmarketvalue": 0.0,
            "timestamp": stamp,
            "unrealizedpnl": 0.0,
            "warrantsmarketvalue": 0.0,
        }

    out = {"BASE": entry("BASE", v["cash"], v["stock"], v["option"], v["future"], Decimal(1))}
    ccys = sorted(set(acct.cash) | set(per_ccy))
    for i, ccy in enumerate(ccys):
        d = per_ccy.get(ccy, {"stock": Decimal(0), "option": Decimal(0), "future": Decimal(0)})
        e = entry(
            ccy,
            acct.cash.get(ccy, Decimal(0)),
            d["stock"],
            d["option"],
            d["future"],
            FX_TO_USD.get(ccy, Decimal(1)),
        )
        if i == len(ccys) - 1:
            e["endofbundle"] = 1
        out[ccy] = e
    return out

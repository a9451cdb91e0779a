"""Turn the brokerage model into IBKR's JSON, field names, types and formats as in the real payloads.

Formats follow docs/ibkr-api.md and the real captures in tests/fixtures/ibkr: trade ``price`` is a string,
``size`` and ``net_amount`` are JSON numbers, ``trade_time`` is ``YYYYMMDD-HH:mm:ss`` UTC,
``trade_time_r`` epoch ms, ``commission`` a string without currency (absent while pending), order ids
a digit string on placement, an int in live orders and a number in trades.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ibkr_tasks.sim.book import Account, Book, Execution, Order
from ibkr_tasks.sim.catalog import Instrument

# Fixed FX for base-currency (USD) columns; illustrative only.
FX_TO_USD = {"USD": Decimal(1), "CAD": Decimal("0.73"), "EUR": Decimal("1.08")}

SERVER_INFO = {"serverName": "JifSim0001", "serverVersion": "Build 10.44.1d, Mar 3, 2026 1:55:32 PM"}
MAC = "F4:03:43:CD:BD:C0"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def fmt_price(p: Decimal) -> str:
    """A price string the way the trades payload shows it (``"420.08"``, ``"0.0"``)."""
    if p == 0:
        return "0.0"
    text = format(p, "f")
    return text


def fmt_commission(c: Decimal) -> str:
    """``1.00`` -> ``"1.0"``, ``1.02`` -> ``"1.02"``, ``0.90`` -> ``"0.9"`` (as in real captures)."""
    text = format(c.quantize(Decimal("0.01")), "f").rstrip("0")
    return text + "0" if text.endswith(".") else text


def fmt_qty(q: Decimal) -> str:
    text = format(q.normalize(), "f")
    return text


def num(d: Decimal) -> float:
    """JSON number at the API edge (the real payloads use floats)."""
    return float(d)


def ibkr_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def short_time(t: datetime) -> str:
    """``YYMMDDhhmmss`` (orders ``lastExecutionTime`` / status ``order_time``)."""
    return t.astimezone(UTC).strftime("%y%m%d%H%M%S")


# ----------------------------------------------------------------------------------- trades
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


def trade_row_bytes(entry: Any) -> bytes:
    """Cached JSON of an execution or junk row (re-rendered only when the row changed)."""
    if entry.row is None:
        entry.row = dumps(entry.raw if not isinstance(entry, Execution) else trade_row(entry))
    return entry.row


# ----------------------------------------------------------------------------------- accounts
def iserver_accounts(book: Book, session_id: str, selected: str | None = None) -> dict[str, Any]:
    ids = list(book.accounts)
    master = next((a.account_id for a in book.accounts.values() if a.kind == "master"), None)
    props = {
        a.account_id: {
            "hasChildAccounts": a.kind == "master",
            "supportsCashQty": True,
            "liteUnderPro": False,
            "noFXConv": False,
            "isProp": False,
            "supportsFractions": True,
            "allowCustomerTime": False,
            "autoFx": False,
        }
        for a in book.accounts.values()
    }
    selected = selected or book.default_account()
    return {
        "accounts": ids,
        "acctProps": props,
        "aliases": {i: i for i in ids},
        "allowFeatures": {
            "showGFIS": True,
            "showEUCostReport": False,
            "allowEventContract": True,
            "allowFXConv": True,
            "allowFinancialLens": False,
            "allowMTA": True,
            "allowTypeAhead": True,
            "allowEventTrading": True,
            "snapshotRefreshTimeout": 30,
            "liteUser": False,
            "showWebNews": True,
            "research": True,
            "debugPnl": True,
            "showTaxOpt": True,
            "showImpactDashboard": True,
            "allowDynAccount": False,
            "allowCrypto": True,
            "allowFA": master is not None,
            "allowLiteUnderPro": False,
            "allowedAssetTypes": "STK,CFD,OPT,FOP,WAR,FUT,BAG,PDC,CASH,IND,BOND,BILL,FUND,SLB,News,CMDTY,IOPT,ICU,ICS,PHYSS,CRYPTO",
            "restrictTradeSubscription": False,
            "showUkUserLabels": False,
            "sideBySide": True,
        },
        "chartPeriods": {
            k: (["2h", "1d", "2d", "1w", "1m"] if k in ("OPT", "FOP") else ["*"])
            for k in (
                "STK",
                "CFD",
                "OPT",
                "FOP",
                "WAR",
                "IOPT",
                "FUT",
                "CASH",
                "IND",
                "BOND",
                "FUND",
                "CMDTY",
                "PHYSS",
                "CRYPTO",
            )
        },
        "groups": [],
        "profiles": [],
        "selectedAccount": selected,
        "serverInfo": dict(SERVER_INFO),
        "sessionId": session_id,
        "isFT": False,
        "isPaper": all(a.kind != "live" for a in book.accounts.values()),
    }


def portfolio_account(book: Book, acct: Account) -> dict[str, Any]:
    master = next((a.account_id for a in book.accounts.values() if a.kind == "master"), "")
    return {
        "id": acct.account_id,
        "PrepaidCrypto-Z": False,
        "PrepaidCrypto-P": False,
        "brokerageAccess": True,
        "accountId": acct.account_id,
        "accountVan": acct.account_id,
        "accountTitle": f"Simulated {acct.kind} account",
        "displayName": acct.account_id,
        "accountAlias": None,
        "accountStatus": ms(book.start) - 86_400_000 * 400,
        "currency": acct.currency,
        "type": "DEMO" if acct.kind != "live" else "INDIVIDUAL",
        "tradingType": "STKNOPT",
        "businessType": "IB_PROSERVE",
        "category": "",
        "ibEntity": "IBLLC-US",
        "faclient": acct.faclient,
        "clearingStatus": "O",
        "covestor": False,
        "noClientTrading": False,
        "trackVirtualFXPortfolio": True,
        "acctCustType": "INDIVIDUAL",
        "parent": {
            "mmc": [],
            "accountId": master if acct.faclient else "",
            "isMParent": acct.kind == "master",
            "isMChild": False,
            "isMultiplex": False,
        },
        "desc": acct.account_id,
    }


# ----------------------------------------------------------------------------------- positions
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


def summary(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
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


def ledger(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------- orders
_STATUS_FILTER = {
    "Inactive": "inactive",
    "PendingSubmit": "pending_submit",
    "PreSubmitted": "pre_submitted",
    "Submitted": "submitted",
    "Filled": "filled",
    "PendingCancel": "pending_cancel",
    "Cancelled": "cancelled",
    "WarnState": "warn_state",
}


def status_filter_name(status: str) -> str:
    return _STATUS_FILTER.get(status, status.lower())


def live_order(o: Order) -> dict[str, Any]:
    """One element of GET /iserver/account/orders ``orders`` (docs/ibkr-api.md#live-orders)."""
    inst = o.inst
    avg = o.avg_price
    row: dict[str, Any] = {
        "acct": o.account_id,
        "account": o.account_id,
        "conidex": inst.conid_ex,
        "conid": inst.conid,
        "exchange": "FORECASTX" if inst.is_event else "SMART",
        "orderId": o.order_id,
        "cashCcy": inst.currency,
        "sizeAndFills": f"{fmt_qty(o.filled)}/{_thousands(o.quantity)}",
        "orderDesc": _order_desc(o),
        "description1": inst.symbol,
        "ticker": inst.symbol,
        "secType": inst.sec_type,
        "listingExchange": inst.exchange,
        "remainingQuantity": num(o.remaining),
        "filledQuantity": num(o.filled),
        "totalSize": num(o.quantity),
        "companyName": inst.company_name,
        "status": o.status,
        "order_ccp_status": o.status,
        "origOrderType": "MARKET" if o.order_type == "MKT" else "LIMIT",
        "supportsTaxOpt": "1" if inst.sec_type == "STK" else "0",
        "lastExecutionTime": short_time(o.last_exec or o.created),
        "orderType": "Market" if o.order_type == "MKT" else "Limit",
        "bgColor": "#FFFFFF",
        "fgColor": "#000000",
        "isEventTrading": "1" if inst.is_event else "0",
        "price": fmt_price(o.limit) if o.limit is not None else "",
        "timeInForce": "CLOSE" if o.tif == "DAY" else o.tif,
        "lastExecutionTime_r": ms(o.last_exec or o.created),
        "side": o.side,
        "outsideRTH": False,
    }
    if inst.description_2:
        row["description2"] = inst.description_2
    if o.coid:
        row["order_ref"] = o.coid
    if avg is not None:
        row["avgPrice"] = fmt_price(avg.quantize(Decimal("0.0001")).normalize())
    return row


def _thousands(q: Decimal) -> str:
    if q == q.to_integral_value():
        return f"{int(q):,}"
    return fmt_qty(q)


def _order_desc(o: Order) -> str:
    verb = "Buy" if o.side == "BUY" else "Sell"
    kind = "Market" if o.order_type == "MKT" else f"Limit {fmt_price(o.limit or Decimal(0))}"
    return f"{verb} {fmt_qty(o.quantity)} {kind}, {o.tif}"


def order_status(o: Order, request_id: str) -> dict[str, Any]:
    """GET /iserver/account/order/status/{orderId} (payload iserver_account_order_status_easyib.json)."""
    inst = o.inst
    row: dict[str, Any] = {
        "sub_type": None,
        "request_id": request_id,
        "order_id": o.order_id,
        "conidex": inst.conid_ex,
        "conid": inst.conid,
        "symbol": inst.symbol,
        "side": "B" if o.side == "BUY" else "S",
        "contract_description_1": inst.symbol,
        "listing_exchange": inst.exchange,
        "option_acct": "c",
        "company_name": inst.company_name,
        "size": fmt_qty(o.remaining),
        "total_size": fmt_qty(o.quantity),
        "currency": inst.currency,
        "account": o.account_id,
        "order_type": "MARKET" if o.order_type == "MKT" else "LIMIT",
        "cum_fill": fmt_qty(o.filled),
        "order_status": o.status,
        "order_ccp_status": o.status,
        "order_status_description": _STATUS_TEXT.get(o.status, o.status),
        "tif": o.tif,
        "fg_color": "#000000",
        "bg_color": "#3399CC",
        "order_not_editable": not o.working,
        "editable_fields": "\u001e",
        "cannot_cancel_order": not o.working,
        "deactivate_order": False,
        "sec_type": inst.sec_type,
        "available_chart_periods": "#R|1",
        "order_description": _order_desc(o),
        "order_description_with_contract": _order_desc(o).replace(" ", f" {inst.symbol} ", 1),
        "alert_active": 1,
        "child_order_type": "3",
        "size_and_fills": f"{fmt_qty(o.filled)}/{fmt_qty(o.quantity)}",
        "exit_strategy_display_price": fmt_price(o.limit) if o.limit is not None else "0.00",
        "exit_strategy_chart_description": _order_desc(o),
        "exit_strategy_tool_availability": "1",
        "allowed_duplicate_opposite": True,
        "order_time": short_time(o.created),
        "clearing_id": "IB",
        "clearing_name": "IB",
        "server_id": "0",
    }
    if o.limit is not None:
        row["limit_price"] = fmt_price(o.limit)
    if o.avg_price is not None:
        row["average_price"] = fmt_price(o.avg_price.quantize(Decimal("0.0001")).normalize())
    return row


_STATUS_TEXT = {
    "PreSubmitted": "Order Submitted",
    "Submitted": "Order Submitted",
    "Filled": "Order Filled",
    "Cancelled": "Order Cancelled",
    "PendingSubmit": "Submitting Order...",
}


# ----------------------------------------------------------------------------------- contracts
def contract_info(inst: Instrument) -> dict[str, Any]:
    """GET /iserver/contract/{conid}/info: snake_case (docs/ibkr-api.md#contracts)."""
    return {
        "con_id": inst.conid,
        "symbol": inst.symbol,
        "instrument_type": inst.sec_type,
        "exchange": inst.exchange,
        "company_name": inst.company_name,
        "currency": inst.currency,
        "valid_exchanges": inst.exchange if inst.is_event else f"SMART,{inst.exchange}",
        "local_symbol": inst.symbol if inst.sec_type == "STK" else inst.contract_desc,
        "trading_class": inst.trading_class or inst.symbol,
        "multiplier": None if inst.sec_type == "STK" else fmt_qty(inst.multiplier),
        "underlying_con_id": inst.underlying_conid or 0,
        "maturity_date": inst.expiry.strftime("%Y%m%d") if inst.expiry else None,
        "expiry_full": inst.expiry.strftime("%Y%m%d") if inst.expiry else None,
        "r_t_h": True,
        "smart_available": not inst.is_event,
        "industry": None,
        "category": None,
        "is_zero_commission_security": False,
        "allow_sell_long": not inst.is_event,
        "cfi_code": "",
        "cusip": None,
        "is_event_contract": inst.is_event,
        "text": None,
    }


def secdef_info(inst: Instrument) -> dict[str, Any]:
    """One element of GET /iserver/secdef/info (multiplier is a STRING there)."""
    return {
        "conid": inst.conid,
        "symbol": inst.symbol,
        "secType": inst.sec_type,
        "exchange": inst.exchange,
        "listingExchange": inst.exchange,
        "right": inst.right,
        "strike": num(inst.strike) if inst.strike is not None else 0.0,
        "currency": inst.currency,
        "cusip": None,
        "coupon": "No Coupon",
        "desc1": inst.symbol,
        "desc2": (inst.description_2 or "").split(") ", 1)[-1] or None,
        "maturityDate": inst.expiry.strftime("%Y%m%d") if inst.expiry else None,
        "multiplier": fmt_qty(inst.multiplier),
        "tradingClass": inst.trading_class or inst.symbol,
        "validExchanges": inst.exchange if inst.is_event else f"SMART,{inst.exchange}",
        "showPrips": False,
    }


def trsrv_secdef(inst: Instrument) -> dict[str, Any]:
    """One element of GET /trsrv/secdef ``secdef`` (multiplier a float; strike a string)."""
    return {
        "conid": inst.conid,
        "currency": inst.currency,
        "crossCurrency": False,
        "time": 0,
        "chineseName": "",
        "allExchanges": inst.exchange,
        "listingExchange": inst.exchange,
        "countryCode": inst.country,
        "name": inst.company_name,
        "assetClass": inst.sec_type,
        "expiry": inst.expiry.strftime("%Y%m%d") if inst.expiry else None,
        "lastTradingDay": inst.expiry.strftime("%Y-%m-%d") if inst.expiry else None,
        "group": None,
        "putOrCall": inst.right,
        "sector": None,
        "sectorGroup": None,
        "strike": fmt_qty(inst.strike) if inst.strike is not None else "0",
        "ticker": inst.symbol,
        "undConid": inst.underlying_conid or 0,
        "multiplier": 0.0 if inst.sec_type == "STK" else num(inst.multiplier),
        "type": "COMMON" if inst.sec_type == "STK" else "",
        "hasOptions": inst.symbol == "AAPL",
        "fullName": inst.contract_desc,
        "isUS": inst.country == "US",
        "isEventContract": inst.is_event,
        "incrementRules": [{"lowerEdge": 0.0, "increment": num(inst.tick)}],
    }


def trsrv_stock(inst: Instrument) -> dict[str, Any]:
    """One element of a symbol's list in GET /trsrv/stocks (exchange without the ``.NMS`` suffix)."""
    return {
        "name": inst.company_name,
        "chineseName": "",
        "assetClass": inst.sec_type,
        "contracts": [
            {"conid": inst.conid, "exchange": inst.exchange.split(".", 1)[0], "isUS": inst.country == "US"}
        ],
    }


# ----------------------------------------------------------------------------------- truth
def truth(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
    """GET /sim/truth/{accountId} (decimals as strings; the format is in docs/simulator.md)."""
    executions = []
    for entry in acct.entries:
        if not isinstance(entry, Execution):
            continue
        inst = entry.inst
        executions.append(
            {
                "execution_id": entry.execution_id,
                "conid": inst.conid,
                "symbol": inst.symbol,
                "sec_type": inst.sec_type,
                "side": entry.side,
                "size": str(entry.size),
                "price": str(entry.price),
                "multiplier": str(inst.multiplier),
                "net_amount": str(entry.net_amount),
                "commission": None if entry.commission is None else str(entry.commission),
                "commission_currency": inst.currency,
                "trade_time": entry.trade_time.astimezone(UTC).isoformat(),
                "order_ref": entry.order_ref,
                "order_id": None if entry.order_id is None else str(entry.order_id),
                "is_event_contract": inst.is_event,
                "superseded": entry.superseded,
            }
        )
    positions = [
        {
            "conid": inst.conid,
            "position": str(pos.qty),
            "multiplier": str(inst.multiplier),
            "currency": inst.currency,
            "symbol": inst.symbol,
            "sec_type": inst.sec_type,
        }
        for inst, pos in book.open_positions(acct)
    ]
    orders = [
        {
            "order_id": str(o.order_id),
            "cOID": o.coid,
            "conid": o.inst.conid,
            "side": o.side,
            "quantity": str(o.quantity),
            "filled": str(o.filled),
            "status": o.status,
        }
        for o in acct.orders.values()
    ]
    return {
        "account_id": acct.account_id,
        "as_of": now.astimezone(UTC).isoformat(),
        "executions": executions,
        "positions": positions,
        "orders": orders,
        "malformed_rows": [j.raw for j in acct.junk],
    }

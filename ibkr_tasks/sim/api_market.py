"""Market data (snapshot) and contract endpoints (secdef search/info, contract info, trsrv, forecast)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.formats import fmt_price, fmt_qty, ms, num
from ibkr_tasks.sim.state import (
    SimState,
    error,
    read_json,
    respond,
    to_decimal,
)


# ----------------------------------------------------------------------------------- market data
def _thousands(n: int) -> str:
    return f"{n:,}"


def _volume(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}K"
    return str(n)


def _field_values(st: SimState, inst: Instrument, now: datetime) -> dict[str, str]:
    cat = st.book.catalog
    bid, ask, last = cat.quote(inst, now)
    prior = cat.mid(inst, now.replace(hour=0, minute=0, second=0, microsecond=0))
    is_open = cat.market_open(inst, now)
    minute = int(now.timestamp() // 60)

    def pick(tag: int, lo: int, hi: int) -> int:
        return lo + int(cat.unit(inst.conid, 10 + tag, minute) * (hi - lo + 1))

    size_div = 100 if inst.sec_type == "STK" else 1
    change = last - prior
    pct = (change / prior * 100) if prior else Decimal(0)
    volume = pick(0, 10_000, 90_000_000) if inst.sec_type == "STK" else pick(0, 100, 90_000)
    p = fmt_price
    return {
        "31": ("" if is_open else "C") + p(last),
        "55": inst.symbol,
        "58": "",
        "70": p(max(last, prior)),
        "71": p(min(last, prior)),
        "82": ("+" if change >= 0 else "") + p(change) if change else "0.00",
        "83": f"{pct:.2f}%",
        "84": p(bid),
        "85": _thousands(pick(1, 100, 4000) // size_div or 1),
        "86": p(ask),
        "87": _volume(volume),
        "88": _thousands(pick(2, 100, 4000) // size_div or 1),
        "6004": inst.exchange,
        "6008": str(inst.conid),
        "6070": inst.sec_type,
        "6457": str(inst.underlying_conid or 0),
        "7051": inst.company_name,
        "7059": _thousands(pick(3, 1, 1500)),
        "7184": "1",
        "7219": inst.contract_desc,
        "7220": inst.description_2 or inst.contract_desc,
        "7221": inst.exchange,
        "7295": p(prior),
        "7296": p(last),
        "7635": p(last),
        "7741": p(prior),
        "7762": str(volume),
        "7768": "1",
    }


async def snapshot(st: SimState, req: Request, p: dict[str, str]) -> Response:
    raw_conids = [c for c in req.query_params.get("conids", "").split(",") if c.strip()]
    fields = [f.strip() for f in req.query_params.get("fields", "").split(",") if f.strip()]
    if not raw_conids:
        return error("Bad Request: conids is required", 400)
    if len(raw_conids) > 100:
        return error("Bad Request: at most 100 conids per snapshot request", 400)
    if len(fields) > 50:
        return error("Bad Request: at most 50 fields per snapshot request", 400)
    now = st.clock.now()
    seen = st.session.snapshot_fields
    out = []
    for n, raw in enumerate(raw_conids):
        try:
            conid = int(raw)
        except ValueError:
            return error(f"Bad Request: invalid conid {raw!r}", 400)
        inst = st.book.catalog.get(conid)
        first = conid not in seen
        if fields or first:
            seen[conid] = sorted(set(seen.get(conid, [])) | set(fields))
        if inst is None or (first and st.quirks.snapshot_preflight):
            out.append({"conid": conid, "conidEx": str(conid)})
            continue
        values = _field_values(st, inst, now)
        row: dict[str, Any] = {"conidEx": inst.conid_ex, "conid": conid, "_updated": ms(now)}
        server = f"q{n % 4}"
        row.update({"server_id": server, "6119": server, "6509": "RpB"})
        for f in seen[conid]:
            if f in values:
                row[f] = values[f]
        out.append(row)
    return respond(out)


# ----------------------------------------------------------------------------------- contracts
async def secdef_search(st: SimState, req: Request, p: dict[str, str]) -> Response:
    symbol = req.query_params.get("symbol")
    if req.method == "POST":
        body = await read_json(req)
        symbol = body.get("symbol") if isinstance(body, dict) else None
    if not symbol:
        return error("Bad Request: symbol is required", 400)
    found = st.book.catalog.search(symbol)
    cat = st.book.catalog
    out: list[dict[str, Any]] = []
    stocks = [i for i in found if i.sec_type == "STK"]
    for inst in stocks:
        sections: list[dict[str, Any]] = [{"secType": "STK"}]
        opts = [o for o in cat.options if o.underlying_conid == inst.conid]
        if opts:
            months = sorted({o.expiry.strftime("%b%y").upper() for o in opts if o.expiry})
            sections.append({"secType": "OPT", "months": ";".join(months), "exchange": "SMART;CBOE;ISE"})
        out.append(
            {
                "conid": str(inst.conid),
                "companyHeader": f"{inst.company_name} - {inst.exchange}",
                "companyName": inst.company_name,
                "symbol": inst.symbol,
                "description": inst.exchange,
                "restricted": None,
                "sections": sections,
            }
        )
    futs = [i for i in found if i.sec_type == "FUT"]
    if futs:
        out.append(
            {
                "conid": str(futs[0].underlying_conid),
                "companyHeader": f"{futs[0].company_name} - CME",
                "companyName": futs[0].company_name,
                "symbol": futs[0].symbol,
                "description": "CME",
                "restricted": None,
                "sections": [{"secType": "IND", "exchange": "CME;"}, {"secType": "FUT", "exchange": "CME;"}],
            }
        )
    if symbol.upper() == cat.event_underlying["symbol"]:
        und = cat.event_underlying
        out.append(
            {
                "conid": str(und["conid"]),
                "companyHeader": f"{und['name']} - FORECASTX",
                "companyName": und["name"],
                "symbol": und["symbol"],
                "description": "FORECASTX",
                "restricted": None,
                "sections": [{"secType": "IND", "exchange": "FORECASTX;"}, {"secType": "EC"}],
            }
        )
    sec_type = req.query_params.get("secType")
    if sec_type:
        out = [o for o in out if any(s["secType"] == sec_type.upper() for s in o["sections"])]
    return respond(out)


async def contract_info(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        inst = st.book.catalog.get(int(p["conid"]))
    except ValueError:
        inst = None
    if inst is None:
        return error(f"Bad Request: conid {p['conid']} was not found", 400)
    return respond(contract_info_body(inst))


async def secdef_info(st: SimState, req: Request, p: dict[str, str]) -> Response:
    qp = req.query_params
    try:
        conid = int(qp.get("conid", ""))
    except ValueError:
        return error("Bad Request: conid is required", 400)
    sectype = qp.get("sectype", qp.get("secType", "")).upper()
    cat = st.book.catalog
    base = cat.get(conid)
    if base is None and conid != cat.event_underlying["conid"]:
        return respond([])
    candidates = [i for i in cat.by_conid.values() if i.underlying_conid == conid] + ([base] if base else [])
    out = []
    for inst in candidates:
        if sectype and inst.sec_type != sectype:
            continue
        if qp.get("month") and (
            inst.expiry is None or inst.expiry.strftime("%b%y").upper() != qp["month"].upper()
        ):
            continue
        if qp.get("right") and inst.right != qp["right"].upper()[:1]:
            continue
        strike = to_decimal(qp.get("strike"))
        if strike is not None and inst.strike != strike:
            continue
        out.append(secdef_info_row(inst))
    return respond(out)


async def trsrv_secdef(st: SimState, req: Request, p: dict[str, str]) -> Response:
    if req.method == "POST":
        body = await read_json(req)
        conids = body.get("conids", []) if isinstance(body, dict) else []
    else:
        conids = [c for c in req.query_params.get("conids", "").split(",") if c.strip()]
    if len(conids) > 200:
        return error("Bad Request: at most 200 conids per request", 400)
    out = []
    for c in conids:
        try:
            inst = st.book.catalog.get(int(c))
        except (TypeError, ValueError):
            inst = None
        if inst is not None and inst.conid not in st.faults.secdef_omit:
            out.append(trsrv_secdef_row(inst))
    return respond({"secdef": out})


async def trsrv_stocks(st: SimState, req: Request, p: dict[str, str]) -> Response:
    """``GET /trsrv/stocks?symbols=AAPL,MSFT``: symbol -> [{name, chineseName, assetClass, contracts}]
    (a symbol the catalogue does not know answers an empty list)."""
    symbols = [s.strip().upper() for s in req.query_params.get("symbols", "").split(",") if s.strip()]
    if not symbols:
        return error("Bad Request: symbols is required", 400)
    out: dict[str, list[dict[str, Any]]] = {}
    for symbol in symbols:
        stocks = [i for i in st.book.catalog.search(symbol) if i.sec_type == "STK"]
        out[symbol] = [trsrv_stock_row(inst) for inst in stocks]
    return respond(out)


async def forecast_details(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        inst = st.book.catalog.get(int(req.query_params.get("conid", "")))
    except ValueError:
        inst = None
    if inst is None or not inst.is_event:
        return error("Bad Request: not a ForecastEx contract conid", 400)
    yes = inst if inst.right == "C" else st.book.catalog.by_conid[inst.pair_conid or 0]
    no = st.book.catalog.by_conid[yes.pair_conid or 0]
    strike = fmt_qty(yes.strike or Decimal(0))
    return respond(
        {
            "conid_yes": yes.conid,
            "conid_no": no.conid,
            "question": f"Will the Fed Funds target rate upper bound be above {strike}% after the next meeting?",
            "side": "Y" if inst.right == "C" else "N",
            "strike": float(yes.strike or 0),
            "strike_label": f"Above {strike}%",
            "exchange": "FORECASTX",
            "symbol": yes.symbol,
            "measured_period": yes.expiry.strftime("%b %Y") if yes.expiry else None,
            "expiration": yes.expiry.strftime("%Y%m%d") if yes.expiry else None,
            "payout": 1.0,
            "underlying_conid": yes.underlying_conid,
            "category": "Economics",
        }
    )


# ----------------------------------------------------------------------------------- rendering
def contract_info_body(inst: Instrument) -> dict[str, Any]:
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


def secdef_info_row(inst: Instrument) -> dict[str, Any]:
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


def trsrv_secdef_row(inst: Instrument) -> dict[str, Any]:
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


def trsrv_stock_row(inst: Instrument) -> dict[str, Any]:
    """One element of a symbol's list in GET /trsrv/stocks (exchange without the ``.NMS`` suffix)."""
    return {
        "name": inst.company_name,
        "chineseName": "",
        "assetClass": inst.sec_type,
        "contracts": [
            {"conid": inst.conid, "exchange": inst.exchange.split(".", 1)[0], "isUS": inst.country == "US"}
        ],
    }

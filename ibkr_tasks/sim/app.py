"""The simulator's ASGI application: IBKR's API under ``/v1/api`` and control/truth under ``/sim``.

Every API request goes through one pipeline, in this order: count it, add latency (and the slow-ratio
delay), pacing (429 + penalty box), random 5xx, session checks (401 expired, 400 "no bridge", competing
session, "Please query /accounts first"), invalidate a pending reply prompt unless this is its reply,
then the handler (its time is measured with ``time.perf_counter`` and reported in ``/sim/stats``).
``/sim/...`` requests skip the pipeline; they are not part of IBKR's API.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ibkr_tasks.sim import render
from ibkr_tasks.sim.book import Account, Book, Order
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.clock import SimClock
from ibkr_tasks.sim.limits import RateLimiter
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.session import PendingReply, Session

API_PREFIX = "/v1/api"

# Reply-prompt texts by message id (o354 and o163 texts from api-reference §5.3; the others paraphrase
# the question each id stands for in ibind's _MESSAGE_ID_TO_QUESTION_TYPE).
PROMPTS: dict[str, str] = {
    "o163": 'The following order "{order}" price exceeds \nthe Percentage constraint of 3%.\nAre you sure you want to submit this order?',
    "o354": "You are submitting an order without market data. We strongly recommend against this as it may result in erroneous and unexpected trades.\nAre you sure you want to submit this order?",
    "o383": 'The following order "{order}" size exceeds the Size Limit of 500.\nAre you sure you want to submit this order?',
    "o451": 'The following order "{order}" value estimate of 1,000,000.00 USD exceeds \nthe Total Value Limit of 500,000 USD.\nAre you sure you want to submit this order?',
    "o10151": "Important note: Market orders may be executed at a price significantly different from the last price.\nAre you sure you want to submit this order?",
}

NOT_AUTHENTICATED = {"error": "not authenticated", "statusCode": 401}
NO_BRIDGE = {"error": "Bad Request: no bridge", "statusCode": 400}
QUERY_ACCOUNTS_FIRST = "Please query /accounts first"


class DropResponse(Exception):
    """Raised by a handler after the order was accepted: the client must not get the answer."""


class SimulatedReadTimeout(httpx.ReadTimeout):
    """What an in-process httpx client sees for a dropped order response (the order exists)."""


@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    handler_ms_max: dict[str, float] = field(default_factory=dict)
    handler_cpu_ms_max: dict[str, float] = field(default_factory=dict)
    responses_429: int = 0
    faults_5xx: int = 0
    dropped_order_responses: int = 0


@dataclass
class Faults:
    """One-shot faults switched on through ``POST /sim/faults``."""

    drop_next_order_responses: int = 0
    fail_next_requests: int = 0


Handler = Callable[["SimState", Request, dict[str, str]], Awaitable[Response]]


class SimState:
    """Everything the simulator knows; ``app.state.sim``."""

    def __init__(
        self,
        scenario: Scenario,
        clock: SimClock,
        sleep: Callable[[float], Awaitable[None]],
        served: bool | None,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.sleep = sleep
        self.served = served
        self.book = Book(scenario, clock.started)
        q = scenario.quirks
        self.session = Session(
            brokerage=not q.require_ssodh_init, competing=q.competing_session, init_at=clock.mono()
        )
        self.limiter = RateLimiter(q.global_rate_per_second, q.penalty_box_seconds)
        self.stats = Stats()
        self.faults = Faults()
        self.rng_faults = random.Random(f"{scenario.seed}|faults")
        self.rng_orders = random.Random(f"{scenario.seed}|orders")
        self.session.session_hex = f"{self.rng_faults.getrandbits(128):032x}"
        self.coids: dict[str, int] = {}
        self.orders: dict[int, Order] = {}
        self.positions_cache: dict[str, list[tuple[Instrument, Decimal, Decimal]]] = {}
        self._request_seq = 0

    @property
    def quirks(self) -> Quirks:
        return self.scenario.quirks

    def set_quirks(self, quirks: Quirks) -> None:
        self.scenario = self.scenario.model_copy(update={"quirks": quirks})
        self.book.quirks = quirks
        self.book.scenario = self.scenario
        self.limiter.global_per_second = quirks.global_rate_per_second
        self.limiter.penalty_seconds = quirks.penalty_box_seconds

    def account(self, account_id: str) -> Account | None:
        return self.book.accounts.get(account_id)


# ----------------------------------------------------------------------------------- helpers
def _json(data: Any, status: int = 200) -> Response:
    return Response(render.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, status: int = 200) -> Response:
    body: dict[str, Any] = {"error": message}
    if status != 200:
        body["statusCode"] = status
    return _json(body, status)


def _bad_account(account_id: str) -> Response:
    return _error(f"Bad Request: accountId is not valid: {account_id}", 400)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _auth_status(st: SimState) -> dict[str, Any]:
    s = st.session
    return {
        "MAC": render.MAC,
        "authenticated": s.brokerage and s.authenticated,
        "competing": s.competing,
        "connected": s.authenticated,
        "fail": "",
        "hardware_info": f"1c4558e8|{render.MAC}",
        "message": "",
        "serverInfo": dict(render.SERVER_INFO),
    }


# ----------------------------------------------------------------------------------- session endpoints
async def auth_status(st: SimState, req: Request, p: dict[str, str]) -> Response:
    return _json(_auth_status(st))


async def tickle(st: SimState, req: Request, p: dict[str, str]) -> Response:
    s = st.session
    expires_ms = 600_000
    if st.quirks.session_expiry_seconds is not None:
        left = st.quirks.session_expiry_seconds - (st.clock.mono() - s.init_at)
        expires_ms = max(0, int(left * 1000))
    status = _auth_status(st)
    status.pop("fail")
    return _json(
        {
            "collission": False,
            "hmds": {"error": "no bridge"},
            "iserver": {"authStatus": status},
            "session": s.session_hex,
            "ssoExpires": expires_ms,
            "userId": 99996016,
        }
    )


async def ssodh_init(st: SimState, req: Request, p: dict[str, str]) -> Response:
    body = await _body(req)
    if not isinstance(body, dict) or body.get("publish") is not True:
        return _error("publish must be true", 500)
    s = st.session
    if s.competing and body.get("compete") is not True:
        s.authenticated = True
        return _json(
            {
                "authenticated": False,
                "competing": True,
                "connected": True,
                "passed": False,
                "established": False,
                "hardware_info": f"1c4558e8|{render.MAC}",
                "MAC": render.MAC,
                "message": "",
                "serverInfo": dict(render.SERVER_INFO),
                "fail": "another brokerage session is active: send compete=true to take it over",
            }
        )
    s.open_brokerage(st.clock.mono())
    out = _auth_status(st)
    out.update(passed=True, established=True)
    return _json(out)


async def logout(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.authenticated = False
    st.session.brokerage = False
    st.session.invalidate_reply()
    return _json({"status": True})


# ----------------------------------------------------------------------------------- accounts
async def iserver_accounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    if st.session.competing:
        return _json({})
    st.session.iserver_accounts_done = True
    return _json(render.iserver_accounts(st.book, f"{st.session.session_hex[:8]}.{st.session.epoch:08x}"))


async def switch_account(st: SimState, req: Request, p: dict[str, str]) -> Response:
    body = await _body(req)
    acct_id = body.get("acctId") if isinstance(body, dict) else None
    if not isinstance(acct_id, str) or acct_id not in st.book.accounts:
        return _error(f"Bad Request: accountId is not valid: {acct_id}", 500)
    if st.session.selected_account == acct_id:
        return _json({"set": False, "acctId": acct_id, "message": "Account already set"})
    st.session.selected_account = acct_id
    return _json({"set": True, "acctId": acct_id})


async def portfolio_accounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.portfolio_accounts_done = True
    return _json([render.portfolio_account(st.book, a) for a in st.book.accounts.values()])


async def portfolio_subaccounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.portfolio_accounts_done = True
    return _json([render.portfolio_account(st.book, a) for a in st.book.accounts.values() if a.faclient])


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
        return _bad_account(p["acct"])
    try:
        page = int(p["page"])
    except ValueError:
        return _error(f"Bad Request: invalid page {p['page']!r}", 400)
    rows = _holdings(st, acct)[page * 100 : (page + 1) * 100] if page >= 0 else []
    now = st.clock.now()
    return _json([render.position_row(st.book, acct, inst, qty, cost, now) for inst, qty, cost in rows])


async def positions_invalidate(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    st.positions_cache.pop(acct.account_id, None)
    return _json({"message": "success"})


async def portfolio2_positions(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    now = st.clock.now()
    return _json(
        [render.portfolio2_row(st.book, i, pos.qty, pos.cost, now) for i, pos in st.book.open_positions(acct)]
    )


async def summary(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    return _json(render.summary(st.book, acct, st.clock.now()))


async def ledger(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    return _json(render.ledger(st.book, acct, st.clock.now()))


# ----------------------------------------------------------------------------------- trades
async def trades(st: SimState, req: Request, p: dict[str, str]) -> Response:
    """All executions of the login (or of ``accountId``) for the current day and ``days - 1`` before it
    (UTC calendar days, max 7), newest first, junk rows included."""
    raw_days = req.query_params.get("days", "1")
    try:
        days = min(max(int(raw_days), 1), 7)
    except ValueError:
        return _error(f"Bad Request: days must be an integer, got {raw_days!r}", 400)
    only = req.query_params.get("accountId")
    accounts = st.book.trading_accounts()
    if only:
        accounts = [a for a in accounts if a.account_id == only]
    now = st.clock.now()
    today = now.toordinal()
    cutoff = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC).timestamp() - 86400 * (days - 1)
    parts: list[bytes] = [b"["]
    for acct in accounts:
        for day in range(today, today - days, -1):
            rows = acct.day_segment(day)
            if rows:
                if len(parts) > 1:
                    parts.append(b",")
                parts.append(rows)
    parts.append(b"]")
    scope = {a.account_id for a in accounts}
    shown = [ex for ex in st.book.pending if ex.account_id in scope and ex.trade_time.timestamp() >= cutoff]
    st.book.expose(shown)
    # The rows are ready in memory; streaming them avoids one more copy of a response that reaches tens
    # of MB at 100 accounts x 500 fills/day (the work is done here, inside the measured handler time).
    return StreamingResponse(iter(parts), media_type="application/json")


# ----------------------------------------------------------------------------------- orders
def _ticket_instrument(st: SimState, ticket: dict[str, Any]) -> Instrument | None:
    conid: Any = ticket.get("conid")
    if conid is None and isinstance(ticket.get("conidex"), str):
        conid = ticket["conidex"].split("@", 1)[0]
    try:
        return st.book.catalog.get(int(conid))
    except (TypeError, ValueError):
        return None


def _validate_ticket(
    st: SimState, acct: Account, ticket: dict[str, Any]
) -> tuple[Instrument, Decimal, Decimal | None] | Response:
    inst = _ticket_instrument(st, ticket)
    if inst is None:
        return _error(f"Invalid contract: conid {ticket.get('conid', ticket.get('conidex'))!r} was not found")
    if ticket.get("acctId") not in (None, acct.account_id):
        return _error(f"Bad Request: acctId {ticket.get('acctId')} does not match the path account", 400)
    side = ticket.get("side")
    if side not in ("BUY", "SELL"):
        return _error(f"invalid side {side!r}: use BUY or SELL")
    otype = ticket.get("orderType")
    if otype not in ("MKT", "LMT"):
        return _error(f"order type {otype!r} is not simulated (MKT, LMT)")
    qty = _decimal(ticket.get("quantity"))
    if qty is None or qty <= 0:
        return _error("invalid order size fields")
    limit = _decimal(ticket.get("price")) if otype == "LMT" else None
    if otype == "LMT" and (limit is None or limit <= 0):
        return _error("invalid order price fields")
    if inst.is_event and side == "SELL":
        return _error("ForecastEx contracts cannot be sold: buy the opposite outcome to close a position")
    if inst.sec_type == "FUT" and not isinstance(ticket.get("manualIndicator"), bool):
        return _error("Missing order attribute: manualIndicator is required for futures orders")
    if inst.expiry is not None and inst.expiry < st.clock.now().date():
        return _error(f"The contract {inst.contract_desc} has expired")
    return inst, qty, limit


def _transmit(
    st: SimState, acct: Account, ticket: dict[str, Any], inst: Instrument, qty: Decimal
) -> Response:
    coid = ticket.get("cOID")
    if coid is not None and coid in st.coids:
        return _error(f"Order couldn't be submitted: Local order ID={coid} is already registered.")
    now = st.clock.now()
    order = Order(
        order_id=st.book.next_order_id(),
        account_id=acct.account_id,
        inst=inst,
        side=ticket["side"],
        order_type=ticket["orderType"],
        quantity=qty,
        limit=_decimal(ticket.get("price")) if ticket["orderType"] == "LMT" else None,
        tif=str(ticket.get("tif") or "DAY"),
        coid=coid,
        created=now.replace(microsecond=0),
        epoch=st.session.epoch,
    )
    if coid is not None:
        st.coids[coid] = order.order_id
    acct.orders[order.order_id] = order
    st.orders[order.order_id] = order
    st.book.try_fill(order, now)
    if order.working and order.status == "PreSubmitted":
        order.status = "Submitted"
    drop = st.faults.drop_next_order_responses > 0 or (
        st.quirks.drop_order_response and st.rng_faults.random() < st.quirks.drop_order_response
    )
    if drop:
        st.faults.drop_next_order_responses = max(0, st.faults.drop_next_order_responses - 1)
        raise DropResponse(order.order_id)
    ack: dict[str, Any] = {"order_id": str(order.order_id)}
    if coid is not None:
        ack["local_order_id"] = coid
    ack.update(order_status=order.status, encrypt_message="1")
    return _json([ack])


def _prompt(st: SimState, pending: PendingReply, message_id: str) -> Response:
    inst = _ticket_instrument(st, pending.ticket)
    desc = f"{pending.ticket.get('side')} {render.fmt_qty(pending.quantity)} {inst.symbol if inst else ''}"
    text = PROMPTS[message_id].format(order=desc.strip())
    st.session.replies[pending.reply_id] = pending
    st.session.current_reply = pending.reply_id
    return _json(
        [{"id": pending.reply_id, "message": [text], "isSuppressed": False, "messageIds": [message_id]}]
    )


async def place_order(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    body = await _body(req)
    orders = body.get("orders") if isinstance(body, dict) else None
    if not isinstance(orders, list) or not orders or not all(isinstance(o, dict) for o in orders):
        return _error('Invalid request body: expected {"orders": [ {order ticket} ]}', 500)
    if len(orders) > 1:
        return _error("the simulator takes one order ticket per request (brackets/OCA are not simulated)")
    if not acct.trading:
        return _error(f"orders for the FA master {acct.account_id} (allocations) are not simulated")
    ticket = orders[0]
    checked = _validate_ticket(st, acct, ticket)
    if isinstance(checked, Response):
        return checked
    inst, qty, _limit = checked
    coid = ticket.get("cOID")
    if coid is not None and coid in st.coids:
        return _error(f"Order couldn't be submitted: Local order ID={coid} is already registered.")
    q = st.quirks
    hops = st.rng_orders.randint(q.prompt_chain_min, q.prompt_chain_max) if q.prompt_chain_max else 0
    ids = [m for m in PROMPTS if m not in st.session.suppressed]
    st.rng_orders.shuffle(ids)
    chain = ids[:hops]
    if not chain:
        return _transmit(st, acct, ticket, inst, qty)
    pending = PendingReply(st.book.uuid(st.rng_orders), acct.account_id, ticket, qty, chain[1:])
    return _prompt(st, pending, chain[0])


async def reply(st: SimState, req: Request, p: dict[str, str]) -> Response:
    reply_id = p["id"]
    pending = st.session.replies.get(reply_id)
    if pending is None or pending.state == "used":
        return _error(f"reply id not found: {reply_id}", 400)
    if pending.state == "stale":
        pending.state = "used"
        return _error(
            f"reply id not found: {reply_id} (it timed out: another request came before the reply)", 503
        )
    body = await _body(req)
    pending.state = "used"
    st.session.current_reply = None
    if not isinstance(body, dict) or not isinstance(body.get("confirmed"), bool):
        return _error('Invalid request body: expected {"confirmed": true|false}', 500)
    if not body["confirmed"]:
        return _error("Order was not confirmed: the order ticket was discarded and nothing was transmitted")
    acct = st.book.accounts[pending.account_id]
    if pending.remaining:
        nxt = PendingReply(
            st.book.uuid(st.rng_orders),
            acct.account_id,
            pending.ticket,
            pending.quantity,
            pending.remaining[1:],
        )
        return _prompt(st, nxt, pending.remaining[0])
    inst = _ticket_instrument(st, pending.ticket)
    assert inst is not None
    return _transmit(st, acct, pending.ticket, inst, pending.quantity)


async def suppress(st: SimState, req: Request, p: dict[str, str]) -> Response:
    body = await _body(req)
    ids = body.get("messageIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or len(ids) > 51:
        return _error("system error", 500)
    st.session.suppressed = {str(i) for i in ids}
    return _json({"status": "submitted"})


async def suppress_reset(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.suppressed.clear()
    return _json({"status": "submitted"})


async def live_orders(st: SimState, req: Request, p: dict[str, str]) -> Response:
    s = st.session
    if req.query_params.get("force", "").lower() == "true":
        return _json({"orders": [], "snapshot": False})
    if st.quirks.orders_preflight and not s.orders_preflight_done:
        s.orders_preflight_done = True
        return _json({"orders": [], "snapshot": False})
    only = req.query_params.get("accountId")
    wanted = {f.strip() for f in req.query_params.get("filters", "").split(",") if f.strip()}
    wanted.discard("sort_by_time")
    rows = []
    for order in sorted(st.orders.values(), key=lambda o: o.order_id, reverse=True):
        if only and order.account_id != only:
            continue
        if not (order.working or order.epoch == s.epoch):
            continue
        if wanted and render.status_filter_name(order.status) not in wanted:
            continue
        rows.append(render.live_order(order))
    return _json({"orders": rows[:1000], "snapshot": True})


async def order_status(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        oid = int(p["oid"])
    except ValueError:
        return _error(f"OrderID {p['oid']} doesn't exist", 400)
    order = st.orders.get(oid)
    if order is None:
        return _error(f"OrderID {oid} doesn't exist", 400)
    if not order.working and order.epoch != st.session.epoch:
        return _error("Service Unavailable: the order finished before this brokerage session", 503)
    return _json(render.order_status(order, str(st.rng_faults.randint(10000, 99999))))


async def cancel_order(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return _bad_account(p["acct"])
    try:
        oid = int(p["oid"])
    except ValueError:
        return _error(f"OrderID {p['oid']} doesn't exist")
    if oid == -1:
        for each in acct.orders.values():
            if each.working:
                each.status = "Cancelled"
        return _json({"msg": "Request was submitted", "order_id": -1, "conid": -1, "account": None})
    order = acct.orders.get(oid)
    if order is None:
        return _error(f"OrderID {oid} doesn't exist")
    if order.working:
        order.status = "Cancelled"
    return _json(
        {
            "msg": "Request was submitted",
            "order_id": oid,
            "conid": order.inst.conid,
            "account": acct.account_id,
        }
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
    p = render.fmt_price
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
        return _error("Bad Request: conids is required", 400)
    if len(raw_conids) > 100:
        return _error("Bad Request: at most 100 conids per snapshot request", 400)
    if len(fields) > 50:
        return _error("Bad Request: at most 50 fields per snapshot request", 400)
    now = st.clock.now()
    seen = st.session.snapshot_fields
    out = []
    for n, raw in enumerate(raw_conids):
        try:
            conid = int(raw)
        except ValueError:
            return _error(f"Bad Request: invalid conid {raw!r}", 400)
        inst = st.book.catalog.get(conid)
        first = conid not in seen
        if fields or first:
            seen[conid] = sorted(set(seen.get(conid, [])) | set(fields))
        if inst is None or (first and st.quirks.snapshot_preflight):
            out.append({"conid": conid, "conidEx": str(conid)})
            continue
        values = _field_values(st, inst, now)
        row: dict[str, Any] = {"conidEx": inst.conid_ex, "conid": conid, "_updated": render.ms(now)}
        server = f"q{n % 4}"
        row.update({"server_id": server, "6119": server, "6509": "RpB"})
        for f in seen[conid]:
            if f in values:
                row[f] = values[f]
        out.append(row)
    return _json(out)


# ----------------------------------------------------------------------------------- contracts
async def secdef_search(st: SimState, req: Request, p: dict[str, str]) -> Response:
    symbol = req.query_params.get("symbol")
    if req.method == "POST":
        body = await _body(req)
        symbol = body.get("symbol") if isinstance(body, dict) else None
    if not symbol:
        return _error("Bad Request: symbol is required", 400)
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
    return _json(out)


async def contract_info(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        inst = st.book.catalog.get(int(p["conid"]))
    except ValueError:
        inst = None
    if inst is None:
        return _error(f"Bad Request: conid {p['conid']} was not found", 400)
    return _json(render.contract_info(inst))


async def secdef_info(st: SimState, req: Request, p: dict[str, str]) -> Response:
    qp = req.query_params
    try:
        conid = int(qp.get("conid", ""))
    except ValueError:
        return _error("Bad Request: conid is required", 400)
    sectype = qp.get("sectype", qp.get("secType", "")).upper()
    cat = st.book.catalog
    base = cat.get(conid)
    if base is None and conid != cat.event_underlying["conid"]:
        return _json([])
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
        strike = _decimal(qp.get("strike"))
        if strike is not None and inst.strike != strike:
            continue
        out.append(render.secdef_info(inst))
    return _json(out)


async def trsrv_secdef(st: SimState, req: Request, p: dict[str, str]) -> Response:
    if req.method == "POST":
        body = await _body(req)
        conids = body.get("conids", []) if isinstance(body, dict) else []
    else:
        conids = [c for c in req.query_params.get("conids", "").split(",") if c.strip()]
    if len(conids) > 200:
        return _error("Bad Request: at most 200 conids per request", 400)
    out = []
    for c in conids:
        try:
            inst = st.book.catalog.get(int(c))
        except (TypeError, ValueError):
            inst = None
        if inst is not None:
            out.append(render.trsrv_secdef(inst))
    return _json({"secdef": out})


async def forecast_details(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        inst = st.book.catalog.get(int(req.query_params.get("conid", "")))
    except ValueError:
        inst = None
    if inst is None or not inst.is_event:
        return _error("Bad Request: not a ForecastEx contract conid", 400)
    yes = inst if inst.right == "C" else st.book.catalog.by_conid[inst.pair_conid or 0]
    no = st.book.catalog.by_conid[yes.pair_conid or 0]
    strike = render.fmt_qty(yes.strike or Decimal(0))
    return _json(
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


# ----------------------------------------------------------------------------------- routing
@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    key: str  # the endpoint name used for stats and rate limits
    handler: Handler
    iserver: bool = False  # needs the brokerage session
    preflight: str | None = None  # "iserver" | "portfolio"


def _route(
    methods: str, path: str, handler: Handler, *, iserver: bool = False, preflight: str | None = None
) -> Route:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "/?$"
    return Route(frozenset(methods.split("|")), re.compile(regex), path, handler, iserver, preflight)


ROUTES: list[Route] = [
    _route("POST|GET", "/iserver/auth/status", auth_status),
    _route("GET|POST", "/tickle", tickle),
    _route("POST", "/iserver/auth/ssodh/init", ssodh_init),
    _route("POST|GET", "/logout", logout),
    _route("GET", "/iserver/accounts", iserver_accounts, iserver=True),
    _route("POST", "/iserver/account", switch_account, iserver=True, preflight="iserver"),
    _route("GET", "/portfolio/accounts", portfolio_accounts),
    _route("GET", "/portfolio/subaccounts", portfolio_subaccounts),
    _route("GET", "/portfolio/{acct}/positions/{page}", positions_page, preflight="portfolio"),
    _route("POST", "/portfolio/{acct}/positions/invalidate", positions_invalidate, preflight="portfolio"),
    _route("GET", "/portfolio2/{acct}/positions", portfolio2_positions, preflight="portfolio"),
    _route("GET", "/portfolio/{acct}/summary", summary, preflight="portfolio"),
    _route("GET", "/portfolio/{acct}/ledger", ledger, preflight="portfolio"),
    _route("GET", "/iserver/account/trades", trades, iserver=True, preflight="iserver"),
    _route("GET", "/iserver/account/orders", live_orders, iserver=True, preflight="iserver"),
    _route("GET", "/iserver/account/order/status/{oid}", order_status, iserver=True, preflight="iserver"),
    _route("POST", "/iserver/account/{acct}/orders", place_order, iserver=True, preflight="iserver"),
    _route("DELETE", "/iserver/account/{acct}/order/{oid}", cancel_order, iserver=True, preflight="iserver"),
    _route("POST", "/iserver/reply/{id}", reply, iserver=True, preflight="iserver"),
    _route("POST", "/iserver/questions/suppress", suppress, iserver=True),
    _route("POST", "/iserver/questions/suppress/reset", suppress_reset, iserver=True),
    _route("GET", "/iserver/marketdata/snapshot", snapshot, iserver=True, preflight="iserver"),
    _route("GET|POST", "/iserver/secdef/search", secdef_search, iserver=True),
    _route("GET", "/iserver/secdef/info", secdef_info, iserver=True),
    _route("GET", "/iserver/contract/{conid}/info", contract_info, iserver=True),
    _route("GET|POST", "/trsrv/secdef", trsrv_secdef),
    _route("GET", "/forecast/contract/details", forecast_details),
]


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for ``path`` (relative to /v1/api). Literal routes win over templated ones."""
    for route in ROUTES:
        m = route.pattern.match(path)
        if m and method in route.methods:
            return route, m.groupdict()
    return None

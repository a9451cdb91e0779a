"""Order endpoints: place (with reply-prompt chains), reply, suppress, live orders, status, cancel."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim import render
from ibkr_tasks.sim.book import Account, Order
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.session import PendingReply
from ibkr_tasks.sim.state import (
    DropResponse,
    SimState,
    bad_account,
    error,
    read_json,
    respond,
    to_decimal,
)

# Reply prompts by message id, worded as IBKR words them (docs/ibkr-api.md#prompts): the ids and texts
# of IBKR's list of suppressible messages; o354 as captured; o10151 known only by its opening sentence
# (the rest is the simulator's, ending like the others). Placeholders: {order} ("BUY 650 AAPL
# NASDAQ.NMS"), {value} and {currency} (the order's value estimate), {size_limit}, {value_limit}.
ARE_YOU_SURE = "Are you sure you want to submit this order?"
PROMPTS: dict[str, str] = {
    "o163": 'The following order "{order}" price exceeds \nthe Percentage constraint of 3%.\n' + ARE_YOU_SURE,
    "o354": "You are submitting an order without market data. We strongly recommend against this as it may "
    "result in erroneous and unexpected trades.\n" + ARE_YOU_SURE,
    "o383": 'The following order "{order}" size exceeds the Size Limit of {size_limit}.\n' + ARE_YOU_SURE,
    "o403": "This order will most likely trigger and fill immediately.\n" + ARE_YOU_SURE,
    "o451": 'The following order "{order}" value estimate of {value} {currency} exceeds \nthe Total Value '
    "Limit of {value_limit} {currency}.\n" + ARE_YOU_SURE,
    "o10151": "A Market Order is an instruction to trade your order at any available price.\n" + ARE_YOU_SURE,
}
# The account's precautionary limits: IBKR asks these whenever the order exceeds them (not at random).
LIMIT_PROMPTS = ("o383", "o451")


@dataclass(frozen=True)
class OrderFacts:
    """What the prompts of an order depend on, at the simulator's now."""

    order_type: str
    limit: Decimal | None
    last: Decimal
    crosses: bool
    quantity: Decimal
    value: Decimal  # quantity x (limit, else last price) x multiplier, in the order's currency
    size_limit: Decimal
    value_limit: Decimal


def order_facts(st: SimState, ticket: dict[str, Any], inst: Instrument, qty: Decimal) -> OrderFacts:
    bid, ask, last = st.book.catalog.quote(inst, st.clock.now())
    limit = to_decimal(ticket.get("price")) if ticket.get("orderType") == "LMT" else None
    buy = ticket.get("side") == "BUY"
    return OrderFacts(
        order_type=str(ticket.get("orderType")),
        limit=limit,
        last=last,
        crosses=limit is not None and (limit >= ask if buy else limit <= bid),
        quantity=qty,
        value=qty * (limit if limit is not None else last) * inst.multiplier,
        size_limit=st.scenario.order_size_limit,
        value_limit=st.scenario.order_value_limit,
    )


def fitting_prompts(facts: OrderFacts) -> list[str]:
    """The prompts IBKR could ask about this order, in ``PROMPTS`` order: never a market-order
    question for a limit order, never a limit-price question for a market order, a limit question only
    when the order exceeds that limit."""
    limit, last = facts.limit, facts.last
    fits = {
        "o163": limit is not None and last > 0 and abs(limit - last) / last > Decimal("0.03"),
        "o354": True,
        "o383": facts.quantity > facts.size_limit,
        "o403": facts.order_type == "LMT" and facts.crosses,
        "o451": facts.value > facts.value_limit,
        "o10151": facts.order_type == "MKT",
    }
    return [mid for mid in PROMPTS if fits[mid]]


def prompt_chain(st: SimState, facts: OrderFacts) -> list[str]:
    """The message ids to ask, in order (empty when prompts are off: ``prompt_chain_max`` 0).

    The limit prompts that fit (``o383``, ``o451``) are always asked; the other fitting ones are drawn
    to make ``prompt_chain_min``..``prompt_chain_max`` prompts in all. Suppressed ids are never asked.
    Deterministic under the scenario seed (the ``orders`` random stream)."""
    q = st.quirks
    if not q.prompt_chain_max:
        return []
    rng = st.rng_orders
    hops = rng.randint(q.prompt_chain_min, q.prompt_chain_max)
    fitting = [m for m in fitting_prompts(facts) if m not in st.session.suppressed]
    required = [m for m in fitting if m in LIMIT_PROMPTS]
    optional = [m for m in fitting if m not in LIMIT_PROMPTS]
    rng.shuffle(optional)
    chain = required + optional[: max(0, hops - len(required))]
    rng.shuffle(chain)
    return chain


def _amount(value: Decimal) -> str:
    """An amount as IBKR prints it in prompts: thousands grouped, 2 decimals (``57,040.00``)."""
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"


def _limit(value: Decimal) -> str:
    """A limit as IBKR prints it in prompts: grouped, decimals only when it has some (``1,000,000``)."""
    return f"{int(value):,}" if value == value.to_integral_value() else _amount(value)


def prompt_text(message_id: str, ticket: dict[str, Any], inst: Instrument, facts: OrderFacts) -> str:
    """The text of ``message_id`` for this order, with its real value estimate and the account's limits."""
    return PROMPTS[message_id].format(
        order=f"{ticket.get('side')} {render.fmt_qty(facts.quantity)} {inst.symbol} {inst.exchange}",
        value=_amount(facts.value),
        currency=inst.currency,
        size_limit=_limit(facts.size_limit),
        value_limit=_limit(facts.value_limit),
    )


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
        return error(f"Invalid contract: conid {ticket.get('conid', ticket.get('conidex'))!r} was not found")
    if ticket.get("acctId") not in (None, acct.account_id):
        return error(f"Bad Request: acctId {ticket.get('acctId')} does not match the path account", 400)
    side = ticket.get("side")
    if side not in ("BUY", "SELL"):
        return error(f"invalid side {side!r}: use BUY or SELL")
    otype = ticket.get("orderType")
    if otype not in ("MKT", "LMT"):
        return error(f"order type {otype!r} is not simulated (MKT, LMT)")
    qty = to_decimal(ticket.get("quantity"))
    if qty is None or qty <= 0:
        return error("invalid order size fields")
    limit = to_decimal(ticket.get("price")) if otype == "LMT" else None
    if otype == "LMT" and (limit is None or limit <= 0):
        return error("invalid order price fields")
    if inst.is_event and side == "SELL":
        return error("ForecastEx contracts cannot be sold: buy the opposite outcome to close a position")
    if inst.sec_type == "FUT" and not isinstance(ticket.get("manualIndicator"), bool):
        return error("Missing order attribute: manualIndicator is required for futures orders")
    if inst.expiry is not None and inst.expiry < st.clock.now().date():
        return error(f"The contract {inst.contract_desc} has expired")
    return inst, qty, limit


def _transmit(
    st: SimState, acct: Account, ticket: dict[str, Any], inst: Instrument, qty: Decimal
) -> Response:
    coid = ticket.get("cOID")
    if coid is not None and coid in st.coids:
        return error(f"Order couldn't be submitted: Local order ID={coid} is already registered.")
    now = st.clock.now()
    order = Order(
        order_id=st.book.next_order_id(),
        account_id=acct.account_id,
        inst=inst,
        side=ticket["side"],
        order_type=ticket["orderType"],
        quantity=qty,
        limit=to_decimal(ticket.get("price")) if ticket["orderType"] == "LMT" else None,
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
    return respond([ack])


def _prompt(st: SimState, pending: PendingReply, message_id: str) -> Response:
    inst = _ticket_instrument(st, pending.ticket)
    assert inst is not None  # the ticket was validated before any prompt
    text = prompt_text(
        message_id, pending.ticket, inst, order_facts(st, pending.ticket, inst, pending.quantity)
    )
    st.session.replies[pending.reply_id] = pending
    st.session.current_reply = pending.reply_id
    return respond(
        [{"id": pending.reply_id, "message": [text], "isSuppressed": False, "messageIds": [message_id]}]
    )


async def place_order(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    body = await read_json(req)
    orders = body.get("orders") if isinstance(body, dict) else None
    if not isinstance(orders, list) or not orders or not all(isinstance(o, dict) for o in orders):
        return error('Invalid request body: expected {"orders": [ {order ticket} ]}', 500)
    if len(orders) > 1:
        return error("the simulator takes one order ticket per request (brackets/OCA are not simulated)")
    if not acct.trading:
        return error(f"orders for the FA master {acct.account_id} (allocations) are not simulated")
    ticket = orders[0]
    checked = _validate_ticket(st, acct, ticket)
    if isinstance(checked, Response):
        return checked
    inst, qty, _limit = checked
    coid = ticket.get("cOID")
    if coid is not None and coid in st.coids:
        return error(f"Order couldn't be submitted: Local order ID={coid} is already registered.")
    chain = prompt_chain(st, order_facts(st, ticket, inst, qty))
    if not chain:
        return _transmit(st, acct, ticket, inst, qty)
    pending = PendingReply(st.book.uuid(st.rng_orders), acct.account_id, ticket, qty, chain[1:])
    return _prompt(st, pending, chain[0])


async def reply(st: SimState, req: Request, p: dict[str, str]) -> Response:
    reply_id = p["id"]
    pending = st.session.replies.get(reply_id)
    if pending is None or pending.state == "used":
        return error(f"reply id not found: {reply_id}", 400)
    if pending.state == "stale":
        pending.state = "used"
        return error(
            f"reply id not found: {reply_id} (it timed out: another request came before the reply)", 503
        )
    body = await read_json(req)
    pending.state = "used"
    st.session.current_reply = None
    if not isinstance(body, dict) or not isinstance(body.get("confirmed"), bool):
        return error('Invalid request body: expected {"confirmed": true|false}', 500)
    if not body["confirmed"]:
        return error("Order was not confirmed: the order ticket was discarded and nothing was transmitted")
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
    body = await read_json(req)
    ids = body.get("messageIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or len(ids) > 51:
        return error("system error", 500)
    st.session.suppressed = {str(i) for i in ids}
    return respond({"status": "submitted"})


async def suppress_reset(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.suppressed.clear()
    return respond({"status": "submitted"})


async def live_orders(st: SimState, req: Request, p: dict[str, str]) -> Response:
    s = st.session
    if req.query_params.get("force", "").lower() == "true":
        return respond({"orders": [], "snapshot": False})
    if st.quirks.orders_preflight and not s.orders_preflight_done:
        s.orders_preflight_done = True
        return respond({"orders": [], "snapshot": False})
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
    return respond({"orders": rows[:1000], "snapshot": True})


async def order_status(st: SimState, req: Request, p: dict[str, str]) -> Response:
    try:
        oid = int(p["oid"])
    except ValueError:
        return error(f"OrderID {p['oid']} doesn't exist", 400)
    order = st.orders.get(oid)
    if order is None:
        return error(f"OrderID {oid} doesn't exist", 400)
    if not order.working and order.epoch != st.session.epoch:
        return error("Service Unavailable: the order finished before this brokerage session", 503)
    return respond(render.order_status(order, str(st.rng_faults.randint(10000, 99999))))


async def cancel_order(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    try:
        oid = int(p["oid"])
    except ValueError:
        return error(f"OrderID {p['oid']} doesn't exist")
    if oid == -1:
        for each in acct.orders.values():
            if each.working:
                each.status = "Cancelled"
        return respond({"msg": "Request was submitted", "order_id": -1, "conid": -1, "account": None})
    order = acct.orders.get(oid)
    if order is None:
        return error(f"OrderID {oid} doesn't exist")
    if order.working:
        order.status = "Cancelled"
    return respond(
        {
            "msg": "Request was submitted",
            "order_id": oid,
            "conid": order.inst.conid,
            "account": acct.account_id,
        }
    )

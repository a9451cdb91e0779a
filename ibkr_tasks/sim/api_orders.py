"""Order endpoints: place (with reply-prompt chains), reply, suppress, live orders, status, cancel.

Which prompts an order is asked is decided in :mod:`ibkr_tasks.sim.prompts`; fills in
:mod:`ibkr_tasks.sim.matching`. The live-order and order-status JSON is rendered at the end.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.entities import Account, Order
from ibkr_tasks.sim.formats import fmt_price, fmt_qty, ms, num, short_time, thousands
from ibkr_tasks.sim.prompts import order_facts, prompt_chain, prompt_text
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
        if wanted and status_filter_name(order.status) not in wanted:
            continue
        rows.append(live_order_row(order))
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
    return respond(order_status_body(order, str(st.rng_faults.randint(10000, 99999))))


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


# ----------------------------------------------------------------------------------- rendering
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


def live_order_row(o: Order) -> dict[str, Any]:
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
        "sizeAndFills": f"{fmt_qty(o.filled)}/{thousands(o.quantity)}",
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


def _order_desc(o: Order) -> str:
    verb = "Buy" if o.side == "BUY" else "Sell"
    kind = "Market" if o.order_type == "MKT" else f"Limit {fmt_price(o.limit or Decimal(0))}"
    return f"{verb} {fmt_qty(o.quantity)} {kind}, {o.tif}"


def order_status_body(o: Order, request_id: str) -> dict[str, Any]:
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

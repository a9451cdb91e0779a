"""The control and ground-truth endpoints under ``/sim`` (not part of IBKR's API; docs/simulator.md).

``GET /sim/truth/{accountId}`` (what the simulated broker knows about one account), ``GET
/sim/accounts``, ``GET /sim/stats``, ``GET /sim/ip``, ``GET /sim/scenario``, ``POST /sim/advance``
(move the clock and generate the period's activity), ``POST /sim/faults`` (one-shot faults, session
events, quirks) and ``GET``/``POST /sim/flex`` (the Flex service's knobs).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim import api_oauth2
from ibkr_tasks.sim.api_flex import flex_control
from ibkr_tasks.sim.book import Book
from ibkr_tasks.sim.entities import Account, Execution
from ibkr_tasks.sim.scenario import Quirks
from ibkr_tasks.sim.state import SimState, error, read_json, respond


async def control(st: SimState, request: Request, path: str) -> Response:
    """A ``/sim`` request (``path`` without the ``/sim`` prefix)."""
    method = request.method
    if method == "GET" and path.startswith("/truth/"):
        acct = st.account(path[len("/truth/") :].strip("/"))
        if acct is None:
            return error(f"unknown account {path[len('/truth/') :]!r}; see GET /sim/accounts", 404)
        return respond(truth_body(st.book, acct, st.clock.now()))
    if method == "GET" and path == "/accounts":
        return respond(
            [
                {"account_id": a.account_id, "kind": a.kind, "faclient": a.faclient}
                for a in st.book.accounts.values()
            ]
        )
    if method == "GET" and path == "/stats":
        return respond(_stats(st))
    if method == "GET" and path == "/ip":
        return api_oauth2.ip_echo(request)
    if method == "GET" and path == "/scenario":
        return Response(st.scenario.model_dump_json(), media_type="application/json")
    if method == "POST" and path == "/advance":
        return await _advance(st, request)
    if method == "POST" and path == "/faults":
        return await _faults(st, request)
    if method in ("GET", "POST") and path == "/flex":
        return await flex_control(st, request)
    return error(f"Not Found: {method} /sim{path}", 404)


def _stats(st: SimState) -> dict[str, Any]:
    lim = st.limiter
    return {
        "now": st.clock.now().isoformat(),
        "requests": dict(sorted(st.stats.requests.items())),
        "requests_total": sum(st.stats.requests.values()),
        "statuses": dict(sorted(st.stats.statuses.items())),
        "responses_429": st.stats.responses_429,
        "first_request_at": st.stats.first_request_at,
        "last_request_at": st.stats.last_request_at,
        "rate_limited": st.stats.responses_429,  # alias of responses_429
        "rate_limit_violations": lim.violations,
        "rate_limit_violations_by_endpoint": dict(lim.violations_by_endpoint),
        "penalty_box": lim.box_state(st.clock.mono()),
        "faults_5xx": st.stats.faults_5xx,
        "dropped_order_responses": st.stats.dropped_order_responses,
        "session": {
            "authenticated": st.session.authenticated,
            "brokerage": st.session.brokerage,
            "competing": st.session.competing,
            "epoch": st.session.epoch,
            "expiries": st.session.expiries,
        },
        "handler_ms_max": dict(sorted(st.stats.handler_ms_max.items())),
        "handler_ms_max_overall": max(st.stats.handler_ms_max.values(), default=0.0),
        "handler_cpu_ms_max": dict(sorted(st.stats.handler_cpu_ms_max.items())),
        "handler_cpu_ms_max_overall": max(st.stats.handler_cpu_ms_max.values(), default=0.0),
        "executions_total": len(st.book.executions),
        "oauth2": st.oauth2.stats(),
    }


async def _advance(st: SimState, request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        return error('expected {"days": n} or {"seconds": n}', 400)
    try:
        seconds = float(body.get("days", 0)) * 86400 + float(body.get("seconds", 0))
    except (TypeError, ValueError):
        return error('expected {"days": n} or {"seconds": n} with numbers', 400)
    if seconds < 0:
        return error("the simulator clock only moves forward", 400)
    started = time.perf_counter()
    before = st.clock.now().replace(microsecond=0)
    st.clock.advance(seconds)
    after = st.clock.now().replace(microsecond=0)
    st.book.advance(before, after)
    return respond(
        {
            "now": after.isoformat(),
            "advanced_seconds": seconds,
            "executions_total": len(st.book.executions),
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )


async def _faults(st: SimState, request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        return error("expected a JSON object", 400)
    s = st.session
    if body.get("expire_session"):
        s.expire()
    if "competing" in body:
        s.competing = bool(body["competing"])
        if s.competing:
            s.invalidate_reply()
    if body.get("drop_bridge"):
        s.brokerage = False
    if "drop_next_order_response" in body:
        st.faults.drop_next_order_responses = int(body["drop_next_order_response"])
    if "fail_next_requests" in body:
        st.faults.fail_next_requests = int(body["fail_next_requests"])
    if "fail_accounts" in body:
        st.faults.fail_accounts = {str(a) for a in body["fail_accounts"] or []}
    if "secdef_omit" in body:
        try:
            st.faults.secdef_omit = {int(c) for c in body["secdef_omit"] or []}
        except (TypeError, ValueError):
            return error("secdef_omit must be a list of conids", 400)
    if body.get("release_penalty_box"):
        st.limiter.release()
    if "quirks" in body:
        try:
            merged = {**st.quirks.model_dump(), **dict(body["quirks"])}
            st.set_quirks(Quirks.model_validate(merged))
        except (ValidationError, TypeError, ValueError) as exc:
            return error(f"invalid quirks: {exc}", 400)
    return respond(
        {
            "session": {
                "authenticated": s.authenticated,
                "brokerage": s.brokerage,
                "competing": s.competing,
            },
            "drop_next_order_response": st.faults.drop_next_order_responses,
            "fail_next_requests": st.faults.fail_next_requests,
            "fail_accounts": sorted(st.faults.fail_accounts),
            "secdef_omit": sorted(st.faults.secdef_omit),
            "quirks": st.quirks.model_dump(mode="json"),
        }
    )


# ----------------------------------------------------------------------------------- truth
def truth_body(book: Book, acct: Account, now: datetime) -> dict[str, Any]:
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

"""Portfolio endpoints (positions pages, invalidate, portfolio2, summary, ledger) and the trades endpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ibkr_tasks.sim import render
from ibkr_tasks.sim.book import Account
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.state import (
    SimState,
    bad_account,
    error,
    respond,
)


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
    return respond([render.position_row(st.book, acct, inst, qty, cost, now) for inst, qty, cost in rows])


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
        [render.portfolio2_row(st.book, i, pos.qty, pos.cost, now) for i, pos in st.book.open_positions(acct)]
    )


async def summary(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    return respond(render.summary(st.book, acct, st.clock.now()))


async def ledger(st: SimState, req: Request, p: dict[str, str]) -> Response:
    acct = st.account(p["acct"])
    if acct is None:
        return bad_account(p["acct"])
    return respond(render.ledger(st.book, acct, st.clock.now()))


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
            rows = acct.day_segment(day)
            if rows:
                if len(parts) > 1:
                    parts.append(b",")
                parts.append(rows)
    parts.append(b"]")
    st.book.shown.update(in_window())
    # The rows are ready in memory; streaming them avoids one more copy of a response that reaches tens
    # of MB at 100 accounts x 500 fills/day (the work is done here, inside the measured handler time).
    return StreamingResponse(iter(parts), media_type="application/json")

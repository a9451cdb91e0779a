"""Session and account endpoints: auth status, tickle, ssodh/init, logout, /iserver/accounts, /portfolio/accounts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim import render
from ibkr_tasks.sim.state import (
    SimState,
    error,
    read_json,
    respond,
)


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
    return respond(_auth_status(st))


async def tickle(st: SimState, req: Request, p: dict[str, str]) -> Response:
    s = st.session
    expires_ms = 600_000
    if st.quirks.session_expiry_seconds is not None:
        left = st.quirks.session_expiry_seconds - (st.clock.mono() - s.init_at)
        expires_ms = max(0, int(left * 1000))
    status = _auth_status(st)
    status.pop("fail")
    return respond(
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
    body = await read_json(req)
    if not isinstance(body, dict) or body.get("publish") is not True:
        return error("publish must be true", 500)
    s = st.session
    if s.competing and body.get("compete") is not True:
        s.authenticated = True
        return respond(
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
    return respond(out)


async def logout(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.authenticated = False
    st.session.brokerage = False
    st.session.invalidate_reply()
    return respond({"status": True})


# ----------------------------------------------------------------------------------- accounts
async def iserver_accounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    if st.session.competing:
        return respond({})
    st.session.iserver_accounts_done = True
    session_id = f"{st.session.session_hex[:8]}.{st.session.epoch:08x}"
    return respond(render.iserver_accounts(st.book, session_id, st.selected_account()))


async def switch_account(st: SimState, req: Request, p: dict[str, str]) -> Response:
    body = await read_json(req)
    acct_id = body.get("acctId") if isinstance(body, dict) else None
    if not isinstance(acct_id, str) or acct_id not in st.book.accounts:
        return error(f"Bad Request: accountId is not valid: {acct_id}", 500)
    if st.selected_account() == acct_id:
        return respond({"set": False, "acctId": acct_id, "message": "Account already set"})
    st.session.selected_account = acct_id
    return respond({"set": True, "acctId": acct_id})


async def portfolio_accounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.portfolio_accounts_done = True
    return respond([render.portfolio_account(st.book, a) for a in st.book.accounts.values()])


async def portfolio_subaccounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.portfolio_accounts_done = True
    return respond([render.portfolio_account(st.book, a) for a in st.book.accounts.values() if a.faclient])

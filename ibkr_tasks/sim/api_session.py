"""Session and account endpoints: auth status, tickle, ssodh/init, logout, /iserver/accounts, /portfolio/accounts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.book import Book
from ibkr_tasks.sim.entities import Account
from ibkr_tasks.sim.formats import ms
from ibkr_tasks.sim.state import (
    SimState,
    error,
    read_json,
    respond,
)

SERVER_INFO = {"serverName": "JifSim0001", "serverVersion": "Build 10.44.1d, Mar 3, 2026 1:55:32 PM"}
MAC = "F4:03:43:CD:BD:C0"


def _auth_status(st: SimState) -> dict[str, Any]:
    s = st.session
    return {
        "MAC": MAC,
        "authenticated": s.brokerage and s.authenticated,
        "competing": s.competing,
        "connected": s.authenticated,
        "fail": "",
        "hardware_info": f"1c4558e8|{MAC}",
        "message": "",
        "serverInfo": dict(SERVER_INFO),
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
                "hardware_info": f"1c4558e8|{MAC}",
                "MAC": MAC,
                "message": "",
                "serverInfo": dict(SERVER_INFO),
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
    return respond(iserver_accounts_body(st.book, session_id, st.selected_account()))


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
    return respond([portfolio_account_row(st.book, a) for a in st.book.accounts.values()])


async def portfolio_subaccounts(st: SimState, req: Request, p: dict[str, str]) -> Response:
    st.session.portfolio_accounts_done = True
    return respond([portfolio_account_row(st.book, a) for a in st.book.accounts.values() if a.faclient])


# ----------------------------------------------------------------------------------- rendering
def iserver_accounts_body(book: Book, session_id: str, selected: str | None = None) -> dict[str, Any]:
    """GET /iserver/accounts: every account of the login, their properties and the selected one."""
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


def portfolio_account_row(book: Book, acct: Account) -> dict[str, Any]:
    """One element of GET /portfolio/accounts (``faclient`` lower-case as at IBKR)."""
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

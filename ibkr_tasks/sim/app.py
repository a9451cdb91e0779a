"""The API's route table: which handler answers which ``/v1/api`` path, and what each route requires.

The handlers live in ``api_session``, ``api_portfolio``, ``api_orders`` and ``api_market``; the request
pipeline (latency, pacing, faults, session checks, timing) is in ``asgi``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.api_market import (
    contract_info,
    forecast_details,
    secdef_info,
    secdef_search,
    snapshot,
    trsrv_secdef,
    trsrv_stocks,
)
from ibkr_tasks.sim.api_orders import (
    cancel_order,
    live_orders,
    order_status,
    place_order,
    reply,
    suppress,
    suppress_reset,
)
from ibkr_tasks.sim.api_portfolio import (
    ledger,
    portfolio2_positions,
    positions_invalidate,
    positions_page,
    summary,
    trades,
)
from ibkr_tasks.sim.api_session import (
    auth_status,
    iserver_accounts,
    logout,
    portfolio_accounts,
    portfolio_subaccounts,
    ssodh_init,
    switch_account,
    tickle,
)
from ibkr_tasks.sim.prompts import PROMPTS
from ibkr_tasks.sim.state import DropResponse, SimState, SimulatedReadTimeout

__all__ = ["PROMPTS", "ROUTES", "DropResponse", "Route", "SimState", "SimulatedReadTimeout", "match"]

Handler = Callable[[SimState, Request, dict[str, str]], Awaitable[Response]]


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
    _route("GET", "/trsrv/stocks", trsrv_stocks),
    _route("GET", "/forecast/contract/details", forecast_details),
]


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for ``path`` (relative to /v1/api). Literal routes win over templated ones."""
    for route in ROUTES:
        m = route.pattern.match(path)
        if m and method in route.methods:
            return route, m.groupdict()
    return None

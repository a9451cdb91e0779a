"""``create_app``: the ASGI callable, its request pipeline and the ``/sim`` control/truth endpoints.

Every API request goes through one pipeline, in this order: count it, add latency (and the slow-ratio
delay), pacing (429 + penalty box), random 5xx, session checks (401 expired, 400 "no bridge", competing
session, "Please query /accounts first"), invalidate a pending reply prompt unless this is its reply,
then the handler (its wall and CPU time are measured and reported in ``/sim/stats``).
``/sim/...`` requests (:mod:`ibkr_tasks.sim.control`) skip the pipeline; they are not part of IBKR's
API. ``/flex/...`` is the Flex Web Service (:mod:`ibkr_tasks.sim.api_flex`), ``/oauth2/...`` and
``/gw/...`` the OAuth 2.0 endpoints (:mod:`ibkr_tasks.sim.api_oauth2`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ibkr_tasks.sim import api_oauth2
from ibkr_tasks.sim.api_flex import flex_endpoint
from ibkr_tasks.sim.app import match
from ibkr_tasks.sim.clock import SimClock
from ibkr_tasks.sim.control import control
from ibkr_tasks.sim.oauth2 import SSOSession
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.state import (
    API_PREFIX,
    NO_BRIDGE,
    NOT_AUTHENTICATED,
    QUERY_ACCOUNTS_FIRST,
    DropResponse,
    SimState,
    SimulatedReadTimeout,
    error,
    respond,
)

_NO_SESSION_NEEDED = {"/iserver/auth/ssodh/init"}
ARRIVED_SCOPE_KEY = "ibkr_sim.arrived"
"""Scope key a server may fill in: when the request's bytes reached the machine (``time.time()``
seconds; :mod:`ibkr_tasks.sim.arrival` takes the kernel's receive time)."""
ARRIVED_HEADER = "x-sim-arrived"
"""Response header of every API answer: when the simulator counted the request (wall-clock seconds)."""


class SimApp:
    """The simulator as an ASGI app; ``app.state.sim`` is the live :class:`SimState`."""

    def __init__(self, sim: SimState) -> None:
        self.state = State()
        self.state.sim = sim

    @property
    def sim(self) -> SimState:
        return self.state.sim  # type: ignore[no-any-return]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        # IBKR counts a request when it arrives: the kernel's receive time when the server passes it on,
        # else the time now, before anything else this app does for it (and before the simulated
        # latency, whose wake-ups a busy event loop could bunch).
        wall, mono = time.time(), self.sim.clock.mono()
        stamped = scope.get(ARRIVED_SCOPE_KEY)
        if isinstance(stamped, float) and 0 <= wall - stamped < 60:
            wall, mono = stamped, mono - (wall - stamped)
        arrived = (wall, mono)
        request = Request(scope, receive)
        path: str = scope["path"]
        if path.startswith(API_PREFIX + "/"):
            response = await self._api(request, path[len(API_PREFIX) :], arrived)
            # When the request was counted (wall-clock seconds): how late the server saw it after the
            # client sent it is what the limits' margin has to cover (bench/reconcile.py --trace).
            response.headers[ARRIVED_HEADER] = f"{arrived[0]:.6f}"
        elif path.startswith("/sim/"):
            response = await control(self.sim, request, path[len("/sim") :])
        elif path.startswith("/flex/"):
            response = await flex_endpoint(self.sim, request, path[len("/flex") :])
        elif path.startswith(("/oauth2/", "/gw/")):
            response = await api_oauth2.endpoint(self.sim, request, path)
        else:
            response = error(
                f"Not Found: {path} (the API lives under {API_PREFIX}, Flex under /flex, control under /sim)",
                404,
            )
        await response(scope, receive, send)

    # ------------------------------------------------------------------ the API pipeline
    async def _api(self, request: Request, path: str, arrived: tuple[float, float]) -> Response:
        st = self.sim
        q = st.quirks
        found = match(request.method, path)
        key = f"{request.method} {found[0].key if found else path}"
        st.stats.requests[key] = st.stats.requests.get(key, 0) + 1
        if st.stats.first_request_at is None:
            st.stats.first_request_at = arrived[0]
        st.stats.last_request_at = arrived[0]
        response = await self._pipeline(st, q, request, path, found, key, arrived[1])
        code = str(response.status_code)
        st.stats.statuses[code] = st.stats.statuses.get(code, 0) + 1
        if response.status_code == 429:
            st.stats.responses_429 += 1
        return response

    async def _pipeline(
        self, st: SimState, q: Quirks, request: Request, path: str, found: Any, key: str, arrived: float
    ) -> Response:
        delay = q_latency = st.scenario.latency_ms / 1000
        if q.slow_ratio and st.rng_faults.random() < q.slow_ratio:
            delay = q_latency + q.slow_ms / 1000
        if delay > 0:
            await st.sleep(delay)
        if q.rate_limits:
            ip = request.client.host if request.client else "unknown"
            route_key = found[0].key if found else path
            why = st.limiter.check(ip, request.method, route_key, arrived)
            if why is not None:
                return respond({"error": f"Too Many Requests ({why})", "statusCode": 429}, 429)
        if found is None:
            return error(f"Not Found: {request.method} {API_PREFIX}{path} is not simulated", 404)
        route, params = found
        if st.faults.fail_next_requests > 0 or (
            q.error_rate_5xx and st.rng_faults.random() < q.error_rate_5xx
        ):
            st.faults.fail_next_requests = max(0, st.faults.fail_next_requests - 1)
            st.stats.faults_5xx += 1
            if st.rng_faults.random() < 0.5:
                return respond({"error": "Internal Server Error", "statusCode": 500}, 500)
            return respond({"error": "Service Unavailable", "statusCode": 503}, 503)
        if st.faults.fail_accounts and params.get("acct") in st.faults.fail_accounts:
            st.stats.faults_5xx += 1
            return respond({"error": "Internal Server Error", "statusCode": 500}, 500)
        sso: SSOSession | None = None
        if st.scenario.oauth2 is not None:
            # OAuth 2.0 mode: an unexpired SSO bearer, whose brokerage session /iserver needs opened.
            sso, refused = api_oauth2.bearer_session(st, request)
            if refused is not None:
                return refused
            assert sso is not None
            if route.iserver and not sso.bridged:
                return respond(NO_BRIDGE, 400)
        refused = self._session_check(st, q, route, request)
        if refused is not None:
            return refused
        # Any request other than the reply to the pending prompt makes that reply id stale.
        s = st.session
        if s.current_reply is not None and not (
            route.key == "/iserver/reply/{id}" and params.get("id") == s.current_reply
        ):
            s.invalidate_reply()
        started = (time.perf_counter(), time.thread_time())
        try:
            response = await route.handler(st, request, params)
        except DropResponse:
            self._timed(st, key, started)
            st.stats.dropped_order_responses += 1
            if _over_a_socket(st, request):
                await st.sleep(q.drop_delay_seconds)
                return respond({"error": "Gateway Timeout", "statusCode": 504}, 504)
            raise SimulatedReadTimeout(
                "simulated: the order was accepted but its response was dropped (check live orders)"
            ) from None
        self._timed(st, key, started)
        if sso is not None and route.key == "/iserver/auth/ssodh/init" and response.status_code == 200:
            sso.bridged = st.session.brokerage
        return response

    @staticmethod
    def _timed(st: SimState, key: str, started: tuple[float, float]) -> None:
        """Record the handler's wall time (perf_counter) and CPU time (thread_time; unaffected by other
        processes competing for the machine)."""
        wall = (time.perf_counter() - started[0]) * 1000
        cpu = (time.thread_time() - started[1]) * 1000
        if wall > st.stats.handler_ms_max.get(key, 0.0):
            st.stats.handler_ms_max[key] = round(wall, 3)
        if cpu > st.stats.handler_cpu_ms_max.get(key, 0.0):
            st.stats.handler_cpu_ms_max[key] = round(cpu, 3)

    @staticmethod
    def _session_check(st: SimState, q: Quirks, route: Any, request: Request) -> Response | None:
        s = st.session
        s.requests_since_init += 1
        if route.key in _NO_SESSION_NEEDED:
            return None
        if s.authenticated and (
            (q.session_expiry_requests is not None and s.requests_since_init > q.session_expiry_requests)
            or (
                q.session_expiry_seconds is not None
                and st.clock.mono() - s.init_at >= q.session_expiry_seconds
            )
        ):
            s.expire()
        if not s.authenticated:
            return respond(NOT_AUTHENTICATED, 401)
        if route.iserver:
            if s.competing and route.key != "/iserver/accounts":
                return respond(NO_BRIDGE, 400)
            if not s.brokerage and not s.competing:
                return respond(NO_BRIDGE, 400)
        if q.require_accounts_preflight:
            if route.preflight == "iserver" and not s.iserver_accounts_done:
                return error(QUERY_ACCOUNTS_FIRST, 500)
            if route.preflight == "portfolio" and not s.portfolio_accounts_done:
                return error("Please query /portfolio/accounts first", 500)
        return None


def _over_a_socket(st: SimState, request: Request) -> bool:
    """Whether this request came through a real server (explicit ``served``, else auto-detected: ASGI
    servers such as uvicorn declare ``asgi.spec_version`` in the scope, httpx's ASGITransport does not)."""
    if st.served is not None:
        return st.served
    return "spec_version" in request.scope.get("asgi", {})


def create_app(
    scenario: Scenario | None = None,
    *,
    wall_clock: Callable[[], datetime] | None = None,
    monotonic: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    served: bool | None = None,
) -> SimApp:
    """Build the simulator for ``scenario`` (default ``Scenario()``).

    ``wall_clock``/``monotonic``/``sleep`` replace real time (tests; a fixed ``wall_clock`` makes every
    payload byte-identical for a seed). Over a socket (``served=True``, or auto-detected when ``served``
    is None) a dropped order response hangs ``drop_delay_seconds`` and then answers 504, which a client
    with a shorter timeout sees as a read timeout; in-process the app raises :class:`httpx.ReadTimeout`.
    """
    sc = scenario or Scenario()
    clock = SimClock(wall_clock, monotonic)
    return SimApp(SimState(sc, clock, sleep or asyncio.sleep, served))

"""The simulator's live state (``app.state.sim``) and the small helpers every endpoint uses.

:class:`SimState` holds the brokerage (:class:`~ibkr_tasks.sim.book.Book`), the clock, the gateway
session, the pacing limiter, the counters behind ``/sim/stats``, the one-shot faults, the OAuth 2.0
and Flex service state and the orders placed through the API. The helpers build JSON responses the
way the gateway answers (``respond``, ``error``, ``bad_account``) and read request bodies.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.book import Book
from ibkr_tasks.sim.catalog import Instrument
from ibkr_tasks.sim.clock import SimClock
from ibkr_tasks.sim.entities import Account, Order
from ibkr_tasks.sim.flex import FlexSim
from ibkr_tasks.sim.formats import dumps
from ibkr_tasks.sim.limits import RateLimiter
from ibkr_tasks.sim.oauth2 import new_state as new_oauth2_state
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.session import Session

API_PREFIX = "/v1/api"

NOT_AUTHENTICATED = {"error": "not authenticated", "statusCode": 401}
NO_BRIDGE = {"error": "Bad Request: no bridge", "statusCode": 400}
QUERY_ACCOUNTS_FIRST = "Please query /accounts first"


class DropResponse(Exception):
    """Raised by a handler after the order was accepted: the client must not get the answer."""


class SimulatedReadTimeout(httpx.ReadTimeout):
    """What an in-process httpx client sees for a dropped order response (the order exists)."""


@dataclass
class Stats:
    """Counters behind ``GET /sim/stats``."""

    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    handler_ms_max: dict[str, float] = field(default_factory=dict)
    handler_cpu_ms_max: dict[str, float] = field(default_factory=dict)
    responses_429: int = 0
    faults_5xx: int = 0
    dropped_order_responses: int = 0
    # Wall-clock (epoch seconds) arrival of the first and the last API request: lets a benchmark
    # tell the client's own start-up and wind-down time from the time spent talking to the API.
    first_request_at: float | None = None
    last_request_at: float | None = None


@dataclass
class Faults:
    """One-shot faults switched on through ``POST /sim/faults``."""

    drop_next_order_responses: int = 0
    fail_next_requests: int = 0
    fail_accounts: set[str] = field(default_factory=set)  # every request naming one answers 500
    secdef_omit: set[int] = field(default_factory=set)  # conids /trsrv/secdef leaves out


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
        self.limiter = RateLimiter(
            q.global_rate_per_second, q.penalty_box_seconds, q.effective_pacing_scale()
        )
        self.stats = Stats()
        self.faults = Faults()
        self.rng_faults = random.Random(f"{scenario.seed}|faults")
        self.rng_orders = random.Random(f"{scenario.seed}|orders")
        self.session.session_hex = f"{self.rng_faults.getrandbits(128):032x}"
        self.oauth2 = new_oauth2_state(scenario.seed)  # OAuth 2.0 tokens and SSO sessions (Scenario.oauth2)
        self.flex = FlexSim()  # the Flex Web Service's knobs and outstanding reference codes
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
        self.limiter.scale = quirks.effective_pacing_scale()

    def account(self, account_id: str) -> Account | None:
        return self.book.accounts.get(account_id)

    def selected_account(self) -> str:
        """The account the brokerage session has selected: the one last chosen by
        ``POST /iserver/account`` or a trades ``accountId``, else the login's default (an FA master
        itself, otherwise its first trading account)."""
        if self.session.selected_account is not None:
            return self.session.selected_account
        return self.book.default_account()

    def answered_by(self, account_id: str) -> list[Account]:
        """The accounts whose executions a trades request for ``account_id`` answers: an FA master
        answers its client sub-accounts, any other account only itself."""
        acct = self.book.accounts[account_id]
        if acct.kind == "master":
            return [a for a in self.book.trading_accounts() if a.faclient]
        return [acct]


# ----------------------------------------------------------------------------------- helpers
def respond(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


def error(message: str, status: int = 200) -> Response:
    body: dict[str, Any] = {"error": message}
    if status != 200:
        body["statusCode"] = status
    return respond(body, status)


def bad_account(account_id: str) -> Response:
    return error(f"Bad Request: accountId is not valid: {account_id}", 400)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def to_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None

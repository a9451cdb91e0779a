"""Shared helpers for the endpoint tests (tests/test_api_*.py): the real Transport on respx + FakeClock.

The endpoint tests exercise the real stack (IBKRClient -> Transport -> httpx) with HTTP mocked by
respx at ``BASE`` and pacing/backoff/pre-flight pauses on virtual time (FakeClock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx
from conftest import payload

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

BASE = "https://gw.test/v1/api"
ACCT = "DU1234567"
OTHER = "DU7654321"


def make_client(clock: FakeClock, **kwargs: Any) -> IBKRClient:
    settings = IBKRSettings(api_url=BASE, access_token="gateway-placeholder-token-0001")
    transport = Transport(settings, clock=clock, sleep=clock.sleep, jitter=lambda: 0.5)
    return IBKRClient(transport, sleep=clock.sleep, clock=clock, **kwargs)


@contextmanager
def gateway(accounts: tuple[str, ...] = (ACCT, OTHER)) -> Iterator[respx.MockRouter]:
    """respx router with the account pre-flights answered."""
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/iserver/accounts").respond(
            200, json={"accounts": list(accounts), "selectedAccount": accounts[0], "aliases": {}}
        )
        router.get("/portfolio/accounts").respond(
            200, json=[{"id": a, "accountId": a, "currency": "USD", "type": "DEMO"} for a in accounts]
        )
        # Bulk contract info answers every conid as a USD stock, and contract info of any conid is a
        # stock, unless a test swaps a route's side effect (router["secdef"].mock(side_effect=...)).
        router.get("/trsrv/secdef", name="secdef").mock(side_effect=secdef_stocks)
        router.get(url__regex=r".*/iserver/contract/(?P<conid>\d+)/info$", name="contract_info").mock(
            side_effect=lambda request, conid: httpx.Response(
                200, json={"con_id": int(conid), "instrument_type": "STK", "multiplier": None}
            )
        )
        yield router


def secdef_row(conid: int, **extra: Any) -> dict[str, Any]:
    """One element of ``/trsrv/secdef``'s ``secdef`` list (a USD stock unless ``extra`` says otherwise)."""
    row: dict[str, Any] = {
        "conid": conid,
        "currency": "USD",
        "assetClass": "STK",
        "ticker": f"S{conid}",
        "name": f"STOCK {conid}",
        "listingExchange": "NASDAQ.NMS",
        "multiplier": 0.0,
        "undConid": 0,
        "isEventContract": False,
    }
    row.update(extra)
    return row


def secdef_conids(request: httpx.Request) -> list[int]:
    """The conids a ``/trsrv/secdef`` request asked about."""
    return [int(c) for c in request.url.params["conids"].split(",")]


def secdef_stocks(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"secdef": [secdef_row(c) for c in secdef_conids(request)]})


def requests_to(router: respx.MockRouter, method: str, path: str) -> list[httpx.Request]:
    """Requests the mock saw with this method and API-relative path (query string ignored)."""
    return [
        c.request
        for c in router.calls
        if c.request.method == method and c.request.url.path.removeprefix("/v1/api") == path
    ]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_payloads_directory_is_present() -> None:
    assert payload("iserver_account_trades_tax-loss-direct-indexing.json")

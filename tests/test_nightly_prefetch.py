"""The nightly run asks for an account's positions the moment the trades answer covering it arrives:
the wait happens in the client (on its I/O loop), and a failed trades collection stops it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import respx
from test_api_fills import TRADES, fa_gateway, trade
from test_api_support import ACCT, OTHER, make_client

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.nightly import SharedFills, SharedFillsFailed

INVALIDATE = f"/portfolio/{ACCT}/positions/invalidate"


def _order(router: respx.MockRouter) -> list[str]:
    return [call.request.url.path.removeprefix("/v1/api") for call in router.calls]


@contextmanager
def _gateway() -> Iterator[respx.MockRouter]:
    """An FA login answering one trades call for both accounts, and ACCT's positions."""
    with fa_gateway() as router:
        router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01"), trade(OTHER, "b.01.01")])
        router.post(INVALIDATE).respond(200, json={"message": "success"})
        router.get(f"/portfolio/{ACCT}/positions/0").respond(200, json=[])
        yield router


async def test_positions_after_trades_go_out_only_once_the_answer_has_arrived(clock: FakeClock) -> None:
    with _gateway() as router:
        client = make_client(clock)
        positions = asyncio.ensure_future(client.positions(ACCT, invalidate=True, after_trades=True))
        for _ in range(20):  # it would have sent by now if it did not wait
            await asyncio.sleep(0)
        assert INVALIDATE not in _order(router)
        await client.fills([ACCT, OTHER])
        await positions
        order = _order(router)
    assert order.index(TRADES) < order.index(INVALIDATE)


async def test_without_waiting_positions_go_out_first(clock: FakeClock) -> None:
    """The control: started first and not told to wait, the positions are asked for first."""
    with _gateway() as router:
        client = make_client(clock)
        positions = asyncio.ensure_future(client.positions(ACCT, invalidate=True))
        await asyncio.sleep(0)
        await asyncio.gather(client.fills([ACCT, OTHER]), positions)
        order = _order(router)
    assert order.index(INVALIDATE) < order.index(TRADES)


async def _never() -> None:
    await asyncio.Event().wait()  # a trades answer that never comes


async def test_a_failed_collection_cancels_the_waiting_fetch() -> None:
    shared = SharedFills([ACCT])
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    shared._done = failed
    waiting = asyncio.ensure_future(_never())

    async def fetch() -> None:
        await waiting

    guarded = asyncio.ensure_future(shared.guard(fetch()))
    await asyncio.sleep(0)
    shared.error = "ServerError: GET /iserver/account/trades: IBKR answered HTTP 500"
    failed.set_result(None)
    try:
        await guarded
    except SharedFillsFailed as exc:
        assert "HTTP 500" in str(exc)
    else:
        raise AssertionError("the account's fetch outlived the failed trades collection")
    await asyncio.sleep(0)
    assert waiting.cancelled()


async def test_a_collection_that_failed_before_fetches_nothing() -> None:
    shared = SharedFills([ACCT], error="ConfigurationError: no trades scope")
    started: list[bool] = []

    async def fetch() -> None:
        started.append(True)

    try:
        await shared.guard(fetch())
    except SharedFillsFailed:
        pass
    else:
        raise AssertionError("expected SharedFillsFailed")
    assert started == []


async def test_a_collection_that_succeeds_first_lets_the_fetch_finish() -> None:
    shared = SharedFills([ACCT])
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    shared._done = done
    release = asyncio.Event()

    async def fetch() -> str:
        await release.wait()
        return "positions"

    guarded = asyncio.ensure_future(shared.guard(fetch()))
    await asyncio.sleep(0)
    done.set_result(None)  # parsed and looked up while the positions are still being fetched
    await asyncio.sleep(0)
    release.set()
    assert await guarded == "positions"

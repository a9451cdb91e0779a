"""BackgroundClient: the client's I/O runs on its own loop thread, awaited from the caller's loop."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time

import httpx
import pytest

from ibkr_tasks.client.background import (
    FAST_SWITCH_INTERVAL,
    FULL_COLLECTION_SPACING,
    BackgroundClient,
    gc_frozen,
    switch_interval,
)
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.sim import Scenario, create_app


async def test_calls_run_on_the_io_thread_and_close_stops_it() -> None:
    app = create_app(Scenario(seed=2, accounts=2, positions_per_account=3))
    settings = IBKRSettings(api_url="http://sim/v1/api", access_token="gateway")
    caller = threading.current_thread().name

    async def where() -> str:
        return threading.current_thread().name

    before = sys.getswitchinterval()
    async with BackgroundClient(settings, http_transport=httpx.ASGITransport(app=app)) as client:
        assert sys.getswitchinterval() == before  # a library call leaves the interpreter alone
        accounts = await client.list_accounts()
        assert len([a for a in accounts if a.account_id.startswith("DU")]) == 2
        positions = await client.positions(accounts[0].account_id)
        assert positions.rejected == []
        assert await client._run(where) == "ibkr-io" != caller
        # the I/O loop makes progress while the caller's loop is blocked
        pending = asyncio.run_coroutine_threadsafe(client.client.list_accounts(), client._loop)
        deadline = time.monotonic() + 5
        while not pending.done() and time.monotonic() < deadline:
            time.sleep(0.01)  # blocks this loop on purpose
        assert pending.done() and len(pending.result()) == len(accounts)
        thread = client._thread
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="not open"):
        await client.list_accounts()


async def test_switch_interval_is_opt_in_scoped_and_restored() -> None:
    app = create_app(Scenario(seed=2, accounts=1))
    settings = IBKRSettings(api_url="http://sim/v1/api", access_token="gateway", keep_alive_interval=0)
    before = sys.getswitchinterval()
    assert before > FAST_SWITCH_INTERVAL
    first = BackgroundClient(
        settings, switch_interval=FAST_SWITCH_INTERVAL, http_transport=httpx.ASGITransport(app=app)
    )
    second = BackgroundClient(settings, switch_interval=0.002, http_transport=httpx.ASGITransport(app=app))
    async with first:
        assert sys.getswitchinterval() == FAST_SWITCH_INTERVAL
        await second.__aenter__()
        assert sys.getswitchinterval() == FAST_SWITCH_INTERVAL  # the shortest asked for holds
    # the first closed while the second is still open: the process's interval comes back only at the end
    assert sys.getswitchinterval() == FAST_SWITCH_INTERVAL
    await second.aclose()
    assert sys.getswitchinterval() == before


async def test_a_client_that_fails_to_open_restores_the_interval_and_stops_its_thread() -> None:
    before = sys.getswitchinterval()
    client = BackgroundClient(
        IBKRSettings(api_url="http://sim/v1/api", keep_alive_interval=0),
        switch_interval=FAST_SWITCH_INTERVAL,
        no_such_option=True,  # Transport refuses it on the I/O loop
    )
    with pytest.raises(TypeError):
        async with client:
            pass
    assert sys.getswitchinterval() == before
    assert not client._thread.is_alive()


def test_switch_interval_block() -> None:
    before = sys.getswitchinterval()
    with switch_interval(0.0005):
        assert sys.getswitchinterval() == 0.0005
        with switch_interval(0.003):  # never lengthens what an outer block asked for
            assert sys.getswitchinterval() == 0.0005
        assert sys.getswitchinterval() == 0.0005
    assert sys.getswitchinterval() == before
    with pytest.raises(ValueError):
        with switch_interval(0):
            pass


def test_gc_frozen_keeps_the_heap_out_of_full_collections_inside_the_block_only() -> None:
    """Objects held on entry are frozen (a full collection does not walk them) until the last of
    overlapping blocks exits; then they are the collector's again and garbage among them is freed."""
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    held = [object() for _ in range(1000)]
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen >= len(held)
        # and full collections (of what the run makes) are considered ten times less often
        assert gc.get_threshold() == (*thresholds[:2], thresholds[2] * FULL_COLLECTION_SPACING)
        with gc_frozen():
            assert gc.get_freeze_count() >= frozen
        assert gc.get_freeze_count() >= frozen  # the inner block's exit does not thaw the outer one's
        assert gc.get_threshold()[2] == thresholds[2] * FULL_COLLECTION_SPACING
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    del held


def test_gc_frozen_leaves_a_process_that_froze_its_heap_itself_alone() -> None:
    gc.freeze()  # a forked server's choice
    try:
        before = gc.get_freeze_count()
        made_since = [object() for _ in range(1000)]
        with gc_frozen():
            assert gc.get_freeze_count() < before + len(made_since)  # it froze nothing more
        assert gc.get_freeze_count() > 0  # and thawed nothing
    finally:
        gc.unfreeze()
    del made_since

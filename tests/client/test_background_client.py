"""BackgroundClient: the client's I/O runs on its own loop thread, awaited from the caller's loop."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import httpx
import pytest

from ibkr_tasks.client.background import BackgroundClient
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
        assert sys.getswitchinterval() <= 0.001  # the I/O thread gets the GIL soon after its timer
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
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError, match="not open"):
        await client.list_accounts()

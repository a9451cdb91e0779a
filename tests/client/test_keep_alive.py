"""An open client keeps its session alive on its own: ``/tickle`` about every 60 s from a background task
that starts when the transport (or the client, or a BackgroundClient) opens and stops when it closes.
All on virtual time (FakeClock): no test waits for a real minute."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.background import BackgroundClient
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

BASE = "https://localhost:5000/v1/api"
ALIVE = {"session": "abc", "iserver": {"authStatus": {"authenticated": True, "connected": True}}}


class Gateway:
    """A MockTransport that records when (on ``clock``) each tickle arrived."""

    def __init__(self, clock: Callable[[], float], fail_first: int = 0) -> None:
        self.clock = clock
        self.tickles: list[float] = []
        self.fail_first = fail_first

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tickle"):
            self.tickles.append(self.clock())
            if len(self.tickles) <= self.fail_first:
                raise RuntimeError("the handler blew up")  # not an httpx error: escapes the transport
            return httpx.Response(200, json=ALIVE)
        return httpx.Response(200, json=[])

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def settings(**kwargs: object) -> IBKRSettings:
    return IBKRSettings(api_url=BASE, **kwargs)  # type: ignore[arg-type]


async def test_open_transport_tickles_every_interval_until_closed() -> None:
    clock = FakeClock()
    gw = Gateway(clock)
    t = Transport(settings(), http_transport=gw.transport(), clock=clock, sleep=clock.sleep)
    async with t:
        await clock.sleep(185)  # the flow is busy elsewhere; nobody calls tickle()
        assert [round(s - 1000) for s in gw.tickles] == [60, 120, 180]
    await clock.sleep(600)
    assert len(gw.tickles) == 3  # closed: the task was cancelled with the transport


async def test_interval_comes_from_settings_and_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_KEEP_ALIVE_INTERVAL", "30")
    clock = FakeClock()
    gw = Gateway(clock)
    async with Transport(
        IBKRSettings(api_url=BASE), http_transport=gw.transport(), clock=clock, sleep=clock.sleep
    ):
        await clock.sleep(95)
    assert len(gw.tickles) == 3
    off = Gateway(clock)
    async with Transport(
        settings(keep_alive_interval=0), http_transport=off.transport(), clock=clock, sleep=clock.sleep
    ):
        await clock.sleep(600)
    assert off.tickles == []


async def test_a_short_interval_is_still_paced_within_the_tickle_limit() -> None:
    clock = FakeClock()
    gw = Gateway(clock)
    async with Transport(
        settings(keep_alive_interval=0.1), http_transport=gw.transport(), clock=clock, sleep=clock.sleep
    ):
        await clock.sleep(10)
    assert len(gw.tickles) >= 5
    gaps = [b - a for a, b in zip(gw.tickles, gw.tickles[1:], strict=False)]
    assert min(gaps) >= 1.0  # IBKR allows one tickle per second; the limiter spaces them


async def test_keep_alive_outlives_unexpected_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    gw = Gateway(clock, fail_first=2)
    async with Transport(settings(), http_transport=gw.transport(), clock=clock, sleep=clock.sleep):
        await clock.sleep(245)
    assert len(gw.tickles) == 4  # two blew up, the loop went on
    assert "keep-alive tickle failed: RuntimeError" in caplog.text


async def test_client_context_manager_starts_and_stops_the_keep_alive() -> None:
    clock = FakeClock()
    gw = Gateway(clock)
    client = IBKRClient.from_settings(
        settings(), http_transport=gw.transport(), clock=clock, sleep=clock.sleep
    )
    async with client:
        await clock.sleep(125)
    await clock.sleep(300)
    assert len(gw.tickles) == 2


async def test_explicit_keep_alive_block_replaces_the_background_one() -> None:
    clock = FakeClock()
    gw = Gateway(clock)
    async with Transport(settings(), http_transport=gw.transport(), clock=clock, sleep=clock.sleep) as t:
        async with t.keep_alive(interval=20):
            await clock.sleep(50)  # tickles at 20 and 40 only, not also at 60 from the background
        await clock.sleep(65)  # the background keep-alive is back
    assert [round(s - 1000) for s in gw.tickles] == [20, 40, 110]


async def test_background_client_keeps_the_session_alive_on_its_io_loop() -> None:
    clock = FakeClock()
    gw = Gateway(clock)
    async with BackgroundClient(settings(), http_transport=gw.transport(), clock=clock, sleep=clock.sleep):
        deadline = time.monotonic() + 10
        while len(gw.tickles) < 3:  # virtual minutes pass as fast as the I/O loop runs
            assert time.monotonic() < deadline, "the background keep-alive never tickled"
            await asyncio.sleep(0.01)
    closed_at = len(gw.tickles)
    await asyncio.sleep(0.05)
    assert len(gw.tickles) == closed_at
    gaps = [b - a for a, b in zip(gw.tickles, gw.tickles[1:], strict=False)]
    assert all(abs(g - 60) < 1e-6 for g in gaps[:2])

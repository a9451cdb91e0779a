"""429 backoff, 5xx / timeout retries on GET, and never a retry of an order POST."""

from __future__ import annotations

import httpx
import pytest
import respx

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import RateLimited, RequestFailed, ServerError

BASE = "https://localhost:5000/v1/api"
ORDER_PATH = "/iserver/account/DU1234567/orders"


class RecordingSleep:
    """A FakeClock sleep that also records every backoff the transport asked for."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await self.clock.sleep(seconds)


@pytest.fixture
def router():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/iserver/accounts").respond(200, json={"accounts": ["DU1234567"]})
        yield mock


def make(clock: FakeClock, sleep: RecordingSleep | None = None) -> Transport:
    settings = IBKRSettings(api_url=BASE, access_token="placeholder")
    # No background keep-alive: these tests record every sleep of the transport.
    # The backoff under test is given explicitly: the suite's environment sets IBKR_RETRY_BACKOFF=0.
    return Transport(
        settings,
        clock=clock,
        sleep=sleep or clock.sleep,
        jitter=lambda: 0.5,
        keep_alive_interval=0,
        backoff_base=0.5,
        rate_limit_backoff_base=2.0,
    )


async def test_429_honours_retry_after(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get("/iserver/secdef/search").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down"}),
            httpx.Response(200, json=[]),
        ]
    )
    sleep = RecordingSleep(clock)
    start = clock()
    async with make(clock, sleep) as t:
        assert await t.request("GET", "/iserver/secdef/search") == []
    assert route.call_count == 2
    assert clock() - start >= 7.0
    assert any(7.0 <= s <= 7.7 for s in sleep.calls), sleep.calls


async def test_429_without_retry_after_backs_off_exponentially_then_raises(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get("/iserver/secdef/search").respond(429, json={"error": "Too many requests"})
    sleep = RecordingSleep(clock)
    async with make(clock, sleep) as t:
        with pytest.raises(RateLimited, match="429"):
            await t.request("GET", "/iserver/secdef/search")
    assert route.call_count == 1 + t.max_rate_limit_retries
    backoffs = [s for s in sleep.calls if s >= 1.0]
    assert backoffs == sorted(backoffs) and len(backoffs) == t.max_rate_limit_retries
    assert backoffs[-1] > backoffs[0] * 4


async def test_429_pauses_every_caller_of_the_same_limiter(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    times: dict[str, list[float]] = {"a": [], "b": []}

    def a(request: httpx.Request) -> httpx.Response:
        times["a"].append(clock())
        if len(times["a"]) == 1:
            return httpx.Response(429, headers={"Retry-After": "3"})
        return httpx.Response(200, json={})

    def b(request: httpx.Request) -> httpx.Response:
        times["b"].append(clock())
        return httpx.Response(200, json={})

    router.get("/a").mock(side_effect=a)
    router.get("/b").mock(side_effect=b)
    async with make(clock) as t:
        await t.request("GET", "/a")
        await t.request("GET", "/b")
    assert times["b"][0] >= times["a"][0] + 3.0


async def test_huge_retry_after_fails_fast_instead_of_hanging(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get("/iserver/secdef/search").respond(429, headers={"Retry-After": "600"})
    async with make(clock) as t:
        with pytest.raises(RateLimited) as err:
            await t.request("GET", "/iserver/secdef/search")
    assert route.call_count == 1
    assert err.value.retry_after == 600  # type: ignore[attr-defined]


async def test_get_retries_5xx_with_capped_backoff(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get("/portfolio/accounts").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(500, text="Internal Server Error"),
            httpx.Response(200, json=[]),
        ]
    )
    sleep = RecordingSleep(clock)
    async with make(clock, sleep) as t:
        assert await t.request("GET", "/portfolio/accounts") == []
    assert route.call_count == 3


async def test_get_gives_up_after_max_retries(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get("/portfolio/accounts").respond(503, text="Service Unavailable")
    async with make(clock) as t:
        with pytest.raises(ServerError, match="503") as err:
            await t.request("GET", "/portfolio/accounts")
    assert route.call_count == 1 + t.max_retries
    assert err.value.status_code == 503


async def test_order_post_is_never_retried_on_5xx(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.post(ORDER_PATH).respond(500, json={"error": "Internal Server Error"})
    async with make(clock) as t:
        with pytest.raises(ServerError, match="not retried"):
            await t.request(
                "POST", ORDER_PATH, json={"orders": [{"conid": 265598, "side": "BUY", "quantity": 1}]}
            )
    assert route.call_count == 1


async def test_order_post_timeout_says_it_may_have_been_sent(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.post(ORDER_PATH).mock(side_effect=httpx.ReadTimeout("timed out"))
    async with make(clock) as t:
        with pytest.raises(RequestFailed) as err:
            await t.request("POST", ORDER_PATH, json={"orders": []})
    assert route.call_count == 1
    assert err.value.maybe_sent is True
    assert "cOID" in str(err.value)


async def test_connect_error_on_post_was_not_sent(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDER_PATH).mock(side_effect=httpx.ConnectError("refused"))
    async with make(clock) as t:
        with pytest.raises(RequestFailed) as err:
            await t.request("POST", ORDER_PATH, json={"orders": []})
    assert err.value.maybe_sent is False


async def test_get_retries_timeouts_and_connection_errors(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get("/portfolio/accounts").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.ConnectError("reset"),
            httpx.Response(200, json=[{"id": "DU1"}]),
        ]
    )
    async with make(clock) as t:
        assert await t.request("GET", "/portfolio/accounts") == [{"id": "DU1"}]
    assert route.call_count == 3


async def test_backoff_is_exponential_and_capped(clock: FakeClock) -> None:
    t = make(clock)
    try:
        delays = [t._backoff(n, t.backoff_base) for n in range(1, 10)]
    finally:
        await t.aclose()
    assert delays[1] == 2 * delays[0]
    assert max(delays) <= t.backoff_cap


async def test_explicit_retry_true_retries_a_post(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.post("/iserver/auth/status").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={})]
    )
    async with make(clock) as t:
        await t.request("POST", "/iserver/auth/status", json={}, retry=True)
    assert route.call_count == 2


async def test_order_post_answered_429_is_not_resent(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.post(ORDER_PATH).respond(429, headers={"Retry-After": "2"})
    async with make(clock) as t:
        with pytest.raises(RateLimited) as err:
            await t.request("POST", ORDER_PATH, json={"orders": []})
    assert route.call_count == 1
    assert err.value.retry_after == 2  # type: ignore[attr-defined]


async def test_retry_false_turns_off_get_retries(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get("/portfolio/accounts").respond(502)
    async with make(clock) as t:
        with pytest.raises(ServerError):
            await t.request("GET", "/portfolio/accounts", retry=False)
    assert route.call_count == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from ibkr_tasks.client.transport import _retry_after

    def with_header(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert _retry_after(with_header("12")) == 12.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= (_retry_after(with_header(when)) or 0) <= 90
    assert _retry_after(with_header("soon")) is None
    assert _retry_after(httpx.Response(429)) is None


async def test_keep_alive_survives_failing_tickles(
    router: respx.MockRouter, clock: FakeClock, caplog
) -> None:
    outcomes: list[str] = []

    def tickle(request: httpx.Request) -> httpx.Response:
        if len(outcomes) < 4:  # the first keep-alive tickle fails on every attempt
            outcomes.append("down")
            raise httpx.ConnectError("down")
        outcomes.append("ok")
        return httpx.Response(200, json={"session": "s"})

    router.post("/tickle").mock(side_effect=tickle)
    async with make(clock) as t:
        async with t.keep_alive(interval=60):
            await clock.sleep(200)
    assert "keep-alive tickle failed" in caplog.text
    assert outcomes[:4] == ["down"] * 4
    assert outcomes[4:] == ["ok", "ok"]  # the keep-alive went on after the failure

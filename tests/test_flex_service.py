"""The Flex Web Service v3 client against a mocked IBKR (respx): polling, throttling, fatal codes,
date ranges, User-Agent, and the token kept secret."""

from __future__ import annotations

import logging
from datetime import date

import httpx
import pytest
import respx

from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.client.settings import DEFAULT_FLEX_URL, FlexSettings
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.flex import FlexRangeError, FlexServiceError, FlexServiceUnavailable, FlexTokenError
from ibkr_tasks.flex.service import FlexPolling, FlexWebService

TOKEN = "123456789012345678901234"
BASE = "https://flex.test/AccountManagement/FlexWebService"
GET_URL = "https://gdcdyn.flex.test/AccountManagement/FlexWebService/GetStatement"
STATEMENT = b'<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="0"></FlexStatements></FlexQueryResponse>'


def ok(reference: str = "9324443625", url: str = GET_URL) -> httpx.Response:
    return httpx.Response(
        200,
        content=(
            "<FlexStatementResponse timestamp='26 August, 2023 12:36 PM EDT'><Status>Success</Status>"
            f"<ReferenceCode>{reference}</ReferenceCode><Url>{url}</Url></FlexStatementResponse>"
        ).encode(),
    )


def fail(code: str, message: str, status: str = "Fail") -> httpx.Response:
    return httpx.Response(
        200,
        content=(
            f"<FlexStatementResponse timestamp='26 August, 2023 12:36 PM EDT'><Status>{status}</Status>"
            f"<ErrorCode>{code}</ErrorCode><ErrorMessage>{message}</ErrorMessage></FlexStatementResponse>"
        ).encode(),
    )


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def service(sleeps: Sleeps, **polling: float) -> FlexWebService:
    settings = FlexSettings(url=BASE, token=TOKEN, query_id="733470")
    values = {"first_delay": 0.0, "retry_delay": 1.0, "throttle_delay": 10.0, "max_attempts": 5, **polling}
    return FlexWebService(settings, polling=FlexPolling(**values), sleep=sleeps)  # type: ignore[arg-type]


@respx.mock
async def test_send_then_get_follows_the_returned_url_and_sends_a_user_agent() -> None:
    send = respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    get = respx.get(GET_URL).mock(return_value=httpx.Response(200, content=STATEMENT))
    async with service(Sleeps()) as flex:
        assert await flex.fetch() == STATEMENT
    sent = send.calls.last.request
    assert dict(sent.url.params) == {"t": TOKEN, "q": "733470", "v": "3"}
    assert sent.headers["User-Agent"].startswith("ibkr-tasks/")
    fetched = get.calls.last.request
    assert dict(fetched.url.params) == {"t": TOKEN, "q": "9324443625", "v": "3"}
    assert fetched.headers["User-Agent"].startswith("ibkr-tasks/")


@respx.mock
async def test_date_range_overrides_the_query_period() -> None:
    send = respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    async with service(Sleeps()) as flex:
        await flex.send_request(from_date=date(2024, 1, 1), to_date=date(2024, 12, 30))  # 365 days
    assert send.calls.last.request.url.params["fd"] == "20240101"
    assert send.calls.last.request.url.params["td"] == "20241230"


@respx.mock
async def test_a_range_longer_than_365_days_is_refused_before_asking_ibkr() -> None:
    send = respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    async with service(Sleeps()) as flex:
        with pytest.raises(FlexRangeError, match=r"366 days.*at most 365"):
            await flex.send_request(from_date=date(2024, 1, 1), to_date=date(2024, 12, 31))
        with pytest.raises(FlexRangeError, match="before"):
            await flex.send_request(from_date=date(2024, 2, 1), to_date=date(2024, 1, 1))
    assert not send.called


@respx.mock
async def test_generation_in_progress_is_polled_with_backoff() -> None:
    respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    in_progress = fail("1019", "Statement generation in progress. Please try again shortly.", "Warn")
    get = respx.get(GET_URL).mock(
        side_effect=[
            in_progress,
            in_progress,
            fail("1009", "The server is under heavy load."),
            httpx.Response(200, content=STATEMENT),
        ]
    )
    sleeps = Sleeps()
    async with service(sleeps, backoff=2.0) as flex:
        assert await flex.fetch() == STATEMENT
    assert get.call_count == 4
    assert sleeps == [0.0, 1.0, 2.0, 4.0]


@respx.mock
async def test_too_many_requests_waits_longer_then_retries() -> None:
    respx.get(f"{BASE}/SendRequest").mock(
        side_effect=[fail("1018", "Too many requests have been made from this token."), ok()]
    )
    respx.get(GET_URL).mock(
        side_effect=[
            fail("1018", "Too many requests have been made from this token."),
            httpx.Response(200, content=STATEMENT),
        ]
    )
    sleeps = Sleeps()
    async with service(sleeps) as flex:
        assert await flex.fetch() == STATEMENT
    assert sleeps == [10.0, 0.0, 10.0]


@respx.mock
async def test_polling_gives_up_with_a_typed_error() -> None:
    respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    respx.get(GET_URL).mock(return_value=fail("1019", "Statement generation in progress.", "Warn"))
    async with service(Sleeps(), max_attempts=3) as flex:
        with pytest.raises(FlexServiceUnavailable) as caught:
            await flex.fetch()
    assert caught.value.code == "1019"


@pytest.mark.parametrize(
    ("code", "message", "error", "advice"),
    [
        ("1012", "Token has expired.", FlexTokenError, "generate a new one"),
        ("1013", "IP restriction.", FlexTokenError, "IP"),
        ("1015", "Token is invalid.", FlexTokenError, "token is invalid"),
        ("1020", "Invalid request or unable to validate request.", FlexTokenError, "token and the query id"),
        ("1014", "Query is invalid.", FlexServiceError, "IBKR_FLEX_QUERY_ID"),
        ("1003", "Statement is not available.", FlexServiceError, "period"),
    ],
)
@respx.mock
async def test_fatal_codes_raise_with_ibkrs_message_and_what_to_do(
    code: str, message: str, error: type[FlexServiceError], advice: str
) -> None:
    send = respx.get(f"{BASE}/SendRequest").mock(return_value=fail(code, message))
    async with service(Sleeps()) as flex:
        with pytest.raises(error) as caught:
            await flex.fetch()
    assert send.call_count == 1  # not retried
    assert caught.value.code == code and caught.value.ibkr_message == message
    assert advice in caught.value.advice and message in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


@respx.mock
async def test_fatal_code_while_polling() -> None:
    respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    respx.get(GET_URL).mock(return_value=fail("1017", "Reference code is invalid."))
    async with service(Sleeps()) as flex:
        with pytest.raises(FlexServiceError, match=r"1017.*request the statement again"):
            await flex.fetch()


@respx.mock
async def test_a_csv_query_is_reported_not_returned() -> None:
    respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    respx.get(GET_URL).mock(
        return_value=httpx.Response(200, content=b'"ClientAccountID","Symbol"\n"U1","AAPL"\n')
    )
    async with service(Sleeps()) as flex:
        with pytest.raises(FlexServiceError, match="must be XML"):
            await flex.fetch()


@respx.mock
async def test_the_token_never_reaches_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    install_log_redaction()  # what the fetch-statement task does (whoever owns logging calls it)
    respx.get(f"{BASE}/SendRequest").mock(side_effect=httpx.ConnectError("boom"))
    flex = service(Sleeps())
    with pytest.raises(Exception) as caught:
        await flex.fetch()
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    respx.get(f"{BASE}/SendRequest").mock(return_value=ok())
    respx.get(GET_URL).mock(return_value=httpx.Response(200, content=STATEMENT))
    await flex.fetch()
    await flex.aclose()
    assert "SendRequest" in caplog.text  # httpx logged the requests ...
    assert TOKEN not in caplog.text  # ... with the token redacted
    assert TOKEN not in repr(flex) and TOKEN not in repr(flex.settings) and TOKEN not in str(flex.settings)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_FLEX_TOKEN", TOKEN)
    monkeypatch.setenv("IBKR_FLEX_QUERY_ID", "733470")
    monkeypatch.delenv("IBKR_FLEX_URL", raising=False)
    settings = FlexSettings()
    assert settings.url == DEFAULT_FLEX_URL
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    assert settings.query_id == "733470"
    monkeypatch.setenv("IBKR_FLEX_URL", "http://127.0.0.1:8000/flex/")
    assert FlexSettings().url == "http://127.0.0.1:8000/flex"
    monkeypatch.setenv("IBKR_FLEX_QUERY_ID", "my query")
    with pytest.raises(ConfigurationError, match="numeric Query ID") as caught:
        FlexSettings()
    assert TOKEN not in str(caught.value)


async def test_missing_token_or_query_is_a_configuration_error() -> None:
    async with FlexWebService(FlexSettings(url=BASE, token=None, query_id="1"), sleep=Sleeps()) as flex:
        with pytest.raises(ConfigurationError, match="IBKR_FLEX_TOKEN"):
            await flex.fetch()
    async with FlexWebService(FlexSettings(url=BASE, token=TOKEN, query_id=None), sleep=Sleeps()) as flex:
        with pytest.raises(ConfigurationError, match="IBKR_FLEX_QUERY_ID"):
            await flex.fetch()


def test_credentials_block_carries_the_flex_token_and_query() -> None:
    from ibkr_tasks.blocks import IBKRCredentials

    block = IBKRCredentials(access_token="x" * 8, flex_token=TOKEN, flex_query_id="733470", flex_url=BASE)
    settings = block.to_flex_settings()
    assert (settings.url, settings.query_id) == (BASE, "733470")
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(block)

"""The "TLS certificate verification is OFF" warning: only for https, and in the run's log inside a run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from ibkr_tasks.client.ratelimit import RateLimiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

WARNING = "TLS certificate verification is OFF"


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise AssertionError("building a transport sends nothing")


def _transport(api_url: str, verify_tls: bool) -> Transport:
    return Transport(
        IBKRSettings(api_url=api_url, verify_tls=verify_tls, keep_alive_interval=0),
        limiter=RateLimiter(),
        http_transport=httpx.MockTransport(_unreachable),
    )


@pytest.mark.parametrize(
    ("api_url", "verify_tls", "warns"),
    [
        ("https://localhost:5000/v1/api", False, True),
        ("https://localhost:5000/v1/api", True, False),
        ("http://127.0.0.1:8080/v1/api", False, False),  # no certificate to verify: nothing to warn about
        ("http://127.0.0.1:8080/v1/api", True, False),
    ],
)
def test_warns_only_for_https_without_verification(
    api_url: str, verify_tls: bool, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        asyncio.run(_transport(api_url, verify_tls).aclose())
    assert (WARNING in caplog.text) is warns


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_warning_reaches_the_flow_runs_log() -> None:
    """Inside a flow run the warning is in the run's log (the UI), also when the client lives on the
    BackgroundClient's I/O thread; the run's http transport adds none."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.runtime import flow_run

    from ibkr_tasks.client.background import BackgroundClient

    @flow(name="tls-warning-check")
    async def open_transports() -> Any:
        await _transport("http://127.0.0.1:8080/v1/api", False).aclose()
        await _transport("https://gateway-direct.test:5000/v1/api", False).aclose()
        settings = IBKRSettings(
            api_url="https://gateway-io-thread.test:5000/v1/api", verify_tls=False, keep_alive_interval=0
        )
        async with BackgroundClient(
            settings, limiter=RateLimiter(), http_transport=httpx.MockTransport(_unreachable)
        ):
            pass
        return flow_run.get_id()

    async def run_logs() -> list[str]:
        run_id = await open_transports()
        await APILogHandler.aflush()
        flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        async with get_client() as client:
            return [log.message for log in await client.read_logs(log_filter=flt)]

    messages = [m for m in asyncio.run(run_logs()) if WARNING in m]
    assert len(messages) == 2, messages
    assert any("gateway-direct.test" in m for m in messages)
    assert any("gateway-io-thread.test" in m for m in messages)

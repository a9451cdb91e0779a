"""Log redaction is installed by whoever owns logging (a flow, a task that builds its client, a script),
never as a side effect of building a client; inside a flow, the HTTP stack's log lines carry no secret."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ibkr_tasks.client import redact
from ibkr_tasks.client.ratelimit import RateLimiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

QUERY_SECRET = "sidecar-QUERY-secret-31c7f0"
BEARER = "sidecar-minted-bearer-84b2d9e1"


def _filters() -> dict[str, list[logging.Filter]]:
    return {
        name: [f for f in logging.getLogger(name).filters if isinstance(f, redact.RedactingFilter)]
        for name in redact._REDACTED_LOGGERS
    }


@pytest.fixture
def no_redaction_yet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process in which nobody installed the redaction yet (other tests of the session may have)."""
    installed = _filters()
    for name, filters in installed.items():
        for f in filters:
            logging.getLogger(name).removeFilter(f)
    monkeypatch.setattr(redact, "_installed", False)
    try:
        yield
    finally:
        for name, filters in _filters().items():
            for f in filters:
                logging.getLogger(name).removeFilter(f)
        for name, filters in installed.items():
            for f in filters:
                logging.getLogger(name).addFilter(f)


@pytest.mark.usefixtures("no_redaction_yet")
async def test_building_a_transport_changes_no_logger() -> None:
    async with Transport(IBKRSettings(api_url="http://127.0.0.1:9/v1/api"), limiter=RateLimiter()):
        pass
    assert all(not filters for filters in _filters().values())


@pytest.mark.usefixtures("no_redaction_yet")
def test_install_is_idempotent() -> None:
    redact.install_log_redaction()
    redact.install_log_redaction()
    assert all(len(filters) == 1 for filters in _filters().values())


@pytest.fixture
def sidecar() -> Iterator[str]:
    """A bearer-minting sidecar on loopback whose URL carries its own token in the query."""

    async def bearer(request: Request) -> JSONResponse:
        assert request.query_params.get("token") == QUERY_SECRET
        return JSONResponse({"access_token": BEARER, "expires_in": 600})

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = Starlette(routes=[Route("/bearer", bearer)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the sidecar stub did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/bearer?token={QUERY_SECRET}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def http_stack_lines() -> Iterator[list[str]]:
    """Every line the HTTP stack's loggers emit, at DEBUG, as any handler of the process would get it
    (collected on those loggers: Prefect configures the root logger's handlers and level for a run)."""
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(collect)
    try:
        yield collect.lines
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(collect)
            lg.setLevel(level)


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness", "no_redaction_yet")
def test_a_flow_keeps_secrets_out_of_the_http_stacks_logs(
    sidecar: str, monkeypatch: pytest.MonkeyPatch, http_stack_lines: list[str]
) -> None:
    """The market-data flow against the simulator, its bearer minted by a sidecar whose URL holds a
    token: httpx logs that URL at INFO and httpcore every exchange at DEBUG, without a secret."""
    from prefect.states import State

    from flows.market_data import market_data
    from ibkr_tasks.sim import Scenario
    from ibkr_tasks.testing import running_simulator

    async def run_flow() -> State[Any]:
        state: State[Any] = await market_data(conids=[265598], interval=0.1, count=1, return_state=True)
        return state

    with running_simulator(Scenario(seed=5, accounts=1), process=False) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        monkeypatch.setenv("IBKR_AUTH_MODE", "sidecar")
        monkeypatch.setenv("IBKR_SIDECAR_URL", sidecar)
        monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
        state = asyncio.run(run_flow())
    assert state.is_completed(), state.message
    text = "\n".join(http_stack_lines)
    port = sidecar.split(":")[2].split("/")[0]
    assert f"HTTP Request: GET http://127.0.0.1:{port}/bearer?token=" in text  # httpx logged the URL ...
    assert "receive_response_headers" in text  # ... and httpcore its exchanges
    assert QUERY_SECRET not in text  # ... without the sidecar's token
    assert BEARER not in text

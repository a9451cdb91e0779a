"""Reads retry on transient failures only; order placement never retries at the task level."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect import flow

from ibkr_tasks.errors import AccountMismatch, TransportError
from ibkr_tasks.models import ParseResult
from ibkr_tasks.tasks import fetch_positions, place_order

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


class FlakyClient:
    """Stands in for IBKRClient: fails ``failures`` times with ``error``, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    async def positions(self, account_id: str, *, invalidate: bool = False) -> ParseResult[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return ParseResult(items=[], rejected=[])

    async def place_order(self, account_id: str, order: Any, *, coid: str, policy: Any = None) -> Any:
        self.calls += 1
        raise self.error


def run(client: FlakyClient, task: Any, *args: Any) -> Any:
    @flow
    async def harness() -> Any:
        state = await task.with_options(retry_delay_seconds=0)(client, *args, return_state=True)
        return state.type.value  # returning the Failed state itself would fail the harness flow

    return asyncio.run(harness())


def test_a_read_retries_a_transient_failure() -> None:
    client = FlakyClient(TransportError("connection reset"), failures=1)
    state = run(client, fetch_positions, "DU1234567")
    assert state == "COMPLETED"
    assert client.calls == 2


def test_a_read_does_not_retry_a_non_transient_failure() -> None:
    client = FlakyClient(AccountMismatch("row of DU7654321 in DU1234567's positions"), failures=5)
    state = run(client, fetch_positions, "DU1234567")
    assert state == "FAILED"
    assert client.calls == 1


def test_order_placement_is_never_retried_by_the_task() -> None:
    client = FlakyClient(TransportError("timed out after sending"), failures=5)
    state = run(client, place_order, "DU1234567", object(), "rb-0001")
    assert state == "FAILED"
    assert client.calls == 1


def test_read_retry_delays_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ibkr_tasks.tasks.ibkr import collect_fills, read_retry_delays

    # The suite's environment (conftest) sets IBKR_TASK_RETRY_DELAYS=0: the tasks took it when defined.
    assert collect_fills.retry_delay_seconds == [0.0] and fetch_positions.retries == 2
    monkeypatch.delenv("IBKR_TASK_RETRY_DELAYS")
    assert read_retry_delays(2) == [5.0, 20.0]
    monkeypatch.setenv("IBKR_TASK_RETRY_DELAYS", " 1.5, 30 ")
    assert read_retry_delays(2) == [1.5, 30.0]


@pytest.mark.parametrize("value", ["", "-5", "soon", ",".join(["1"] * 51)])
def test_bad_retry_delays_are_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from ibkr_tasks.client.settings import TaskSettings
    from ibkr_tasks.errors import ConfigurationError

    monkeypatch.setenv("IBKR_TASK_RETRY_DELAYS", value)
    with pytest.raises(ConfigurationError, match="retry_delays") as err:
        TaskSettings()
    assert "soon" not in str(err.value)  # the input is not repeated

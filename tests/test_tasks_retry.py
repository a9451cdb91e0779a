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

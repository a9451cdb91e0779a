"""The market-data flow polls snapshots (after IBKR's preflight), logs them and stores them on request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flows.market_data import market_data
from ibkr_tasks.sim import Scenario
from ibkr_tasks.testing import running_simulator

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

AAPL, MSFT = 265598, 272093


def test_polls_count_rounds_and_stores_every_quote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", "gateway")
    monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    with running_simulator(Scenario(seed=3, accounts=1)) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        state = asyncio.run(
            market_data(
                conids=[AAPL, MSFT],
                interval=0.2,
                count=3,
                store=True,
                ledger_url=ledger_url,
                return_state=True,
            )
        )
    assert state.is_completed(), state.message
    assert state.result()["rounds"] == 3
    engine = create_engine(ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("select conid, count(*), min(last) from quotes group by conid order by conid")
        ).all()
    engine.dispose()
    # three rounds of two conids, every one with a price (the preflight's empty answer is not a quote)
    assert [(r[0], r[1]) for r in rows] == [(AAPL, 3), (MSFT, 3)]
    assert all(r[2] is not None for r in rows)
    # the polling is a task of the run (visible, with its logs), not work on the flow's own loop
    assert task_run_names(state.state_details.flow_run_id) == ["poll-market-data", "refresh-session"]


def task_run_names(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[Any]:
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    return sorted(r.name.rsplit("-", 1)[0] for r in asyncio.run(read()))


def test_refuses_to_poll_forever() -> None:
    state = asyncio.run(market_data(conids=[AAPL], return_state=True))
    assert state.is_failed()
    assert "count or duration" in state.message

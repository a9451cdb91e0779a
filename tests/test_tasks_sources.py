"""Tasks talk to IBKR through a shared client, a credentials block, or the IBKR_* environment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect import flow

from ibkr_tasks.blocks import IBKRCredentials
from ibkr_tasks.sim import Scenario
from ibkr_tasks.tasks import fetch_positions, list_accounts
from ibkr_tasks.testing import running_simulator

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


def test_block_and_environment_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    with running_simulator(Scenario(seed=4, accounts=2, positions_per_account=5)) as sim:
        block = IBKRCredentials(api_url=sim.api_url, access_token="gateway")

        @flow
        async def from_block() -> Any:
            accounts = await list_accounts(block)
            first = accounts[0].account_id
            return first, await fetch_positions(block, first)

        account_id, positions = asyncio.run(from_block())
        truth = {int(p["conid"]) for p in sim.truth(account_id)["positions"] if float(p["position"]) != 0}
        assert {p.conid for p in positions.items} == truth

        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        monkeypatch.setenv("IBKR_ACCESS_TOKEN", "gateway")

        @flow
        async def from_environment() -> list[str]:
            return [a.account_id for a in await list_accounts()]

        assert account_id in asyncio.run(from_environment())

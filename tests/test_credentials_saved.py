"""A saved IBKRCredentials block, used by name the way a deployment runs: flows and tasks, sync and async.

The block points at the simulator served on loopback; the ``IBKR_*`` environment holds no token or
URL, so a run can only reach the simulator through the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect import flow

from flows.nightly_reconciliation import nightly_reconciliation
from flows.rebalance import rebalance
from ibkr_tasks.blocks import (
    CredentialsNotFound,
    IBKRCredentials,
    aload_credentials,
    aresolve_settings,
    resolve_settings,
)
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.sim import Scenario
from ibkr_tasks.tasks import fetch_positions, list_accounts
from ibkr_tasks.testing import SimulatorHandle, running_simulator

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

BLOCK = "sim-paper-login"
TOKEN = "saved-block-bearer-7c1e0a"
AAPL, SPY = 265598, 756733


@pytest.fixture(scope="module")
def sim(prefect_harness: None) -> Iterator[SimulatorHandle]:
    mp = pytest.MonkeyPatch()
    mp.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    for name in ("IBKR_API_URL", "IBKR_ACCESS_TOKEN", "IBKR_ACCOUNT_ID"):
        mp.delenv(name, raising=False)
    scenario = Scenario(
        seed=23, accounts=2, positions_per_account=4, fills_per_account_per_day=3, history_days=1
    )
    try:
        with running_simulator(scenario) as handle:
            block = IBKRCredentials(api_url=handle.api_url, access_token=TOKEN, verify_tls=False)
            block.save(BLOCK, overwrite=True)
            yield handle
    finally:
        mp.undo()


def sim_accounts(sim: SimulatorHandle) -> list[str]:
    response = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30)  # control endpoint: not counted
    response.raise_for_status()
    return sorted(a["account_id"] for a in response.json())


async def test_nightly_reconciliation_runs_with_a_saved_block_name(sim: SimulatorHandle, tmp_path) -> None:
    state = await nightly_reconciliation(
        credentials=BLOCK, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", return_state=True
    )
    assert state.is_completed(), state.message
    summary: dict[str, Any] = await state.result()
    assert sorted(a["account_id"] for a in summary["accounts"]) == sim_accounts(sim)
    assert {a["status"] for a in summary["accounts"]} <= {"completed", "breaks"}
    assert sum(int(a["fills_new"]) for a in summary["accounts"]) > 0


async def test_rebalance_runs_with_a_saved_block_name(sim: SimulatorHandle, tmp_path) -> None:
    account = sim_accounts(sim)[0]
    state = await rebalance(
        account_id=account,
        targets={str(AAPL): 0.05, str(SPY): 0.05},
        allow_prior_close=True,
        credentials=BLOCK,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        return_state=True,
    )
    assert state.is_completed(), state.message
    data = await state.result()
    assert {o["conid"] for o in data["orders"]} == {AAPL, SPY}
    assert sim.truth(account)["orders"] == []  # a dry run


async def test_a_missing_block_fails_the_flow_with_its_name(sim: SimulatorHandle, tmp_path) -> None:
    state = await nightly_reconciliation(
        credentials="no-such-block", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", return_state=True
    )
    assert state.is_failed()
    assert "no IBKRCredentials block named 'no-such-block'" in (state.message or "")
    with pytest.raises(CredentialsNotFound, match="no-such-block"):
        await state.result()


async def test_tasks_take_the_block_name_in_an_async_flow(sim: SimulatorHandle) -> None:
    @flow
    async def by_name() -> tuple[list[str], set[int]]:
        accounts = [a.account_id for a in await list_accounts(BLOCK)]
        positions = await fetch_positions(BLOCK, accounts[0])
        return accounts, {p.conid for p in positions.items}

    accounts, conids = await by_name()
    assert sorted(accounts) == sim_accounts(sim)
    truth = {int(p["conid"]) for p in sim.truth(accounts[0])["positions"] if float(p["position"]) != 0}
    assert conids == truth


def test_tasks_take_the_block_name_in_a_sync_flow(sim: SimulatorHandle) -> None:
    @flow
    def by_name() -> list[str]:
        return [a.account_id for a in list_accounts.submit(BLOCK).result()]

    assert sorted(by_name()) == sim_accounts(sim)


def test_tasks_take_the_block_name_called_outside_a_flow(sim: SimulatorHandle) -> None:
    accounts = asyncio.run(list_accounts(BLOCK))
    assert sorted(a.account_id for a in accounts) == sim_accounts(sim)


def test_sync_resolve_settings_from_sync_code_and_inside_a_running_loop(sim: SimulatorHandle) -> None:
    settings = resolve_settings(BLOCK)
    assert settings.api_url == sim.api_url
    assert settings.access_token is not None and settings.access_token.get_secret_value() == TOKEN

    async def sync_helper_called_from_async_code() -> str:
        return resolve_settings(BLOCK).api_url  # no await: a sync API must stay sync

    assert asyncio.run(sync_helper_called_from_async_code()) == sim.api_url


async def test_async_resolve_settings(sim: SimulatorHandle) -> None:
    assert (await aresolve_settings(BLOCK)).api_url == sim.api_url
    assert (await aload_credentials(BLOCK)).api_url == sim.api_url


async def test_a_missing_block_is_a_typed_error_naming_it(sim: SimulatorHandle) -> None:
    with pytest.raises(CredentialsNotFound, match=r"no IBKRCredentials block named 'nope'") as info:
        await aresolve_settings("nope")
    assert isinstance(info.value, ConfigurationError) and info.value.name == "nope"
    assert "ibkr-tasks setup" in str(info.value)
    with pytest.raises(CredentialsNotFound, match=r"'nope'"):
        await asyncio.to_thread(resolve_settings, "nope")

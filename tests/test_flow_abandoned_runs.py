"""The nightly flow closes the account's runs that can no longer be running (as ``abandoned``),
asking Prefect about their flow runs; runs that may still be running are left alone."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Crashed, Running

from flows.nightly_reconciliation import nightly_reconciliation
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.sim import Scenario
from ibkr_tasks.testing import running_simulator
from ibkr_tasks.verify import compare_ledger_with_truth

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

SCENARIO = Scenario(seed=7, accounts=1, positions_per_account=5, fills_per_account_per_day=4, history_days=1)


async def _flow_run_in(state: object) -> str:
    async with get_client() as client:
        run = await client.create_flow_run(nightly_reconciliation, state=state)  # type: ignore[arg-type]
    return str(run.id)


def test_a_killed_runs_row_is_closed_by_the_next_run_and_its_snapshot_stops_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", "gateway-placeholder")
    monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(SCENARIO) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = asyncio.run(nightly_reconciliation(days=1, ledger_url=ledger_url, return_state=True))
        assert first.is_completed(), first.message
        (account,) = [a["account_id"] for a in first.result()["accounts"]]

        # Two earlier runs left `running` rows: one was killed (Prefect marked its flow run Crashed)
        # after filing a snapshot; the other's flow run is still running.
        killed = asyncio.run(_flow_run_in(Crashed()))
        alive = asyncio.run(_flow_run_in(Running()))
        ledger = Ledger(ledger_url)
        ledger.start_run(account, "killed-run", flow_run_id=killed)
        ledger.reconcile(account, [], "killed-run")  # an empty account: would break every position
        ledger.start_run(account, "alive-run", flow_run_id=alive)
        killed_snapshot = ledger.latest_snapshot_at(account)

        with caplog.at_level(logging.WARNING):
            again = asyncio.run(nightly_reconciliation(days=1, ledger_url=ledger_url, return_state=True))

        assert again.is_completed(), again.message
        killed_row = ledger.get_run(account, "killed-run")
        assert killed_row is not None and killed_row.status == "abandoned"
        assert killed in (killed_row.error or "")
        assert ledger.get_run(account, "alive-run").status == "running"  # type: ignore[union-attr]
        assert (
            "1 earlier run(s) can no longer be running and were closed as abandoned: killed-run"
            in caplog.text
        )
        # The next run compared against the books, not against the killed run's empty snapshot.
        assert again.result()["accounts"][0]["breaks"] == 0
        latest = ledger.latest_snapshot_at(account)
        assert latest is not None and killed_snapshot is not None and latest > killed_snapshot
        assert compare_ledger_with_truth(ledger_url, sim).ok
        ledger.dispose()

"""The nightly flow, end to end over HTTP, with trades rows the ledger cannot hold in IBKR's answer:
they are quarantined and every other row is booked, on SQLite and PostgreSQL. And ``accounts=[]``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flows.nightly_reconciliation import nightly_reconciliation
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.sim import Scenario
from ibkr_tasks.sim.book import Execution, JunkRow
from ibkr_tasks.sim.trade_rows import trade_row
from ibkr_tasks.testing import SimulatorHandle, running_simulator
from ibkr_tasks.verify import compare_ledger_with_truth

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

CLEAN = Scenario(seed=5, accounts=2, positions_per_account=8, fills_per_account_per_day=6, history_days=1)
POISON = {
    "ffff0001": {"conid": 2**63},
    "ffff0002": {"size": float("nan"), "net_amount": float("inf")},
    "ffff0003": {"extra_field": float("nan")},
    "ffff0004": {"symbol": "AA\x00PL"},
}


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", "poison-test-bearer-0001")
    monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")


def _poison(sim: SimulatorHandle) -> tuple[str, list[dict[str, Any]]]:
    """Put the POISON rows into the trades answer of the first account (never into its positions)."""
    book = sim.app.state.sim.book
    acct = book.trading_accounts()[0]
    like = next(e for e in reversed(acct.entries) if isinstance(e, Execution))
    rows = []
    for prefix, changes in POISON.items():
        raw = {**trade_row(like), "execution_id": f"{prefix}.6576fd38.01.01", **changes}
        book.publish(acct, JunkRow(acct.account_id, like.trade_time, raw))
        rows.append(raw)
    return acct.account_id, rows


def _run(**params: Any) -> Any:
    return asyncio.run(nightly_reconciliation(return_state=True, **params))


def test_rows_the_ledger_cannot_hold_are_quarantined_and_the_night_completes(
    gateway_env: None, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Ledger(db_url).upgrade()
    with running_simulator(CLEAN, process=False) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        victim, poison = _poison(sim)
        state = _run(days=1, ledger_url=db_url)
        assert state.is_completed(), state.message
        report = compare_ledger_with_truth(db_url, sim)
        assert len(report.accounts) == CLEAN.accounts and report.ok, report.summary()
    summary = state.result()
    assert next(a for a in summary["accounts"] if a["account_id"] == victim)["quarantined"] == len(poison)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        kept = conn.execute(text("select account_id, raw from quarantine where kind = 'fill'")).all()
    engine.dispose()
    assert {account for account, _ in kept} == {victim}
    stored = sorted(json.dumps(json.loads(raw), sort_keys=True) for _, raw in kept)
    assert stored == sorted(json.dumps(row, sort_keys=True) for row in poison)


def test_an_empty_account_list_is_an_error_not_every_account(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        state = _run(accounts=[], ledger_url=ledger_url)
        assert state.is_failed()
        assert "accounts=[]" in state.message
        assert sim.stats()["requests"].get("GET /iserver/account/trades", 0) == 0

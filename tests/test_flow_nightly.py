"""The nightly reconciliation flow, end to end through Prefect, against the simulator over HTTP.

One Prefect test server for the session (``prefect_harness``); the simulator runs on a loopback port
(``running_simulator``) and the flow reaches it exactly as it would reach a Client Portal Gateway.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flows.nightly_reconciliation import nightly_reconciliation
from ibkr_tasks.reporting import EVENT_BREAK, EVENT_COMPLETED, PROGRESS_KEY, SUMMARY_KEY, artifact_key
from ibkr_tasks.sim import Scenario
from ibkr_tasks.sim.scenario import Quirks
from ibkr_tasks.testing import SimulatorHandle, running_simulator
from ibkr_tasks.verify import compare_ledger_with_truth

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

TOKEN = "flow-test-bearer-4f1d2c9e7a"  # a known value the test looks for everywhere


@dataclass
class Run:
    state: Any
    summary: dict[str, Any]

    def account(self, account_id: str) -> dict[str, Any]:
        return next(a for a in self.summary["accounts"] if a["account_id"] == account_id)

    def total(self, key: str) -> int:
        return sum(int(a[key]) for a in self.summary["accounts"])


def run_flow(**params: Any) -> Run:
    state = asyncio.run(nightly_reconciliation(return_state=True, **params))
    # Completed and Failed states alike carry the run's summary as their data.
    return Run(state=state, summary=state.result(raise_on_failure=False))


def count(url: str, sql: str, **params: Any) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    yield


QUIRKY = Scenario(
    seed=11,
    accounts=3,
    fa=True,
    positions_per_account=15,
    fills_per_account_per_day=10,
    history_days=2,
    quirks=Quirks(
        rate_limits=True,
        penalty_box_seconds=30,
        late_commissions=0.3,
        changed_commission=0.1,
        corrections=0.2,
        option_expiries=True,
        event_netting=True,
        malformed_ratio=0.05,
    ),
)


@dataclass
class Story:
    sim: SimulatorHandle
    ledger_url: str
    runs: list[Run]
    accounts: list[str]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """Four nightly runs over the same simulated days: late data arrives over the first runs, then settles."""
    mp = pytest.MonkeyPatch()
    mp.setenv("IBKR_ACCESS_TOKEN", TOKEN)
    mp.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    ledger_url = f"sqlite:///{Path(tmp_path_factory.mktemp('nightly')) / 'ledger.db'}"
    try:
        with running_simulator(QUIRKY) as sim:
            mp.setenv("IBKR_API_URL", sim.api_url)
            runs = [run_flow(days=QUIRKY.history_days, ledger_url=ledger_url) for _ in range(4)]
            accounts = [a["account_id"] for a in runs[0].summary["accounts"]]
            yield Story(sim=sim, ledger_url=ledger_url, runs=runs, accounts=accounts)
    finally:
        mp.undo()


def test_every_run_completes_for_every_account_of_the_fa_login(story: Story) -> None:
    assert len(story.accounts) == QUIRKY.accounts  # the FA master's own entry holds nothing to reconcile
    for run in story.runs:
        assert run.state.is_completed(), run.state.message
        assert {a["status"] for a in run.summary["accounts"]} <= {"completed", "breaks"}


def test_second_run_duplicates_nothing(story: Story) -> None:
    first, second = story.runs[0], story.runs[1]
    assert first.total("fills_new") > 0
    # new rows on the second run can only be correction revisions, each superseding an older one
    assert second.total("fills_new") == second.total("fills_superseded")
    current = count(story.ledger_url, "select count(*) from fills where not superseded")
    assert current == first.total("fills_new")
    families = count(
        story.ledger_url,
        "select count(*) from (select account_id, execution_family from fills where not superseded "
        "group by account_id, execution_family having count(*) > 1) t",
    )
    assert families == 0


def test_late_commissions_are_finalised_on_the_next_run(story: Story) -> None:
    assert story.runs[0].total("commissions_pending") > 0
    assert story.runs[1].total("commissions_finalised") >= story.runs[0].total("commissions_pending")
    assert count(story.ledger_url, "select count(*) from commissions where amount is null") == 0
    assert (
        count(story.ledger_url, "select count(*) from commissions where amount = 0 and status = 'pending'")
        == 0
    )


def test_corrections_supersede_the_earlier_revision(story: Story) -> None:
    superseded = sum(r.total("fills_superseded") for r in story.runs)
    assert superseded > 0
    assert count(story.ledger_url, "select count(*) from fills where superseded") == superseded


def test_changed_commissions_are_reported_as_breaks_with_history(story: Story) -> None:
    changed = sum(r.total("commissions_changed") for r in story.runs)
    assert changed > 0
    assert count(story.ledger_url, "select count(*) from breaks where kind like 'commission%'") == changed


def test_quarantined_rows_are_reported_and_kept(story: Story) -> None:
    reported = story.runs[0].total("quarantined")
    assert reported > 0
    assert count(story.ledger_url, "select count(*) from quarantine") >= reported


def test_ledger_equals_ground_truth_once_late_data_settled(story: Story) -> None:
    report = compare_ledger_with_truth(story.ledger_url, story.sim, story.accounts)
    assert report.ok, report.summary()


def test_no_account_holds_another_accounts_executions(story: Story) -> None:
    truth_ids = {a: {e["execution_id"] for e in story.sim.truth(a)["executions"]} for a in story.accounts}
    engine = create_engine(story.ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(text("select account_id, execution_id from fills")).all()
    engine.dispose()
    assert rows
    for account_id, execution_id in rows:
        assert execution_id in truth_ids[account_id], f"{execution_id} booked to {account_id}"


def test_pacing_never_tripped_ibkrs_limits(story: Story) -> None:
    stats = story.sim.stats()
    assert stats["responses_429"] == 0
    assert stats["rate_limit_violations"] == 0


def _flow_run_id(run: Run) -> Any:
    return run.state.state_details.flow_run_id


def prefect_api(fn: Any) -> Any:
    """``await fn(client)`` with Prefect's async client (its sync twin sends nulls the server refuses)."""
    from prefect.client.orchestration import get_client

    async def call() -> Any:
        async with get_client() as client:
            return await fn(client)

    return asyncio.run(call())


def latest_artifact(key: str) -> dict[str, Any]:
    """The newest artifact under ``key`` (GET /artifacts/{key}/latest), as the UI's artifact page shows it."""

    async def get(c: Any) -> dict[str, Any]:
        response = await c._client.get(f"/artifacts/{key}/latest")
        response.raise_for_status()
        return response.json()

    return prefect_api(get)


def _table_rows(data: Any) -> list[dict[str, Any]]:
    import json

    value = json.loads(data) if isinstance(data, str) else data
    return list(value)


def test_artifacts_summary_break_reports_and_progress(story: Story) -> None:
    last_run = str(_flow_run_id(story.runs[-1]))
    summary = latest_artifact(SUMMARY_KEY)
    assert summary["type"] == "table" and summary["flow_run_id"] == last_run
    rows = _table_rows(summary["data"])
    assert {row["account"] for row in rows} == set(story.accounts)
    assert all({"fills new", "commissions finalised", "quarantined", "breaks"} <= row.keys() for row in rows)
    for account_id in story.accounts:
        report = latest_artifact(artifact_key("ibkr-breaks", account_id))
        assert report["type"] == "markdown" and report["flow_run_id"] == last_run
        assert f"# Reconciliation {account_id}" in report["data"]
    progress = latest_artifact(PROGRESS_KEY)
    assert progress["type"] == "progress" and float(progress["data"]) == 100.0


def test_events_name_the_account_as_resource(story: Story) -> None:
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = {f"ibkr.account.{a}" for a in story.accounts}
    flt = EventFilter(event=EventNameFilter(name=[EVENT_COMPLETED, EVENT_BREAK]))
    deadline = time.monotonic() + 20
    seen: set[str] = set()
    breaks: list[Any] = []
    while time.monotonic() < deadline:  # events reach the server asynchronously
        page = prefect_api(lambda c: c.read_events(filter=flt, limit=50))
        seen = {e.resource.id for e in page.events if e.event == EVENT_COMPLETED}
        breaks = [e for e in page.events if e.event == EVENT_BREAK]
        if wanted <= seen and breaks:
            break
        time.sleep(0.5)
    assert wanted <= seen
    assert breaks, "changed commissions must raise ibkr.reconciliation.break"
    assert all(e.payload["breaks"] > 0 for e in breaks)


def test_token_never_reaches_logs_artifacts_or_parameters(
    story: Story, capfd: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    for run in story.runs:
        flow_run_id = _flow_run_id(run)
        flow_run = prefect_api(lambda c, i=flow_run_id: c.read_flow_run(i))
        assert TOKEN not in str(flow_run.parameters)
        flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        deadline = time.monotonic() + 20
        while not (logs := prefect_api(lambda c, flt=flt: c.read_logs(log_filter=flt, limit=200, offset=0))):
            assert time.monotonic() < deadline, "the run logged nothing: the check would be empty"
            time.sleep(0.5)  # run logs reach the server in batches
        assert all(TOKEN not in log.message for log in logs)
    keys = [SUMMARY_KEY, PROGRESS_KEY] + [artifact_key("ibkr-breaks", a) for a in story.accounts]
    assert all(TOKEN not in str(latest_artifact(k)) for k in keys)
    out, err = capfd.readouterr()
    assert TOKEN not in out and TOKEN not in err
    engine = create_engine(story.ledger_url)
    with engine.connect() as conn:
        for table in ("fills", "quarantine", "reconciliation_runs", "breaks", "position_snapshots"):
            dump = str(conn.execute(text(f"select * from {table}")).all())  # noqa: S608
            assert TOKEN not in dump
    engine.dispose()


# An FA login (as the demo's): one trades request a run, where a multi-account login waits IBKR's 5 s
# between per-account requests. The multi-account login has tests of its own below.
CLEAN = Scenario(
    seed=5, accounts=2, fa=True, positions_per_account=8, fills_per_account_per_day=6, history_days=1
)


def test_ledger_equals_truth_after_one_run(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        run = run_flow(days=1, ledger_url=ledger_url)
        assert run.state.is_completed(), run.state.message
        report = compare_ledger_with_truth(ledger_url, sim)
        assert len(report.accounts) == CLEAN.accounts
        assert report.ok, report.summary()
        # a trading day later, positions still reconcile from the opening snapshot plus the new fills
        sim.advance(days=1)
        run2 = run_flow(days=2, ledger_url=ledger_url)  # the simulated day spans two calendar days
        assert run2.total("fills_new") > 0
        assert run2.total("breaks") == 0, run2.summary
        assert compare_ledger_with_truth(ledger_url, sim).ok
        # The simulator's clock is now a day ahead of ours, so its newest trade time is in our future.
        # Another run must still file a snapshot of its own (later than the last) and compare, never
        # overwrite the opening snapshot.
        opening = (
            "select count(distinct opening_snapshot_at) from accounts where opening_snapshot_at is not null"
        )
        assert count(ledger_url, opening) == CLEAN.accounts
        openings_before = count(ledger_url, "select count(*) from position_snapshots")
        run3 = run_flow(days=2, ledger_url=ledger_url)
        assert run3.state.is_completed() and run3.total("breaks") == 0, run3.summary
        assert (
            count(ledger_url, "select count(distinct taken_at) from position_snapshots") == 3 * CLEAN.accounts
        )
        assert count(ledger_url, "select count(*) from position_snapshots") > openings_before


def test_failing_account_is_reported_while_the_others_complete(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = run_flow(days=1, ledger_url=ledger_url)
        accounts = [a["account_id"] for a in first.summary["accounts"]]
        broken = accounts[0]
        sim.faults(fail_accounts=[broken])
        run = run_flow(days=1, ledger_url=ledger_url)
    assert run.state.is_failed()
    assert broken in run.state.message and "failed" in run.state.message
    assert run.account(broken)["status"] == "failed" and run.account(broken)["error"]
    for other in accounts[1:]:
        assert run.account(other)["status"] == "completed"
    failed_runs = "select count(*) from reconciliation_runs where status = 'failed' and account_id = :a"
    assert count(ledger_url, failed_runs, a=broken) == 1


def test_fail_on_breaks_fails_the_run_and_names_the_account(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = run_flow(days=1, ledger_url=ledger_url)
        victim = first.summary["accounts"][0]["account_id"]
        # Make the books disagree: the ledger's opening position of one instrument is off by one.
        engine = create_engine(ledger_url)
        with engine.begin() as conn:
            changed = conn.execute(
                text(
                    "update position_snapshots set position = position + 1 where account_id = :a and conid = "
                    "(select min(conid) from position_snapshots where account_id = :a)"
                ),
                {"a": victim},
            ).rowcount
        engine.dispose()
        assert changed == 1
        lenient = run_flow(days=1, ledger_url=ledger_url)
        strict = run_flow(days=1, ledger_url=ledger_url, fail_on_breaks=True)
    assert lenient.state.is_completed() and victim in lenient.state.message
    assert lenient.account(victim)["breaks"] == 1
    assert strict.state.is_failed()
    assert victim in strict.state.message and "breaks" in strict.state.message


def test_prefect_never_walks_the_fills_and_positions_handed_to_tasks(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect inspects task arguments field by field unless they are wrapped (``opaque``); over
    hundreds of fills per account that costs seconds of a nightly run (bench/reconcile.py). The flow
    wraps every fill, position and rejected-row list, so the task engine never iterates one."""
    from prefect.utilities import collections as prefect_collections

    from ibkr_tasks.models import Fill, Position

    walked: list[str] = []
    visit = prefect_collections.visit_collection

    def spying_visit(expr: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(expr, (Fill, Position)):
            walked.append(type(expr).__name__)
        return visit(expr, *args, **kwargs)

    monkeypatch.setattr(prefect_collections, "visit_collection", spying_visit)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        run = run_flow(days=1, ledger_url=ledger_url)
    assert run.state.is_completed(), run.state.message
    assert run.total("fills_new") > 0 and all(a["positions"] for a in run.summary["accounts"])
    assert walked == []


def test_contract_info_is_looked_up_once_across_nights(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run looks up the contract info of every traded instrument in bulk (one
    ``/trsrv/secdef`` request per 200 conids, none one by one) and keeps it in the ledger; the next run
    seeds the client with it and asks IBKR only about instruments it has not seen. (An FA login: its
    one trades answer holds every account's instruments. A login that is not an FA master looks up
    each account's new instruments with its own trades answer, while the next one waits its turn.)"""
    bulk, info = "GET /trsrv/secdef", "GET /iserver/contract/{conid}/info"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN.model_copy(update={"fa": True})) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = run_flow(days=1, ledger_url=ledger_url)
        bulk_first = sim.stats()["requests"].get(bulk, 0)
        again = run_flow(days=1, ledger_url=ledger_url)
        assert sim.stats()["requests"].get(bulk, 0) == bulk_first
        assert sim.stats()["requests"].get(info, 0) == 0
        assert compare_ledger_with_truth(ledger_url, sim).ok
    assert first.state.is_completed() and again.state.is_completed()
    traded = count(ledger_url, "select count(distinct conid) from fills")
    assert traded > 0 and bulk_first == math.ceil(traded / 200)
    assert count(ledger_url, "select count(*) from contracts") == traded


def test_trades_go_out_while_the_ledger_opens_and_known_contracts_still_are_not_looked_up(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trades request does not wait for the ledger (a first run creates its schema, 0.3 s on
    SQLite, and that used to delay every IBKR request of the night). Here the ledger opens only once the
    simulator has answered the trades request; the contract lookup waits for what the ledger knows, so
    the second night still asks IBKR about no instrument it looked up on the first."""
    import flows.nightly_reconciliation as module

    trades, bulk = "GET /iserver/account/trades", "GET /trsrv/secdef"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    opened_after: list[int] = []
    with running_simulator(CLEAN.model_copy(update={"fa": True})) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = run_flow(days=1, ledger_url=ledger_url)
        before = sim.stats()["requests"]
        open_ledger = module.open_ledger

        async def open_after_trades(url: str | None = None) -> Any:
            deadline = time.monotonic() + 20
            while (n := (await asyncio.to_thread(sim.stats))["requests"].get(trades, 0)) == before.get(
                trades, 0
            ):
                assert time.monotonic() < deadline, "the flow waited for the ledger before asking for trades"
                await asyncio.sleep(0.02)
            opened_after.append(n - before.get(trades, 0))
            return await open_ledger(url)

        monkeypatch.setattr(module, "open_ledger", open_after_trades)
        again = run_flow(days=1, ledger_url=ledger_url)
        after = sim.stats()["requests"]
        assert compare_ledger_with_truth(ledger_url, sim).ok
    assert first.state.is_completed() and again.state.is_completed(), again.state.message
    assert opened_after == [1]
    assert after.get(bulk, 0) == before.get(bulk, 0)  # every instrument was known from the ledger


def trading_accounts(sim: SimulatorHandle) -> list[str]:
    """Every account of the simulated login that holds positions (not an FA master's own entry)."""
    import httpx

    rows = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30).json()
    return [r["account_id"] for r in rows if r["kind"] != "master"]


LOGINS = {
    # An FA master: one trades request answers for its client sub-accounts.
    "fa": Scenario(
        seed=13,
        accounts=3,
        fa=True,
        positions_per_account=8,
        fills_per_account_per_day=6,
        history_days=1,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=30, late_commissions=0.3),
    ),
    # Several accounts under one username, no FA master: a trades request answers for the selected
    # account only, so each account is asked for by accountId.
    "multi-account": Scenario(
        seed=13,
        accounts=2,
        positions_per_account=8,
        fills_per_account_per_day=6,
        history_days=1,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=30, late_commissions=0.3),
    ),
}


@pytest.mark.parametrize("login", list(LOGINS))
def test_ledger_equals_truth_for_every_account_of_both_kinds_of_login(
    login: str, gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = LOGINS[login]
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(scenario) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        accounts = trading_accounts(sim)
        assert len(accounts) == scenario.accounts
        first = run_flow(days=1, ledger_url=ledger_url)
        assert first.state.is_completed(), first.state.message
        assert all(first.account(a)["fills_seen"] > 0 for a in accounts), first.summary
        sim.advance(days=1)
        second = run_flow(days=2, ledger_url=ledger_url)
        assert second.state.is_completed() and second.total("breaks") == 0, second.summary
        report = compare_ledger_with_truth(ledger_url, sim, accounts)
        assert report.ok, report.summary()
        stats = sim.stats()
    trades = stats["requests"]["GET /iserver/account/trades"]
    # auto scope: one request per run for the FA master's sub-accounts, one per account otherwise
    assert trades == (2 if login == "fa" else 2 * scenario.accounts)
    assert stats["responses_429"] == 0


def test_self_check_asks_by_account_id_when_a_login_wide_answer_missed_an_account(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced to ONE trades request on a login that is not an FA master, the answer is the selected
    account's only. The next night the other account's positions have moved with no trades row to
    show for it: the run asks for its trades by accountId instead of reporting breaks."""
    scenario = LOGINS["multi-account"]
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(scenario) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        selected, other = trading_accounts(sim)
        first = run_flow(days=1, ledger_url=ledger_url, trades_scope="login")
        assert first.state.is_completed(), first.state.message
        # nothing to compare with on the first night: the snapshot becomes the opening position
        assert first.account(other)["fills_seen"] == 0
        sim.advance(days=1)
        second = run_flow(days=2, ledger_url=ledger_url, trades_scope="login")
        assert second.state.is_completed(), second.state.message
        assert second.total("breaks") == 0, second.summary
        assert second.account(other)["fills_seen"] > 0
        report = compare_ledger_with_truth(ledger_url, sim, [selected, other])
        assert report.ok, report.summary()
        stats = sim.stats()
    assert stats["requests"]["GET /iserver/account/trades"] == 3  # 1 + (1 + the account's own)


def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    return prefect_api(lambda c: c.read_task_runs(flow_run_filter=flt))


def _run_logs(flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=30))
    deadline = time.monotonic() + 20
    while not (logs := prefect_api(lambda c: c.read_logs(log_filter=flt, limit=200, offset=0))):
        assert time.monotonic() < deadline, "no WARNING reached the run's log"
        time.sleep(0.5)  # run logs reach the server in batches
    return logs


def test_breaks_show_where_users_look_first(
    gateway_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with breaks says so in its state message, its reconcile task's message, a WARNING naming
    the instrument, the summary table's first columns and the account's report (how many, as of when,
    worth what, the likely cause); the run is named after the trading date; fixing the books shows
    "1 break resolved"."""
    from datetime import UTC, datetime, timedelta

    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(CLEAN) as sim:
        monkeypatch.setenv("IBKR_API_URL", sim.api_url)
        first = run_flow(days=1, ledger_url=ledger_url)
        victim = first.summary["accounts"][0]["account_id"]
        engine = create_engine(ledger_url)
        with engine.begin() as conn:  # one opening position off by one, and a missed night
            conid = conn.execute(
                text("select min(conid) from position_snapshots where account_id = :a"), {"a": victim}
            ).scalar_one()
            conn.execute(
                text(
                    "update position_snapshots set position = position + 1 where account_id = :a and conid = :c"
                ),
                {"a": victim, "c": conid},
            )
            conn.execute(
                text("update accounts set last_reconciled_at = :t where account_id = :a"),
                {"a": victim, "t": datetime.now(UTC) - timedelta(days=6)},
            )
        broken = run_flow(days=1, ledger_url=ledger_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "update position_snapshots set position = position - 1 where account_id = :a and conid = :c"
                ),
                {"a": victim, "c": conid},
            )
        fixed = run_flow(days=1, ledger_url=ledger_url)
        engine.dispose()

    assert broken.state.is_completed()
    message = broken.state.message
    assert message.startswith(f"1 break in {victim} (1 position worth "), message
    assert re.search(r"worth [+-][\d,]+\.\d{2,} [A-Z]{3}\)", message), message  # value and currency
    assert f"1 of {CLEAN.accounts} account(s) without breaks" in message

    run_id = _flow_run_id(broken)
    flow_run = prefect_api(lambda c: c.read_flow_run(run_id))
    from ibkr_tasks.reporting import Window

    assert flow_run.name == Window.at(datetime.now(UTC)).run_name  # reconcile-YYYY-MM-DD
    assert flow_run.state.message == message
    assert "breaks" in flow_run.tags  # the run list shows tags, not messages
    assert "breaks" not in prefect_api(lambda c: c.read_flow_run(_flow_run_id(fixed))).tags

    tasks = {t.name: t for t in _task_runs(run_id)}
    reconcile = tasks[f"reconcile-positions-{victim}"]
    assert reconcile.state.message.startswith("1 position break(s): "), reconcile.state.message
    assert f"({conid}) ledger " in reconcile.state.message

    warnings = [log.message for log in _run_logs(run_id)]
    assert any(m.startswith(f"1 break in {victim}") and f"({conid})" in m for m in warnings), warnings

    summary = latest_artifact(SUMMARY_KEY)
    assert summary["flow_run_id"] == str(_flow_run_id(fixed))
    assert "trading date " in summary["description"] and "last 1 day" in summary["description"]
    assert str(run_id) not in summary["description"]
    rows = _table_rows(summary["data"])
    assert list(rows[0])[:4] == ["account", "status", "breaks", "error"]

    async def report_of(c: Any, flow_run_id: Any) -> str:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        found = await c.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("ibkr-breaks", victim)]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
        return found[0].data

    report = prefect_api(lambda c: report_of(c, run_id))
    assert report.startswith(f"# Reconciliation {victim}: 1 break (1 position worth ")
    assert "positions as of " in report and re.search(r"\| [+-][\d,]+\.\d{2,} \| [A-Z]{3} \|", report), report
    assert "## Likely cause" in report and "Run nightly-reconciliation once with `days=" in report
    resolved = prefect_api(lambda c: report_of(c, _flow_run_id(fixed)))
    assert "1 break resolved since the last run" in resolved
    assert fixed.state.message.startswith(f"{CLEAN.accounts} account(s) reconciled, no breaks")


def test_reconciliation_events_carry_a_readable_summary(story: Story) -> None:
    from prefect.events.filters import EventFilter, EventNameFilter

    flt = EventFilter(event=EventNameFilter(name=[EVENT_BREAK]))
    deadline = time.monotonic() + 20
    while not (events := prefect_api(lambda c: c.read_events(filter=flt, limit=50)).events):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    event = events[0]
    account = event.resource.id.removeprefix("ibkr.account.")
    summary = event.payload["summary"]
    assert summary.startswith(f"{event.payload['breaks']} break") and account in summary
    assert "fills " in summary and "commissions " in summary
    # What the UI's Details tab shows: the resource and the related resources, by id.
    shown = [r.id for r in event.related]
    assert f"ibkr.summary: {summary}" in shown

"""The morning statement reconciliation, end to end through Prefect, against the simulator's Flex
Web Service over HTTP, after the nightly reconciliation filled the ledger from the Client Portal API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flows.flex_reconciliation import flex_reconciliation
from flows.nightly_reconciliation import nightly_reconciliation
from ibkr_tasks.client.settings import FlexSettings
from ibkr_tasks.flex.models import FlexResponse
from ibkr_tasks.flex.parse import parse_flex
from ibkr_tasks.flex.service import FlexPolling, FlexWebService
from ibkr_tasks.flex.times import EASTERN
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.flex import STATEMENT_SOURCE, end_of_statement_day
from ibkr_tasks.reporting import EVENT_STATEMENT_BREAK, STATEMENT_SUMMARY_KEY, artifact_key
from ibkr_tasks.sim import Scenario
from ibkr_tasks.sim.scenario import Quirks
from ibkr_tasks.testing import SimulatorHandle, running_simulator

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

TOKEN = "flex-flow-bearer-0c9d"
FLEX_TOKEN = "flex-flow-token-7e21aa"  # a known value the test looks for in what Prefect kept

SCENARIO = Scenario(
    seed=23,
    accounts=2,
    fa=True,
    positions_per_account=10,
    fills_per_account_per_day=8,
    history_days=2,
    quirks=Quirks(late_commissions=0.3, corrections=0.25, option_expiries=True, malformed_ratio=0.05),
)

TABLES = ("fills", "commissions", "commission_history", "cash_transactions", "statement_positions", "breaks")


@dataclass
class Story:
    sim: SimulatorHandle
    ledger_url: str
    start: date
    end: date
    runs: list[dict[str, Any]]
    tables: list[dict[str, list[Any]]]
    statement: FlexResponse


def run_flex(**params: Any) -> dict[str, Any]:
    state = asyncio.run(flex_reconciliation(return_state=True, poll_seconds=0, **params))
    assert state.is_completed(), state.message
    return state.result(raise_on_failure=False)  # type: ignore[no-any-return]


def dump(url: str) -> dict[str, list[Any]]:
    """Every row of the tables a statement writes, for comparing runs."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            queries = {t: text(f"select * from {t} order by 1, 2") for t in TABLES}  # noqa: S608
            return {t: [tuple(r) for r in conn.execute(q)] for t, q in queries.items()}
    finally:
        engine.dispose()


async def _fetch(sim: SimulatorHandle, start: date, end: date) -> bytes:
    settings = FlexSettings(url=f"{sim.base_url}/flex", token=FLEX_TOKEN, query_id="1234")
    polling = FlexPolling(first_delay=0, retry_delay=0)
    async with FlexWebService(settings, polling=polling) as flex:
        return await flex.fetch(from_date=start, to_date=end)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    mp = pytest.MonkeyPatch()
    mp.setenv("IBKR_ACCESS_TOKEN", TOKEN)
    mp.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
    mp.setenv("IBKR_FLEX_TOKEN", FLEX_TOKEN)
    mp.setenv("IBKR_FLEX_QUERY_ID", "1234")
    ledger_url = f"sqlite:///{Path(tmp_path_factory.mktemp('flex')) / 'ledger.db'}"
    try:
        with running_simulator(SCENARIO) as sim:
            mp.setenv("IBKR_API_URL", sim.api_url)
            mp.setenv("IBKR_FLEX_URL", f"{sim.base_url}/flex")
            nightly = asyncio.run(
                nightly_reconciliation(days=SCENARIO.history_days, ledger_url=ledger_url, return_state=True)
            )
            assert nightly.is_completed(), nightly.message
            end = Ledger(ledger_url).latest_snapshot_at(nightly.result()["accounts"][0]["account_id"])
            assert end is not None
            end_day = end.astimezone(EASTERN).date()
            # five weeks: the history days' fills, and a first business day of a month (fees, interest)
            start_day = end_day - timedelta(days=35)
            runs, tables = [], []
            for _ in range(2):
                runs.append(run_flex(from_date=start_day, to_date=end_day, ledger_url=ledger_url))
                tables.append(dump(ledger_url))
            statement = parse_flex(asyncio.run(_fetch(sim, start_day, end_day)))
            yield Story(sim, ledger_url, start_day, end_day, runs, tables, statement)
    finally:
        mp.undo()


def _accounts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["account_id"]: a for a in run["accounts"]}


def test_morning_run_confirms_finalises_and_books_cash_without_breaks(story: Story) -> None:
    first = _accounts(story.runs[0])
    assert set(first) == {s.account_id for s in story.statement.statements}
    for counts in first.values():
        assert counts["breaks"] == 0, counts
        assert counts["fills_confirmed"] > 0
        assert counts["commissions_finalised"] >= counts["fills_confirmed"]
        assert counts["cash_transactions"] > 0
        assert counts["positions_compared"] > 0
    # corrections the Client Portal had not yet shown arrive through the statement
    assert sum(c["fills_cancelled"] for c in first.values()) > 0


def test_ledger_equals_the_statement_to_the_cent(story: Story) -> None:
    ledger = Ledger(story.ledger_url)
    engine = ledger.engine
    for statement in story.statement.statements:
        account = statement.account_id
        assert account is not None
        with engine.connect() as conn:
            fills = {
                r.execution_id: r
                for r in conn.execute(
                    text(
                        "select f.execution_id, f.conid, f.side, f.quantity, f.price, f.cancelled, "
                        "f.statement_date, c.amount, c.currency, c.status, c.source from fills f join "
                        "commissions c on c.account_id = f.account_id and c.execution_id = f.execution_id "
                        "where f.account_id = :a"
                    ),
                    {"a": account},
                )
            }
        for row in statement.executions:
            fill = fills[row.key]
            assert (fill.conid, Decimal(fill.quantity), Decimal(fill.price)) == (
                row.conid,
                row.quantity,
                row.price,
            )
            assert fill.statement_date is not None
            assert (Decimal(fill.amount), fill.currency) == (row.commission, row.commission_currency)
            assert (fill.status, fill.source) == ("final", STATEMENT_SOURCE)
        cancelled_trades = {c.orig_trade_id for c in statement.cancellations}
        named = {row.key for row in statement.executions if row.trade_id in cancelled_trades}
        assert named and {k for k, f in fills.items() if f.cancelled} == named
        cash = {c.transaction_key: c for c in ledger.cash_transactions(account)}
        assert {c.key: (c.amount, c.currency, c.type) for c in statement.cash_transactions} == {
            k: (c.amount, c.currency, c.type) for k, c in cash.items()
        }
        wanted = {conid: q for (_, conid), q in statement.position_quantities().items() if q != 0}
        assert ledger.positions_at(account, end_of_statement_day(story.end)) == wanted
        stored = {p.conid: p.quantity for p in ledger.statement_positions(account, story.end)}
        assert stored == {conid: q for (_, conid), q in statement.position_quantities().items()} and stored
    ledger.dispose()


def test_a_second_morning_run_changes_nothing(story: Story) -> None:
    second = _accounts(story.runs[1])
    for counts in second.values():
        assert counts["breaks"] == 0
        for key in (
            "fills_confirmed",
            "fills_added",
            "fills_cancelled",
            "fills_superseded",
            "commissions_finalised",
            "commissions_changed",
            "cash_transactions",
            "cash_changed",
            "quarantined",
        ):
            assert counts[key] == 0, (key, counts)
    assert story.tables[0] == story.tables[1]


def test_summary_table_and_break_reports_are_published(story: Story) -> None:
    from tests.test_flow_nightly import latest_artifact

    summary = latest_artifact(STATEMENT_SUMMARY_KEY)
    rows = json.loads(summary["data"]) if isinstance(summary["data"], str) else summary["data"]
    assert {r["account"] for r in rows} == {s.account_id for s in story.statement.statements}
    assert all(
        {
            "fills confirmed",
            "fills added",
            "fills cancelled",
            "commissions finalised",
            "commissions changed",
            "cash transactions",
            "breaks",
        }
        <= r.keys()
        for r in rows
    )
    for statement in story.statement.statements:
        report = latest_artifact(artifact_key("ibkr-statement-breaks", statement.account_id or ""))
        assert "No breaks" in report["data"]


def test_a_ledger_that_differs_from_the_statement_gets_breaks_and_an_event(story: Story) -> None:
    from tests.test_flow_nightly import prefect_api

    account = story.statement.statements[0].account_id
    row = next(r for r in story.statement.statements[0].executions if not r.cancelled and r.commission)
    engine = create_engine(story.ledger_url)
    try:
        with engine.begin() as conn:
            # what the Client Portal might have said instead: another commission, a fill IBKR never booked
            conn.execute(
                text(
                    "update commissions set amount = '9.99', source = 'iserver_trades' where account_id = :a and execution_id = :e"
                ),
                {"a": account, "e": row.key},
            )
            conn.execute(
                text(
                    "insert into fills select account_id, 'ffff0001.00000001.01.01', 'ffff0001.00000001.01', 1, "
                    "superseded, conid, symbol, sec_type, side, quantity, price, multiplier, net_amount, currency, "
                    "trade_time, order_ref, order_id, exchange, is_event_contract, 'iserver_trades', raw, "
                    "first_seen_run, last_changed_run, first_seen_at, last_changed_at, null, null, null, cancelled, null "
                    "from fills where account_id = :a and execution_id = :e"
                ),
                {"a": account, "e": row.key},
            )
    finally:
        engine.dispose()
    run = _accounts(run_flex(from_date=story.start, to_date=story.end, ledger_url=story.ledger_url))[account]
    assert run["commissions_changed"] == 1
    # (the extra fill traded before the opening snapshot: the broker's positions already hold it)
    assert run["breaks"] == 2  # the commission and the fill the statement lacks
    with create_engine(story.ledger_url).connect() as conn:
        kinds = sorted(
            r.kind
            for r in conn.execute(
                text("select kind from breaks where account_id = :a and status = 'open'"), {"a": account}
            )
        )
        amount = conn.execute(
            text("select amount from commissions where account_id = :a and execution_id = :e"),
            {"a": account, "e": row.key},
        ).scalar_one()
    assert kinds == ["statement_commission", "statement_missing"]
    assert Decimal(amount) == row.commission  # the statement's amount is the final one

    from prefect.events.filters import EventFilter, EventNameFilter

    flt = EventFilter(event=EventNameFilter(name=[EVENT_STATEMENT_BREAK]))
    deadline = time.monotonic() + 20
    events: list[Any] = []
    while time.monotonic() < deadline and not events:
        events = [
            e
            for e in prefect_api(lambda c: c.read_events(filter=flt, limit=50)).events
            if e.resource.id == f"ibkr.account.{account}"
        ]
        time.sleep(0.3)
    assert events and events[0].payload["breaks"] == 2


def test_the_flex_token_is_not_kept_by_prefect(story: Story) -> None:
    from tests.test_flow_nightly import latest_artifact

    summary = latest_artifact(STATEMENT_SUMMARY_KEY)
    assert FLEX_TOKEN not in json.dumps(summary)

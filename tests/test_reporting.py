"""Reconciliation reports: artifact keys Prefect accepts, break reports users read, event payloads."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ibkr_tasks.formatting import fmt
from ibkr_tasks.ledger.ingest import IngestResult
from ibkr_tasks.reporting import (
    AccountOutcome,
    CommissionBreak,
    PositionBreak,
    Window,
    account_resource,
    artifact_key,
    break_report,
    event_payload,
    summary_resource,
    summary_table,
    summary_text,
    trading_date,
)


@pytest.mark.parametrize(
    ("parts", "key"),
    [(("ibkr-breaks", "DUO873728"), "ibkr-breaks-duo873728"), (("Fills_U123", "x y"), "fills-u123-x-y")],
)
def test_artifact_keys_follow_prefects_rule(parts: tuple[str, ...], key: str) -> None:
    from prefect.types.names import ArtifactKey  # the validator Prefect applies client-side
    from pydantic import TypeAdapter

    assert artifact_key(*parts) == key
    assert TypeAdapter(ArtifactKey).validate_python(key) == key


def _outcome() -> AccountOutcome:
    return AccountOutcome(
        account_id="DU111",
        status="breaks",
        fills_new=3,
        position_breaks=[
            PositionBreak(
                conid=265598,
                symbol="AAPL",
                expected=Decimal("10"),
                actual=Decimal("12"),
                price=Decimal("1850.5"),
                multiplier=Decimal(1),
                currency="USD",
            )
        ],
        commission_breaks=[
            CommissionBreak(
                execution_id="0000e0d5.6576fd38.01.01",
                expected=Decimal("1.00"),
                actual=Decimal("1.25"),
                currency="USD",
            )
        ],
    )


WINDOW = Window(trading_date=date(2026, 11, 30), days=1)


def test_break_report_shows_positions_and_commission_deltas() -> None:
    text = break_report(_outcome(), "run-1", WINDOW)
    assert "| AAPL (265598) | 10 | 12 | +2 | 1,850.50 | +3,701.00 | USD |" in text
    assert "| 0000e0d5.6576fd38.01.01 | 1.00 | 1.25 | +0.25 | USD |" in text
    assert "No breaks" not in text


def test_break_report_says_how_many_when_and_what_it_is_worth() -> None:
    outcome = _outcome()
    outcome.as_of = datetime(2026, 11, 30, 23, 31, tzinfo=UTC)
    outcome.resolved = 3
    text = break_report(outcome, "run-1", WINDOW)
    assert text.splitlines()[0] == (
        "# Reconciliation DU111: 2 breaks (1 position worth +3,701.00 USD, 1 commission change)"
    )
    assert "trading date 2026-11-30, executions of the last 1 day" in text
    assert "positions as of 2026-11-30 23:31 UTC" in text
    assert "worth +3,701.00 USD at the broker's mark price" in text
    assert "3 breaks resolved since the last run" in text
    assert "Likely cause" not in text  # no missed night: nothing to guess


def test_break_report_names_a_missed_night_and_what_to_run() -> None:
    outcome = _outcome()
    outcome.last_success = datetime(2026, 11, 25, 23, 35, tzinfo=UTC)  # Wednesday evening
    text = break_report(outcome, "run-1", WINDOW)  # Monday's run, one day of executions
    assert "## Likely cause" in text
    assert "fills of 2026-11-26, 2026-11-27 were never fetched" in text
    assert "Run nightly-reconciliation once with `days=5`" in text
    covered = break_report(outcome, "run-1", Window(trading_date=date(2026, 11, 30), days=5))
    assert "Likely cause" not in covered


def test_break_report_without_a_price_says_the_value_is_unknown() -> None:
    outcome = AccountOutcome(
        account_id="DU111",
        status="breaks",
        position_breaks=[PositionBreak(conid=8314, symbol="IBM", expected=Decimal(5), actual=Decimal(0))],
    )
    text = break_report(outcome, "r", WINDOW)
    assert "| IBM (8314) | 5 | 0 | -5 | unknown | unknown |  |" in text
    assert "No price for IBM (8314)" in text


def test_break_report_says_so_when_clean() -> None:
    assert "No breaks" in break_report(AccountOutcome(account_id="DU111", status="completed"), "r")


def test_event_payload_is_json_safe_and_names_the_account() -> None:
    import json

    payload = event_payload(_outcome(), "run-1", WINDOW)
    assert json.loads(json.dumps(payload))["position_breaks"][0]["delta"] == "2"
    assert payload["position_breaks"][0]["value"] == "3701.0"
    assert payload["breaks"] == 2 and payload["trading_date"] == "2026-11-30"
    assert account_resource("DU111")["prefect.resource.id"] == "ibkr.account.DU111"


def test_event_summary_is_readable_where_the_ui_shows_it() -> None:
    summary = event_payload(_outcome(), "run-1")["summary"]
    assert summary.startswith("2 breaks in DU111 (1 position worth +3,701.00 USD, 1 commission change)")
    assert "fills 3 new" in summary
    # The UI's Details tab lists resources by id, never the payload: the summary is a resource id.
    assert summary_resource(_outcome())["prefect.resource.id"] == f"ibkr.summary: {summary}"


def test_summary_table_puts_what_needs_a_look_first() -> None:
    rows = summary_table([_outcome(), AccountOutcome(account_id="DU222", status="failed", error="boom")])
    assert [r["account"] for r in rows] == ["DU111", "DU222"]
    assert list(rows[0])[:4] == ["account", "status", "breaks", "error"]
    assert rows[0]["breaks"] == 2 and rows[1]["error"] == "boom"


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), date(2026, 11, 30)),  # Monday 18:30 in New York
        (datetime(2026, 12, 1, 3, 0, tzinfo=UTC), date(2026, 11, 30)),  # Monday 22:00 NY, Tuesday in UTC
        (datetime(2026, 12, 1, 12, 0, tzinfo=UTC), date(2026, 11, 30)),  # Tuesday 07:00 NY: before the open
        (datetime(2026, 11, 29, 18, 0, tzinfo=UTC), date(2026, 11, 27)),  # Sunday: the Friday
        (datetime(2026, 7, 6, 22, 30, tzinfo=UTC), date(2026, 7, 6)),  # summer time (EDT)
    ],
)
def test_trading_date_is_new_yorks(moment: datetime, day: date) -> None:
    assert trading_date(moment) == day
    assert Window.at(moment).run_name == f"reconcile-{day.isoformat()}"
    assert Window.at(moment, 3).run_name == f"reconcile-{day.isoformat()}-last-3-days"


@pytest.mark.parametrize(
    ("value", "plain", "amount"),
    [
        ("1.25E+3", "1,250", "1,250.00 USD"),
        ("945.0", "945", "945.00 USD"),
        ("2336647.47", "2,336,647.47", "2,336,647.47 USD"),
        ("173569.4", "173,569.4", "173,569.40 USD"),
        ("3.155", "3.155", "3.155 USD"),
        ("-0.00", "0", "0.00 USD"),
        ("-1000", "-1,000", "-1,000.00 USD"),
    ],
)
def test_numbers_are_plain_grouped_and_carry_the_currency(value: str, plain: str, amount: str) -> None:
    assert fmt(Decimal(value)) == plain
    assert fmt(Decimal(value), "USD", money=True) == amount
    assert "E" not in fmt(Decimal(value)) and "E" not in fmt(Decimal(value), money=True)
    assert fmt(Decimal(2), sign=True) == "+2" and fmt(Decimal(-2), sign=True) == "-2"
    assert fmt(Decimal(0), sign=True) == "0"


def test_a_missing_number_reads_the_same_whatever_its_kind() -> None:
    assert fmt(None) == fmt(None, "USD", money=True) == fmt(None, sign=True) == "unknown"
    assert fmt(None, money=True, missing="pending") == "pending"


def test_an_outcome_counts_what_its_ingest_counted_and_the_breaks_it_holds() -> None:
    """The run counts are one definition: an ingest's are added to the outcome as they are, and the
    outcome's counts are the reconciliation_runs columns, breaks counted from the breaks held."""
    ingest = IngestResult(account_id="DU111", fills_new=2, fills_updated=3, fills_rederived=2, quarantined=1)
    outcome = _outcome()
    outcome.add(ingest)
    assert outcome.counts() == {
        "fills_new": 5,
        "fills_updated": 3,
        "fills_rederived": 2,
        "fills_superseded": 0,
        "commissions_finalised": 0,
        "commissions_changed": 0,
        "quarantined": 1,
        "breaks": 2,
    }
    assert "fills 5 new, 3 updated (2 re-derived), 0 superseded" in summary_text(outcome)
    row = summary_table([outcome])[0]
    assert (row["fills rederived"], row["breaks"], row["quarantined"]) == (2, 2, 1)


async def test_progress_updates_never_wait_never_go_backwards_and_coalesce() -> None:
    """Accounts finishing together cost one or two artifact calls, in order, ending at 100 %."""
    import asyncio

    from ibkr_tasks.reporting import ProgressUpdates

    written: list[float] = []
    gate = asyncio.Event()

    async def update(artifact_id: str, *, progress: float) -> None:
        assert artifact_id == "a1"
        await gate.wait()  # a slow API call
        written.append(progress)

    progress = ProgressUpdates("a1", total=4, update=update)
    progress.advance()
    await asyncio.sleep(0)  # the first call is in flight
    for _ in range(3):
        progress.advance()  # returns at once, while the first call is still waiting
    gate.set()
    await progress.flush()
    assert written == [25.0, 100.0]
    assert progress.calls == 2


async def test_a_failed_progress_update_is_logged_not_raised(caplog: Any) -> None:
    from ibkr_tasks.reporting import ProgressUpdates

    async def update(artifact_id: str, *, progress: float) -> None:
        raise RuntimeError("Prefect API unreachable")

    progress = ProgressUpdates("a1", total=1, update=update)
    progress.advance()
    await progress.flush()
    assert "could not update the progress artifact" in caplog.text

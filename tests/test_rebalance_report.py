"""What a rebalance run shows in its artifacts, built without Prefect (ibkr_tasks.rebalance.report)."""

from __future__ import annotations

from decimal import Decimal

from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.rebalance.execute import ExecutionReport, OrderOutcome, RefusedPrompt
from ibkr_tasks.rebalance.report import failure_markdown

O451_TEXT = (
    'The following order "BUY 300 AAPL NASDAQ.NMS" value estimate of 57,000.00 USD exceeds \n'
    "the Total Value Limit of 50,000 USD.\nAre you sure you want to submit this order?"
)


def refused_report() -> ExecutionReport:
    refused = RefusedPrompt(
        message_ids=["o451"], text=O451_TEXT, reason=PromptPolicy.default().describe(["o451"])
    )
    outcome = OrderOutcome(
        coid="rb-0badc0de-265598-B-300",
        conid=265598,
        symbol="AAPL",
        side="Buy",
        quantity=Decimal(300),
        status="prompt_refused",
        refused_prompt=refused,
    )
    outcome.error = refused.describe()
    return ExecutionReport(run_id="run-1", account_id="DU1234567", orders=[outcome], error=outcome.error)


def test_refused_prompt_artifact_shows_the_text_once_readable_and_how_to_allow_it() -> None:
    markdown = failure_markdown(refused_report())

    assert markdown.startswith("# Rebalance DU1234567 stopped: IBKR asked a question")
    assert "\\n" not in markdown  # no escaped line breaks
    for line in ("the Total Value Limit of 50,000 USD.", "Are you sure you want to submit this order?"):
        assert markdown.count(line) == 1, markdown
        assert f"> {line}" in markdown.splitlines()  # quoted, one line of IBKR's text per line
    assert "o451 (not allowed by the prompt policy: The order's value estimate exceeds" in markdown
    assert '`allow_prompts=["o451"]`' in markdown
    assert "--param allow_prompts='[\"o451\"]'" in markdown
    assert '`"o451": {"allow": true}`' in markdown and "as `prompt_policy`" in markdown
    assert "policy=..." not in markdown
    assert "`rb-0badc0de-265598-B-300` (buy 300 AAPL) was **not placed**" in markdown


def test_refusal_message_names_the_flow_parameters_and_carries_the_text_once() -> None:
    message = refused_report().error or ""
    assert message.count("Are you sure you want to submit this order?") == 1
    assert "\n" not in message and "\\n" not in message
    assert 'allow_prompts=["o451"]' in message and "path as prompt_policy" in message


def test_other_errors_are_shown_in_a_block_with_what_was_cancelled() -> None:
    report = ExecutionReport(
        run_id="run-2",
        account_id="DU1234567",
        error="OrderRejected: IBKR rejected order rb-1 for DU1234567: contract expired",
        cancelled=["1234"],
    )
    markdown = failure_markdown(report)
    assert markdown.startswith("# Rebalance DU1234567 stopped\n")
    assert "```text\nOrderRejected: IBKR rejected order rb-1 for DU1234567: contract expired\n```" in markdown
    assert "Cancel requested for this run's working orders: 1234." in markdown
    assert "allow_prompts" not in markdown


def test_events_of_an_executed_run_one_per_filled_order_then_completed() -> None:
    from ibkr_tasks.rebalance.report import EVENT_COMPLETED, EVENT_ORDER_FILLED, RunResult, run_events

    filled = OrderOutcome(
        coid="rb-1-265598-B-10",
        conid=265598,
        symbol="AAPL",
        side="Buy",
        quantity=Decimal(10),
        order_id="111",
        status="Filled",
        filled=Decimal(10),
        avg_price=Decimal("190.125"),
        currency="USD",
    )
    resting = OrderOutcome(
        coid="rb-1-756733-S-5", conid=756733, symbol="SPY", side="Sell", quantity=Decimal(5), order_id="112"
    )
    report = ExecutionReport(run_id="run-1", account_id="DU1234567", orders=[filled, resting], fills_new=1)
    events = run_events(
        RunResult(
            account_id="DU1234567", run_id="run-1", dry_run=False, failed=False, message="ok", report=report
        )
    )

    assert [e.event for e in events] == [EVENT_ORDER_FILLED, EVENT_COMPLETED]
    assert all(e.resource["prefect.resource.id"] == "ibkr.account.DU1234567" for e in events)
    fill = events[0].payload
    assert fill == fill | {
        "account_id": "DU1234567",
        "mode": "execute",
        "conid": 265598,
        "symbol": "AAPL",
        "side": "Buy",
        "quantity": "10",
        "avg_price": "190.125",
        "currency": "USD",
        "coid": "rb-1-265598-B-10",
        "order_id": "111",
    }
    assert fill["summary"] == "DU1234567: buy 10 AAPL at 190.125 USD (cOID rb-1-265598-B-10)"
    done = events[1].payload
    assert (done["orders_placed"], done["orders_filled"], done["orders_failed"]) == (2, 1, 0)
    assert (
        done["summary"] == "rebalance DU1234567 execute completed: 2 of 2 order(s) placed, 1 filled, 0 failed"
    )
    for event in events:
        (related,) = event.related
        assert related["prefect.resource.id"] == f"ibkr.summary: {event.payload['summary']}"
        assert related["prefect.resource.role"] == "summary"


def test_events_of_a_stopped_run_and_of_a_dry_run() -> None:
    from ibkr_tasks.rebalance.report import EVENT_COMPLETED, EVENT_FAILED, RunResult, run_events

    (failed,) = run_events(
        RunResult(
            account_id="DU1234567",
            run_id="run-3",
            dry_run=False,
            failed=True,
            message="rebalance of DU1234567 failed: IBKR asked o451",
            report=refused_report(),
        )
    )
    assert failed.event == EVENT_FAILED
    assert failed.payload["orders_failed"] == 1 and failed.payload["orders_placed"] == 0
    assert failed.payload["summary"].endswith("; rebalance of DU1234567 failed: IBKR asked o451")
    (dry,) = run_events(
        RunResult(account_id="DU1234567", run_id="run-4", dry_run=True, failed=False, message="dry run")
    )
    assert dry.event == EVENT_COMPLETED and dry.payload["mode"] == "dry-run"
    assert dry.payload["summary"] == "rebalance DU1234567 dry-run completed: 0 order(s) planned, nothing sent"

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

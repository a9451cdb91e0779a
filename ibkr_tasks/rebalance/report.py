"""What a rebalance run shows a person: artifact contents built from its plan and its execution report.

Plain functions (tested without Prefect); :func:`publish_plan` and :func:`publish_report` send them
to Prefect as artifacts.
"""

from __future__ import annotations

from ibkr_tasks.formatting import number
from ibkr_tasks.rebalance.execute import ExecutionReport, OrderOutcome

__all__ = ["failure_markdown"]


def _order_label(outcome: OrderOutcome) -> str:
    return f"{outcome.side.lower()} {number(outcome.quantity)} {outcome.symbol or outcome.conid}"


def _prompt_section(outcome: OrderOutcome) -> list[str]:
    """The refused question: which one, IBKR's text (once, its line breaks kept) and how to allow it."""
    refused = outcome.refused_prompt
    assert refused is not None
    ids = ", ".join(f'"{mid}"' for mid in refused.message_ids)
    entries = ", ".join(f'"{mid}": {{"allow": true}}' for mid in refused.message_ids)
    lines = [
        f"Order `{outcome.coid}` ({_order_label(outcome)}) was **not placed**: IBKR asked {refused.reason}, "
        "and the question was answered no.",
        "",
        "IBKR's text:",
        "",
    ]
    lines += [f"> {line.strip()}" if line.strip() else ">" for line in refused.text.splitlines()]
    lines += [
        "",
        "## To allow it",
        "",
        "Read the question first: the prompt policy leaves it to a person on purpose.",
        "",
        f"- For one run: run again with `allow_prompts=[{ids}]` (a list parameter of the flow; in the CLI "
        f"`--param allow_prompts='[{ids}]'`).",
        f"- In every run: set `{entries}` in a copy of `ibkr_tasks/data/prompt_policy.json` and pass that "
        "file's path as `prompt_policy`.",
        "",
    ]
    return lines


def failure_markdown(report: ExecutionReport) -> str:
    """The ``rebalance-failure-<account>`` artifact: why the run stopped and what it cancelled."""
    acct = report.account_id
    refused = next((o for o in report.orders if o.refused_prompt is not None), None)
    if refused is not None:
        title = f"# Rebalance {acct} stopped: IBKR asked a question the prompt policy does not allow"
    elif report.error:
        title = f"# Rebalance {acct} stopped"
    else:
        title = f"# Rebalance {acct}"
    lines = [title, "", f"Run `{report.run_id}`.", ""]
    if refused is not None:
        lines += _prompt_section(refused)
    elif report.error:
        lines += ["## Error", "", "```text", report.error, "```", ""]
    if report.timed_out:
        lines += ["Some orders were not filled within the fill timeout.", ""]
    lines += [f"Cancel requested for this run's working orders: {', '.join(report.cancelled) or 'none'}."]
    lines += [f"- {e}" for e in report.cancel_errors]
    return "\n".join(lines)

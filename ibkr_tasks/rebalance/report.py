"""What a rebalance run shows a person: its artifacts, its final message and its events.

The builders are plain functions (tested without Prefect); ``publish_*`` and :func:`emit_events` send
them to Prefect. Artifact keys: ``rebalance-plan-<account>``, ``rebalance-orders-<account>``,
``rebalance-result-<account>``, ``rebalance-failure-<account>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ibkr_tasks.formatting import money, number
from ibkr_tasks.rebalance.execute import ExecutionReport, OrderOutcome
from ibkr_tasks.rebalance.plan import RebalancePlan
from ibkr_tasks.reporting import account_resource, artifact_key

__all__ = [
    "EVENT_COMPLETED",
    "EVENT_FAILED",
    "EVENT_ORDER_FILLED",
    "RebalanceEvent",
    "RunResult",
    "emit_events",
    "execution_message",
    "failure_markdown",
    "plan_lines",
    "publish_plan",
    "publish_report",
    "run_events",
]

EVENT_COMPLETED = "ibkr.rebalance.completed"
EVENT_FAILED = "ibkr.rebalance.failed"
EVENT_ORDER_FILLED = "ibkr.rebalance.order.filled"


# ------------------------------------------------------------------------------------------ plan


def plan_table(plan: RebalancePlan) -> list[dict[str, Any]]:
    """The plan artifact's rows (conid, symbol, action, cOID, quantities, order terms, notional)."""
    return plan.table() or [{"conid": "", "symbol": "", "action": "nothing to do"}]


def plan_description(plan: RebalancePlan, dry_run: bool) -> str:
    return (
        f"{'Dry run' if dry_run else 'Rebalance'} plan of {plan.account_id} at "
        f"{plan.as_of:%Y-%m-%d %H:%M} UTC: {plan.describe()}"
    )


def plan_lines(plan: RebalancePlan) -> list[str]:
    """The plan as log lines: one per row (``265598 AAPL: 100 -> 305 (buy 205)``)."""
    return [
        f"{row.conid} {row.symbol}: {number(row.current)} -> {number(row.target, missing='not a target')} "
        f"({row.action})"
        for row in plan.rows
    ]


async def publish_plan(plan: RebalancePlan, dry_run: bool) -> None:
    """The ``rebalance-plan-<account>`` table artifact."""
    from prefect.artifacts import acreate_table_artifact

    await acreate_table_artifact(
        table=plan_table(plan),
        key=artifact_key("rebalance-plan", plan.account_id),
        description=plan_description(plan, dry_run),
    )


# ------------------------------------------------------------------------------------------ execution


def execution_message(report: ExecutionReport, fill_timeout: float) -> str:
    """The final message of an executed run: orders placed, fills booked, targets missed, what
    filled at which average price, and what is still missing."""
    acct = report.account_id
    off = [a for a in report.achieved if a.off_by is not None and abs(a.off_by) >= 1]
    message = (
        f"{len(report.placed)} order(s) placed for {acct}, {report.fills_new} new fill(s) in the ledger; "
        f"{len(off)} target(s) off by one unit or more"
    )
    filled = [o for o in report.placed if o.filled]
    if filled:
        message += "; filled: " + ", ".join(
            f"{o.side.lower()} {number(o.filled)} {o.symbol or o.conid}"
            + (f" at {money(o.avg_price, o.currency)}" if o.avg_price is not None else "")
            for o in filled[:5]
        )
        message += f" and {len(filled) - 5} more" if len(filled) > 5 else ""
    if report.fills_missing:
        message += (
            f"; fills of {len(report.fills_missing)} order(s) not yet in IBKR's trades "
            "(the next reconciliation books them)"
        )
    if report.timed_out:
        message += f"; not all orders filled within {fill_timeout:g} s (cancel requested for {len(report.cancelled)})"
    return message


def needs_failure_report(report: ExecutionReport) -> bool:
    return bool(report.error or report.cancelled or report.cancel_errors or report.timed_out)


async def publish_report(report: ExecutionReport) -> None:
    """Orders with their outcome, targets vs achieved, and why the run stopped (when it did)."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    acct = report.account_id
    await acreate_table_artifact(
        table=[o.as_dict() for o in report.orders] or [{"cOID": "", "status": "no orders"}],
        key=artifact_key("rebalance-orders", acct),
        description=f"Orders of rebalance run {report.run_id} for {acct}",
    )
    if report.achieved:
        await acreate_table_artifact(
            table=[a.as_dict() for a in report.achieved],
            key=artifact_key("rebalance-result", acct),
            description=f"Targets vs achieved after rebalance run {report.run_id} for {acct}",
        )
    if needs_failure_report(report):
        await acreate_markdown_artifact(
            markdown=failure_markdown(report),
            key=artifact_key("rebalance-failure", acct),
            description=f"What rebalance run {report.run_id} did after a failure",
        )


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


# ------------------------------------------------------------------------------------------ events


@dataclass
class RunResult:
    """How a rebalance run of a valid account ended: what the run's events are built from."""

    account_id: str
    run_id: str
    dry_run: bool
    failed: bool
    message: str
    plan: RebalancePlan | None = None
    report: ExecutionReport | None = None
    data: dict[str, Any] | None = None  # the flow run's result (plan, orders, execution)

    @property
    def mode(self) -> str:
        return "dry-run" if self.dry_run else "execute"

    def end(self, message: str, data: dict[str, Any] | None = None, *, failed: bool = True) -> RunResult:
        """Set how the run ended; returns itself."""
        self.message, self.data, self.failed = message, data, failed
        return self

    def plan_data(self) -> dict[str, Any]:
        """The flow run's result once there is a plan: run, account, mode, plan rows, orders, warnings."""
        assert self.plan is not None
        return {
            "run_id": self.run_id,
            "account_id": self.account_id,
            "dry_run": self.dry_run,
            "plan": self.plan.table(),
            "orders": [o.as_dict() for o in self.plan.orders],
            "warnings": list(self.plan.warnings),
        }

    def counts(self) -> dict[str, int]:
        """Orders planned, placed (IBKR has them), filled (some quantity traded), failed (refused,
        unknown or in error) and not sent (after the run stopped)."""
        orders = self.report.orders if self.report is not None else []  # one per planned order
        planned = len(orders) if self.report is not None else len(self.plan.orders) if self.plan else 0
        return {
            "orders_planned": planned,
            "orders_placed": sum(1 for o in orders if o.order_id is not None),
            "orders_filled": sum(1 for o in orders if o.filled),
            "orders_failed": sum(1 for o in orders if o.error is not None and o.order_id is None),
            "orders_not_sent": sum(1 for o in orders if o.status == "not sent"),
        }

    def summary(self) -> str:
        """``DU1234567 execute: 2 order(s) placed, 2 filled, 0 failed``: one line a person reads."""
        c = self.counts()
        if self.dry_run:
            counts = f"{c['orders_planned']} order(s) planned, nothing sent"
        else:
            counts = (
                f"{c['orders_placed']} of {c['orders_planned']} order(s) placed, {c['orders_filled']} filled, "
                f"{c['orders_failed']} failed"
            )
        head = f"rebalance {self.account_id} {self.mode} {'failed' if self.failed else 'completed'}"
        return f"{head}: {counts}" + (f"; {self.message}" if self.failed else "")


@dataclass(frozen=True)
class RebalanceEvent:
    """One event to emit: its name, the account as resource, a readable summary as related resource."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    related: list[dict[str, str]] = field(default_factory=list)


_SUMMARY_CHARS = 500  # a resource id is shown in full in the UI: keep the summary a paragraph


def _summary_resource(account_id: str, summary: str) -> dict[str, str]:
    """A related resource whose id IS the readable summary: Prefect's UI shows an event's related
    resources in its Details tab (by id, for an unknown role), never the payload."""
    text = summary if len(summary) <= _SUMMARY_CHARS else summary[: _SUMMARY_CHARS - 1] + "\u2026"
    return {
        "prefect.resource.id": f"ibkr.summary: {text}",
        "prefect.resource.role": "summary",
        "prefect.resource.name": account_id,
    }


def _filled_payload(result: RunResult, outcome: OrderOutcome) -> dict[str, Any]:
    assert outcome.filled is not None
    price = f" at {money(outcome.avg_price, outcome.currency)}" if outcome.avg_price is not None else ""
    summary = (
        f"{result.account_id}: {outcome.side.lower()} {number(outcome.filled)} "
        f"{outcome.symbol or outcome.conid}{price} (cOID {outcome.coid})"
    )
    return {
        "summary": summary,
        "account_id": result.account_id,
        "run_id": result.run_id,
        "mode": result.mode,
        "conid": outcome.conid,
        "symbol": outcome.symbol,
        "side": outcome.side,
        "quantity": str(outcome.filled),
        "ordered_quantity": str(outcome.quantity),
        "avg_price": None if outcome.avg_price is None else str(outcome.avg_price),
        "currency": outcome.currency,
        "coid": outcome.coid,
        "order_id": outcome.order_id,
        "status": outcome.status,
    }


def run_events(result: RunResult) -> list[RebalanceEvent]:
    """``ibkr.rebalance.order.filled`` for every order that traded, then ``ibkr.rebalance.completed``
    or ``ibkr.rebalance.failed``; each names the account as its resource (automations match
    ``ibkr.account.*``) and carries a readable ``summary`` (decimals as strings)."""
    resource = account_resource(result.account_id)
    events: list[RebalanceEvent] = []
    for outcome in result.report.orders if result.report is not None else []:
        if outcome.filled:
            payload = _filled_payload(result, outcome)
            related = [_summary_resource(result.account_id, payload["summary"])]
            events.append(RebalanceEvent(EVENT_ORDER_FILLED, resource, payload, related))
    summary = result.summary()
    payload = {
        "summary": summary,
        "account_id": result.account_id,
        "run_id": result.run_id,
        "mode": result.mode,
        **result.counts(),
        "message": result.message,
    }
    if result.report is not None:
        payload |= {
            "fills_new": result.report.fills_new,
            "timed_out": result.report.timed_out,
            "cancelled": list(result.report.cancelled),
            "error": result.report.error,
        }
    name = EVENT_FAILED if result.failed else EVENT_COMPLETED
    events.append(RebalanceEvent(name, resource, payload, [_summary_resource(result.account_id, summary)]))
    return events


def emit_events(result: RunResult) -> None:
    """Send the run's events to Prefect (nothing happens outside a Prefect API context)."""
    from prefect.events import emit_event

    for e in run_events(result):
        emit_event(e.event, resource=e.resource, related=e.related, payload=e.payload)

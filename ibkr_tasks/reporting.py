"""What a reconciliation run reports: per-account outcomes, the summary table, break reports, events.

The builders are plain functions (tested without Prefect); ``publish_*`` send them to Prefect as
artifacts and events. Artifact keys follow Prefect's rule: lowercase letters, digits and dashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

SUMMARY_KEY = "ibkr-reconciliation"
PROGRESS_KEY = "ibkr-reconciliation-progress"
EVENT_BREAK = "ibkr.reconciliation.break"
EVENT_COMPLETED = "ibkr.reconciliation.completed"


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key from free text (``DUO873728`` -> ``duo873728``)."""
    text = "-".join(parts).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")


def account_resource(account_id: str) -> dict[str, str]:
    """The event resource naming an IBKR account (automations match ``ibkr.account.*``)."""
    return {
        "prefect.resource.id": f"ibkr.account.{account_id}",
        "prefect.resource.name": account_id,
        "prefect.resource.role": "ibkr-account",
    }


@dataclass
class PositionBreak:
    conid: int
    symbol: str | None
    expected: Decimal
    actual: Decimal

    @property
    def delta(self) -> Decimal:
        return self.actual - self.expected


@dataclass
class CommissionBreak:
    execution_id: str
    old: Decimal | None
    new: Decimal | None
    currency: str | None

    @property
    def delta(self) -> Decimal | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old


@dataclass
class AccountOutcome:
    """What happened to one account in one run."""

    account_id: str
    status: str = "pending"  # completed | breaks | failed
    fills_seen: int = 0
    fills_new: int = 0
    fills_updated: int = 0
    fills_superseded: int = 0
    commissions_finalised: int = 0
    commissions_changed: int = 0
    commissions_pending: int = 0
    quarantined: int = 0
    positions: int = 0
    position_breaks: list[PositionBreak] = field(default_factory=list)
    commission_breaks: list[CommissionBreak] = field(default_factory=list)
    error: str | None = None

    @property
    def breaks(self) -> int:
        return len(self.position_breaks) + len(self.commission_breaks)

    def counts(self) -> dict[str, int]:
        return {
            "fills_new": self.fills_new,
            "fills_updated": self.fills_updated,
            "fills_superseded": self.fills_superseded,
            "commissions_finalised": self.commissions_finalised,
            "commissions_changed": self.commissions_changed,
            "quarantined": self.quarantined,
            "breaks": self.breaks,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "status": self.status,
            "fills_seen": self.fills_seen,
            **self.counts(),
            "commissions_pending": self.commissions_pending,
            "positions": self.positions,
            "error": self.error,
        }


def summary_table(outcomes: list[AccountOutcome]) -> list[dict[str, Any]]:
    """One row per account for the run's table artifact."""
    return [
        {
            "account": o.account_id,
            "status": o.status,
            "fills new": o.fills_new,
            "fills updated": o.fills_updated,
            "fills superseded": o.fills_superseded,
            "commissions finalised": o.commissions_finalised,
            "commissions changed": o.commissions_changed,
            "commissions pending": o.commissions_pending,
            "quarantined": o.quarantined,
            "breaks": o.breaks,
            "error": o.error or "",
        }
        for o in outcomes
    ]


def _fmt(value: Decimal | None) -> str:
    if value is None:
        return "pending"
    text = format(value.normalize(), "f")
    return text


def break_report(outcome: AccountOutcome, run_id: str) -> str:
    """The markdown report of one account: its position breaks and commission changes."""
    lines = [
        f"# Reconciliation {outcome.account_id}",
        "",
        f"Run `{run_id}` - status **{outcome.status}**",
        "",
    ]
    if outcome.error:
        lines += ["## Error", "", f"```\n{outcome.error}\n```", ""]
    lines += [
        f"Fills: {outcome.fills_new} new, {outcome.fills_updated} updated, {outcome.fills_superseded} superseded; "
        f"commissions: {outcome.commissions_finalised} finalised, {outcome.commissions_changed} changed, "
        f"{outcome.commissions_pending} pending; quarantined rows: {outcome.quarantined}.",
        "",
    ]
    if outcome.position_breaks:
        lines += [
            "## Position breaks",
            "",
            "| conid | symbol | ledger (expected) | broker (actual) | delta |",
            "|---:|---|---:|---:|---:|",
        ]
        lines += [
            f"| {b.conid} | {b.symbol or ''} | {_fmt(b.expected)} | {_fmt(b.actual)} | {_fmt(b.delta)} |"
            for b in outcome.position_breaks
        ]
        lines.append("")
    if outcome.commission_breaks:
        lines += [
            "## Commission changes",
            "",
            "| execution | before | after | delta | currency |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {c.execution_id} | {_fmt(c.old)} | {_fmt(c.new)} | {_fmt(c.delta)} | {c.currency or ''} |"
            for c in outcome.commission_breaks
        ]
        lines.append("")
    if not outcome.position_breaks and not outcome.commission_breaks and not outcome.error:
        lines.append("No breaks: the ledger agrees with IBKR.")
    return "\n".join(lines)


def event_payload(outcome: AccountOutcome, run_id: str) -> dict[str, Any]:
    """Event payload: counts and the breaks, as JSON-safe values (decimals as strings)."""
    return {
        "run_id": run_id,
        **outcome.as_dict(),
        "position_breaks": [
            {
                "conid": b.conid,
                "symbol": b.symbol,
                "expected": str(b.expected),
                "actual": str(b.actual),
                "delta": str(b.delta),
            }
            for b in outcome.position_breaks
        ],
        "commission_breaks": [
            {
                "execution_id": c.execution_id,
                "old": None if c.old is None else str(c.old),
                "new": None if c.new is None else str(c.new),
                "currency": c.currency,
            }
            for c in outcome.commission_breaks
        ],
    }


async def publish_account(outcome: AccountOutcome, run_id: str) -> None:
    """The break report artifact and the events of one account."""
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.events import emit_event

    await acreate_markdown_artifact(
        markdown=break_report(outcome, run_id),
        key=artifact_key("ibkr-breaks", outcome.account_id),
        description=f"Reconciliation breaks of {outcome.account_id}",
    )
    payload = event_payload(outcome, run_id)
    if outcome.breaks:
        emit_event(EVENT_BREAK, resource=account_resource(outcome.account_id), payload=payload)
    emit_event(EVENT_COMPLETED, resource=account_resource(outcome.account_id), payload=payload)


async def publish_summary(outcomes: list[AccountOutcome], run_id: str) -> None:
    from prefect.artifacts import acreate_table_artifact

    await acreate_table_artifact(
        table=summary_table(outcomes),
        key=SUMMARY_KEY,
        description=f"IBKR nightly reconciliation {run_id}: one row per account",
    )


# --------------------------------------------------------------------------- statements (Flex)
STATEMENT_SUMMARY_KEY = "ibkr-statement-reconciliation"
EVENT_STATEMENT_BREAK = "ibkr.statement.break"
EVENT_STATEMENT_COMPLETED = "ibkr.statement.completed"


def statement_summary_table(results: list[Any]) -> list[dict[str, Any]]:
    """One row per account of a statement run (``StatementBookResult`` objects)."""
    return [
        {
            "account": r.account_id,
            "period": _period(r),
            "fills confirmed": r.fills_confirmed,
            "fills added": r.fills_added,
            "fills cancelled": r.fills_cancelled,
            "commissions finalised": r.commissions_finalised,
            "commissions changed": r.commissions_changed,
            "cash transactions": r.cash_transactions,
            "positions compared": r.positions_compared,
            "quarantined": r.quarantined,
            "breaks": r.breaks,
        }
        for r in results
    ]


def _period(result: Any) -> str:
    if result.from_date is None:
        return ""
    if result.to_date is None or result.to_date == result.from_date:
        return result.from_date.isoformat()
    return f"{result.from_date.isoformat()}..{result.to_date.isoformat()}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return _fmt(value)
    return str(value).replace("|", "\\|")


def statement_break_report(result: Any, run_id: str) -> str:
    """The markdown report of one account's statement booking: its breaks and the fills only the
    statement showed."""
    lines = [
        f"# Statement reconciliation {result.account_id}",
        "",
        f"Run `{run_id}`, statement period {_period(result) or 'as the query sets it'}.",
        "",
        f"Fills: {result.fills_confirmed} confirmed, {result.fills_added} added from the statement, "
        f"{result.fills_cancelled} cancelled; commissions: {result.commissions_finalised} finalised, "
        f"{result.commissions_changed} changed; cash transactions: {result.cash_transactions} booked; "
        f"positions compared: {result.positions_compared}; quarantined rows: {result.quarantined}.",
        "",
    ]
    if result.break_list:
        lines += [
            f"## Breaks ({result.breaks})",
            "",
            "| kind | subject | ledger (expected) | statement (actual) | delta | currency |",
            "|---|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {b.kind} | {_cell(b.subject)} | {_cell(b.expected)} | {_cell(b.actual)} | {_cell(b.delta)} "
            f"| {_cell(b.currency)} |"
            for b in result.break_list
        ]
        if result.breaks > len(result.break_list):
            lines.append(f"\n... and {result.breaks - len(result.break_list)} more (see the `breaks` table)")
        lines.append("")
    if result.added:
        lines += ["## Fills only the statement showed", ""]
        lines += [f"- `{key}`" for key in result.added]
        if result.fills_added > len(result.added):
            lines.append(f"- ... and {result.fills_added - len(result.added)} more")
        lines.append("")
    if not result.breaks:
        lines.append("No breaks: the ledger agrees with IBKR's statement.")
    return "\n".join(lines)


def statement_event_payload(result: Any, run_id: str) -> dict[str, Any]:
    """Event payload of one account's statement booking (decimals as strings)."""
    return {
        "run_id": run_id,
        "account_id": result.account_id,
        "from_date": None if result.from_date is None else result.from_date.isoformat(),
        "to_date": None if result.to_date is None else result.to_date.isoformat(),
        **result.counts(),
        "break_list": [
            {
                "kind": b.kind,
                "subject": b.subject,
                "conid": b.conid,
                "execution_id": b.execution_id,
                "expected": None if b.expected is None else str(b.expected),
                "actual": None if b.actual is None else str(b.actual),
                "currency": b.currency,
            }
            for b in result.break_list[:50]
        ],
    }


async def publish_statement(results: list[Any], run_id: str) -> None:
    """The summary table, one break report per account, and ``ibkr.statement.break`` for every
    account with breaks (``ibkr.statement.completed`` for every account)."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
    from prefect.events import emit_event

    await acreate_table_artifact(
        table=statement_summary_table(results),
        key=STATEMENT_SUMMARY_KEY,
        description=f"IBKR statement reconciliation {run_id}: one row per account",
    )
    for result in results:
        await acreate_markdown_artifact(
            markdown=statement_break_report(result, run_id),
            key=artifact_key("ibkr-statement-breaks", result.account_id),
            description=f"Statement breaks of {result.account_id}",
        )
        payload = statement_event_payload(result, run_id)
        if result.breaks:
            emit_event(EVENT_STATEMENT_BREAK, resource=account_resource(result.account_id), payload=payload)
        emit_event(EVENT_STATEMENT_COMPLETED, resource=account_resource(result.account_id), payload=payload)

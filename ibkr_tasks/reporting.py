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

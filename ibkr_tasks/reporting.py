"""What a reconciliation run reports: per-account outcomes, the summary table, break reports, events.

The builders are plain functions (tested without Prefect); ``publish_*`` send them to Prefect as
artifacts and events. Artifact keys follow Prefect's rule: lowercase letters, digits and dashes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ibkr_tasks.formatting import exact, fmt
from ibkr_tasks.models.runs import CommissionBreak, PositionBreak, RunCounts
from ibkr_tasks.models.statuses import OutcomeStatus

__all__ = [
    "AccountOutcome",
    "CommissionBreak",
    "Gap",
    "PositionBreak",
    "ProgressUpdates",
    "Window",
    "break_report",
    "event_payload",
    "summary_table",
    "summary_text",
    "trading_date",
]

SUMMARY_KEY = "ibkr-reconciliation"
BREAKS_TAG = "breaks"  # added to a nightly run with breaks: the run list shows tags, not messages
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


NEW_YORK = ZoneInfo("America/New_York")
_SESSION_OPEN = time(9, 30)


def trading_date(moment: datetime) -> date:
    """The US trading date a reconciliation at ``moment`` covers: that day in New York once its
    session opened (09:30), the day before otherwise; weekends fall back to the Friday.
    Exchange holidays are not known here: a run on one names that weekday."""
    local = moment.astimezone(NEW_YORK)
    day = local.date() if local.time() >= _SESSION_OPEN else local.date() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


@dataclass(frozen=True)
class Window:
    """What one nightly run reconciles: a trading date and how many days of executions it fetched."""

    trading_date: date
    days: int = 1

    @classmethod
    def at(cls, moment: datetime, days: int = 1) -> Window:
        return cls(trading_date=trading_date(moment), days=days)

    @property
    def run_name(self) -> str:
        """The flow run's name: ``reconcile-2026-11-30`` (``-last-3-days`` with a wider window)."""
        tail = "" if self.days == 1 else f"-last-{self.days}-days"
        return f"reconcile-{self.trading_date.isoformat()}{tail}"

    def describe(self) -> str:
        return f"trading date {self.trading_date.isoformat()}, executions of the last {_days(self.days)}"

    @property
    def first_day(self) -> date:
        """The earliest date the executions window reaches (``days`` calendar days, this one included)."""
        return self.trading_date - timedelta(days=self.days - 1)


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


@dataclass(kw_only=True)
class AccountOutcome(RunCounts):
    """What happened to one account in one run: its run counts, and what a report shows besides."""

    account_id: str
    status: OutcomeStatus | str = OutcomeStatus.PENDING
    fills_seen: int = 0
    commissions_pending: int = 0
    positions: int = 0
    position_breaks: list[PositionBreak] = field(default_factory=list)
    commission_breaks: list[CommissionBreak] = field(default_factory=list)
    error: str | None = None
    resolved: int = 0  # earlier open breaks this run found settled
    as_of: datetime | None = None  # when the broker's positions were taken
    last_success: datetime | None = None  # the account's last successful run before this one

    @property
    def breaks(self) -> int:
        return len(self.position_breaks) + len(self.commission_breaks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "status": str(self.status),
            "fills_seen": self.fills_seen,
            **self.counts(),
            "commissions_pending": self.commissions_pending,
            "positions": self.positions,
            "resolved": self.resolved,
            "error": self.error,
        }

    def instruments(self) -> list[str]:
        """What broke, as a person names it: ``AAPL (265598)``, ``commission 0000e0d5...``."""
        return [b.label() for b in self.position_breaks] + [
            f"commission {c.execution_id}" for c in self.commission_breaks
        ]

    def break_values(self) -> dict[str, Decimal]:
        """What the position differences are worth, per currency (breaks without a price left out)."""
        totals: dict[str, Decimal] = {}
        for b in self.position_breaks:
            if b.value is not None:
                key = b.currency or ""
                totals[key] = totals.get(key, Decimal(0)) + b.value
        return totals

    def headline(self) -> str:
        """``3 breaks in DU123 (2 positions worth +1,234.00 USD, 1 commission change)``."""
        if self.status == OutcomeStatus.FAILED:
            return f"{self.account_id} failed: {self.error}"
        if not self.breaks:
            return f"{self.account_id}: no breaks"
        return self.breaks_text(f" in {self.account_id}")

    def breaks_text(self, where: str = "") -> str:
        """``3 breaks (2 positions worth +1,234.00 USD, 1 commission change)``."""
        parts = []
        if self.position_breaks:
            worth = ", ".join(
                fmt(v, c or None, money=True, sign=True) for c, v in sorted(self.break_values().items())
            )
            parts.append(
                _plural(len(self.position_breaks), "position") + (f" worth {worth}" if worth else "")
            )
        if self.commission_breaks:
            parts.append(_plural(len(self.commission_breaks), "commission change"))
        return f"{_plural(self.breaks, 'break')}{where} ({', '.join(parts)})"

    def gap(self, window: Window) -> Gap | None:
        """The trading days since the last successful run that this run's window does not cover."""
        if self.last_success is None:
            return None
        last = trading_date(self.last_success)
        missed = []
        day = last + timedelta(days=1)
        while day < window.first_day:
            if day.weekday() < 5:
                missed.append(day)
            day += timedelta(days=1)
        if not missed:
            return None
        return Gap(last_success=self.last_success, missed=missed, window=window)


@dataclass(frozen=True)
class Gap:
    """Trading days no successful run fetched executions for (a missed night)."""

    last_success: datetime
    missed: list[date]
    window: Window

    @property
    def days_needed(self) -> int:
        """The ``days`` a run on this trading date needs to cover the first missed day."""
        return (self.window.trading_date - self.missed[0]).days + 1

    def advice(self, account_id: str) -> str:
        missed = ", ".join(d.isoformat() for d in self.missed)
        text = (
            f"The last successful reconciliation of {account_id} ran {_when(self.last_success)} "
            f"(trading date {trading_date(self.last_success).isoformat()}); this run fetched executions of "
            f"the last {_days(self.window.days)} only, so fills of {missed} were never fetched (a missed "
            "night). "
        )
        if self.days_needed <= MAX_DAYS:
            return text + (
                f"Run nightly-reconciliation once with `days={self.days_needed}` (IBKR keeps {MAX_DAYS} days of "
                "executions); the fills come in and the breaks resolve."
            )
        return text + (
            f"That is more than IBKR's {MAX_DAYS} days of executions: load the missing days from a Flex "
            f"statement, then run nightly-reconciliation with `days={MAX_DAYS}`."
        )


MAX_DAYS = 7


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "unknown"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def summary_table(outcomes: list[AccountOutcome]) -> list[dict[str, Any]]:
    """One row per account for the run's table artifact: what needs a look first, then the counts."""
    return [
        {
            "account": o.account_id,
            "status": str(o.status),
            "breaks": o.breaks,
            "error": o.error or "",
            "resolved": o.resolved,
            **o.labelled(),
            "commissions pending": o.commissions_pending,
        }
        for o in outcomes
    ]


def break_report(outcome: AccountOutcome, run_id: str, window: Window | None = None) -> str:
    """The markdown report of one account: how many breaks, as of when, what they are worth, the
    likely cause, then each position break and commission change."""
    o = outcome
    lines = [f"# Reconciliation {o.account_id}: {o.breaks_text() if o.breaks else o.status}", ""]
    context = [window.describe()] if window else []
    context += [f"positions as of {_when(o.as_of)}", f"status **{o.status}**", f"run `{run_id}`"]
    lines += [" · ".join(context), ""]
    if o.error:
        lines += ["## Error", "", f"```\n{o.error}\n```", ""]
    if o.breaks:
        values = o.break_values()
        unpriced = [b for b in o.position_breaks if b.value is None]
        if values:
            worth = "; ".join(fmt(v, c or None, money=True, sign=True) for c, v in sorted(values.items()))
            lines += [f"The position differences are worth {worth} at the broker's mark price.", ""]
        if unpriced:
            lines += [
                f"No price for {', '.join(b.label() for b in unpriced)}: the broker no longer lists "
                "the position, so its value is unknown.",
                "",
            ]
    if o.resolved:
        lines += [f"{_plural(o.resolved, 'break')} resolved since the last run (no longer different).", ""]
    gap = o.gap(window) if window else None
    if gap is not None:
        lines += ["## Likely cause" if o.breaks else "## Missed night", "", gap.advice(o.account_id), ""]
    lines += [f"Counts: {o.describe()}; {o.commissions_pending} commissions pending.", ""]
    if o.position_breaks:
        lines += [
            "## Position breaks",
            "",
            "| instrument | ledger (expected) | broker (actual) | difference | mark price | value | currency |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {b.label()} | {fmt(b.expected)} | {fmt(b.actual)} | {fmt(b.delta, sign=True)} | "
            f"{fmt(b.price, money=True)} | {fmt(b.value, money=True, sign=True)} | {b.currency or ''} |"
            for b in o.position_breaks
        ]
        lines.append("")
    if o.commission_breaks:
        lines += [
            "## Commission changes",
            "",
            "| execution | before | after | difference | currency |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {c.execution_id} | {fmt(c.expected, money=True, missing='pending')} | "
            f"{fmt(c.actual, money=True, missing='pending')} | {fmt(c.delta, money=True, sign=True, missing='')} | "
            f"{c.currency or ''} |"
            for c in o.commission_breaks
        ]
        lines.append("")
    if not o.breaks and not o.error:
        lines.append("No breaks: the ledger agrees with IBKR.")
    return "\n".join(lines)


def summary_text(outcome: AccountOutcome) -> str:
    """One line a person reads in the UI: account, breaks, resolved, counts."""
    o = outcome
    failed = o.status == OutcomeStatus.FAILED
    head = o.headline() if (o.breaks or failed) else f"{o.account_id}: {o.status}, no breaks"
    return f"{head}; {o.resolved} resolved; {o.describe()}"


def event_payload(outcome: AccountOutcome, run_id: str, window: Window | None = None) -> dict[str, Any]:
    """Event payload: a readable ``summary`` first, then counts and the breaks as JSON-safe values
    (decimals as strings)."""
    return {
        "summary": summary_text(outcome),
        "run_id": run_id,
        **({"trading_date": window.trading_date.isoformat(), "days": window.days} if window else {}),
        **outcome.as_dict(),
        "position_breaks": [
            {
                "conid": b.conid,
                "symbol": b.symbol,
                "expected": exact(b.expected),
                "actual": exact(b.actual),
                "delta": exact(b.delta),
                "price": exact(b.price),
                "value": exact(b.value),
                "currency": b.currency,
            }
            for b in outcome.position_breaks
        ],
        "commission_breaks": [
            {
                "execution_id": c.execution_id,
                "old": exact(c.expected),
                "new": exact(c.actual),
                "currency": c.currency,
            }
            for c in outcome.commission_breaks
        ],
    }


def summary_resource(outcome: AccountOutcome) -> dict[str, str]:
    """A related resource whose id IS the readable summary.

    Prefect's UI shows an event's resource and related resources in its Details tab, never the
    payload (that is under Raw); a resource of an unknown role is shown by its id, in full.
    Automations should match ``ibkr.account.*`` and read the payload, not this id.
    """
    return {
        "prefect.resource.id": f"ibkr.summary: {summary_text(outcome)}",
        "prefect.resource.role": "summary",
        "prefect.resource.name": outcome.account_id,
    }


async def publish_account(outcome: AccountOutcome, run_id: str, window: Window | None = None) -> None:
    """The break report artifact and the events of one account."""
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.events import emit_event

    when = f" ({window.describe()})" if window else ""
    await acreate_markdown_artifact(
        markdown=break_report(outcome, run_id, window),
        key=artifact_key("ibkr-breaks", outcome.account_id),
        description=f"{outcome.headline()}{when}",
    )
    payload = event_payload(outcome, run_id, window)
    resource = account_resource(outcome.account_id)
    related = [summary_resource(outcome)]
    if outcome.breaks:
        emit_event(EVENT_BREAK, resource=resource, related=related, payload=payload)
    emit_event(EVENT_COMPLETED, resource=resource, related=related, payload=payload)


ProgressUpdate = Callable[..., Awaitable[Any]]


class ProgressUpdates:
    """The run's progress artifact, advanced by accounts finishing at any moment.

    :meth:`advance` never waits: one update is in flight at a time and each writes the newest count, so
    updates never land out of order (concurrent ones could leave 33 %) and accounts finishing together
    at the end of a night cost one or two calls, not one each behind a lock. :meth:`flush` waits for the
    last one. An update that fails is logged, never raised: it is reporting, the books are done.
    """

    def __init__(self, artifact_id: Any, total: int, update: ProgressUpdate | None = None) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self._update = update
        self.done = 0
        self.written = 0
        self.calls = 0
        self._writing: asyncio.Future[None] | None = None

    def advance(self) -> None:
        """One more account done."""
        self.done += 1
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        update = self._update
        if update is None:
            from prefect.artifacts import aupdate_progress_artifact

            update = aupdate_progress_artifact
        while self.written < self.done:
            target = self.done
            self.calls += 1
            try:
                await update(self.artifact_id, progress=100.0 * target / self.total)
            except Exception as exc:
                logging.getLogger("ibkr_tasks").warning(
                    "could not update the progress artifact (%s: %s)", type(exc).__name__, exc
                )
            self.written = target

    async def flush(self) -> None:
        """Until the newest count is written."""
        if self._writing is not None:
            await asyncio.shield(self._writing)


async def publish_summary(outcomes: list[AccountOutcome], run_id: str, window: Window | None = None) -> None:
    from prefect.artifacts import acreate_table_artifact

    what = window.describe() if window else f"run {run_id}"
    await acreate_table_artifact(
        table=summary_table(outcomes),
        key=SUMMARY_KEY,
        description=f"IBKR nightly reconciliation, {what}: one row per account",
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
        return fmt(value)
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
                "expected": exact(b.expected),
                "actual": exact(b.actual),
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

"""Tasks of the statement reconciliation: fetch an IBKR Flex statement, book it into the ledger.

The Flex token is a secret: it stays inside :class:`~ibkr_tasks.client.settings.FlexSettings`
(``SecretStr``), is never a task parameter Prefect records in clear, and never logged.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from ibkr_tasks.blocks import aload_credentials
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.client.settings import FlexSettings, TaskSettings
from ibkr_tasks.flex.service import MAX_RANGE_DAYS, FlexPolling, FlexWebService
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.flex import StatementBookResult

__all__ = ["aresolve_flex_settings", "book_statement_file", "date_chunks", "fetch_statement"]


async def aresolve_flex_settings(credentials: str | None = None) -> FlexSettings:
    """Flex settings from the saved ``IBKRCredentials`` block ``credentials`` (its ``flex_*``
    fields), else from the ``IBKR_FLEX_*`` environment."""
    if credentials:
        return (await aload_credentials(credentials)).to_flex_settings()
    return FlexSettings()


def date_chunks(from_date: date, to_date: date, days: int = MAX_RANGE_DAYS) -> list[tuple[date, date]]:
    """``[from_date, to_date]`` split into consecutive ranges of at most ``days`` days (oldest first):
    the Flex Web Service serves at most 365 days per request."""
    if to_date < from_date:
        raise ValueError(f"to_date {to_date} is before from_date {from_date}")
    chunks = []
    start = from_date
    while start <= to_date:
        end = min(start + timedelta(days=days - 1), to_date)
        chunks.append((start, end))
        start = end + timedelta(days=1)
    return chunks


def flex_retry_delay(retries: int) -> list[float]:
    """Prefect's ``retry_delay_seconds`` of :func:`fetch_statement`: ``IBKR_TASK_FLEX_RETRY_DELAY``
    (30 s by default), read when the task is defined."""
    return [TaskSettings().flex_retry_delay]


@task(name="fetch-statement", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=flex_retry_delay)
async def fetch_statement(
    settings: FlexSettings,
    to: Path,
    from_date: date | None = None,
    to_date: date | None = None,
    query_id: str | None = None,
    polling: FlexPolling | None = None,
) -> Path:
    """SendRequest + GetStatement (polled) of the Activity Flex Query, written to ``to``.

    Without dates the query's own period is used (a daily query: the last business day).
    """
    install_log_redaction()  # httpx logs each URL, and the Flex token travels in the query
    async with FlexWebService(settings, polling=polling) as flex:
        await flex.fetch(query_id, from_date=from_date, to_date=to_date, to=to)
    period = f"{from_date}..{to_date}" if from_date else "the query's period"
    get_run_logger().info("statement for %s: %d bytes", period, to.stat().st_size)
    return to


@task(name="book-statement", cache_policy=NO_CACHE, retries=1)
async def book_statement_file(ledger: Ledger, path: Path, run_id: str) -> dict[str, StatementBookResult]:
    """Book a statement file into the ledger, one transaction per account's statement (idempotent,
    so a retry books only what is missing)."""
    results = await asyncio.to_thread(ledger.book_statement, path, run_id, one_transaction=False)
    log = get_run_logger()
    for account_id, r in results.items():
        log.info(
            "%s: fills confirmed=%d added=%d cancelled=%d, commissions finalised=%d changed=%d, "
            "cash transactions=%d, positions compared=%d, breaks=%d",
            account_id,
            r.fills_confirmed,
            r.fills_added,
            r.fills_cancelled,
            r.commissions_finalised,
            r.commissions_changed,
            r.cash_transactions,
            r.positions_compared,
            r.breaks,
        )
    return results

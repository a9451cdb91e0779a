"""Statement reconciliation: IBKR's Activity statement (Flex Web Service) booked into the ledger.

Run it the morning after (see prefect.yaml: 06:00 America/New_York, Tuesday to Saturday; IBKR
updates Activity data once a day after the close), from Python::

        from flows.flex_reconciliation import flex_reconciliation
    asyncio.run(flex_reconciliation())                                  # the query's own period
    asyncio.run(flex_reconciliation(from_date=date(2024, 1, 1), to_date=date(2025, 6, 30)))  # backfill

or against the simulator at the end of ``make demo``. The run:

1. fetches the statement (SendRequest, GetStatement polled; the token from the ``credentials`` block
   or ``IBKR_FLEX_TOKEN``), for a date range in chunks of at most 365 days, oldest first, each to a
   temporary file (a year of trades is never held in memory);
2. books each chunk into the ledger (:mod:`ibkr_tasks.ledger.flex`): fills confirmed or added,
   commissions finalised, cancellations, cash transactions, statement positions compared with the
   ledger's; one transaction per account's statement, idempotent;
3. publishes a summary table (one row per account), a break report per account and the event
   ``ibkr.statement.break`` for every account with breaks.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.connect import open_ledger
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.flex.service import FlexPolling
from ibkr_tasks.ledger.flex import StatementBookResult
from ibkr_tasks.reporting import publish_statement
from ibkr_tasks.tasks.flex import aresolve_flex_settings, book_statement_file, date_chunks, fetch_statement


@flow(name="flex-reconciliation", retries=0, validate_parameters=True)
async def flex_reconciliation(
    from_date: date | None = None,
    to_date: date | None = None,
    ledger_url: str | None = None,
    credentials: str | None = None,
    query_id: str | None = None,
    fail_on_breaks: bool = False,
    poll_seconds: Annotated[float, Field(ge=0, le=600)] = 5.0,
) -> dict[str, Any] | State:
    """Book IBKR's Activity statement into the ledger and report where the ledger disagreed.

    Args:
        from_date: first statement date of a backfill (with ``to_date``); both omitted: the Flex
            Query's own period (a daily query: the last business day).
        to_date: last statement date of a backfill; ranges longer than 365 days are fetched in chunks.
        ledger_url: SQLAlchemy URL of the ledger; ``IBKR_LEDGER_URL`` or ``sqlite:///ibkr_ledger.db``.
        credentials: name of a saved ``IBKRCredentials`` block holding the Flex token and query id;
            the ``IBKR_FLEX_*`` environment otherwise.
        query_id: the Flex Query to run, instead of the settings' ``IBKR_FLEX_QUERY_ID``.
        fail_on_breaks: end the run Failed when any account has a break.
        poll_seconds: wait before the first GetStatement and between polls (IBKR needs a few seconds).
    """
    logger = get_run_logger()
    install_log_redaction()  # the flow owns its process's logging: no secret in any log line
    if (from_date is None) != (to_date is None):
        raise ConfigurationError("give both from_date and to_date for a backfill, or neither")
    if from_date is not None and to_date is not None and to_date < from_date:
        raise ConfigurationError(f"to_date {to_date} is before from_date {from_date}")
    settings = await aresolve_flex_settings(credentials)
    run_id = flow_run.get_id() or f"local-{uuid.uuid4()}"
    ledger = await open_ledger(ledger_url)
    polling = FlexPolling(first_delay=poll_seconds, retry_delay=poll_seconds)
    chunks: list[tuple[date | None, date | None]] = (
        list(date_chunks(from_date, to_date))
        if from_date is not None and to_date is not None
        else [(None, None)]
    )
    if len(chunks) > 1:
        logger.info("backfill %s..%s in %d chunks of at most 365 days", from_date, to_date, len(chunks))

    merged: dict[str, StatementBookResult] = {}
    with tempfile.TemporaryDirectory(prefix="ibkr-flex-") as folder:
        for n, (start, end) in enumerate(chunks):
            path = Path(folder) / f"statement-{n}.xml"
            await fetch_statement(settings, path, start, end, query_id, polling)
            booked = await book_statement_file(ledger, path, run_id)
            path.unlink(missing_ok=True)
            for account_id, result in booked.items():
                merged.setdefault(account_id, StatementBookResult(account_id)).merge(result)

    results = list(merged.values())
    await publish_statement(results, run_id)
    summary = {
        "run_id": run_id,
        "chunks": [
            [None if s is None else s.isoformat(), None if e is None else e.isoformat()] for s, e in chunks
        ],
        "accounts": [
            {"account_id": r.account_id, **r.counts(), "period": [str(r.from_date), str(r.to_date)]}
            for r in results
        ],
    }
    with_breaks = [r.account_id for r in results if r.breaks]
    if fail_on_breaks and with_breaks:
        return Failed(
            message=f"{len(with_breaks)} account(s) with breaks: {', '.join(with_breaks)}", data=summary
        )
    message = f"{len(results)} account(s) booked from the statement"
    if with_breaks:
        message += f"; breaks in {', '.join(with_breaks)}"
    return Completed(message=message, data=summary)

"""Market-data polling: snapshots of a list of conids every ``interval`` seconds.

Logs each round's quotes and, with ``store=True``, appends them to the ledger's ``quotes`` table so
they can be queried next to fills and positions. Stops after ``count`` rounds or ``duration`` seconds
(one of them is required: a deployment should never poll forever by accident). The first snapshot of a
conid is IBKR's preflight and carries no values; the client makes it and waits, so every logged round
has data. IBKR allows 10 snapshot requests per second; the client paces them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import Field

from ibkr_tasks.blocks import aresolve_settings
from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.formatting import number
from ibkr_tasks.models import Snapshot
from ibkr_tasks.prefect_limits import pacing_limiter


def _fmt(s: Snapshot) -> str:
    parts = [f"{s.conid}{' ' + s.symbol if s.symbol else ''}"]
    for name in ("last", "bid", "ask", "volume"):
        value = getattr(s, name)
        if value is not None:
            parts.append(f"{name}={number(value)}")
    if s.last_is_prior_close:
        parts.append("(prior close)")
    if s.halted:
        parts.append("(halted)")
    return " ".join(parts)


@flow(name="market-data", retries=0)
async def market_data(
    conids: Annotated[list[int], Field(min_length=1, max_length=500)],
    interval: Annotated[float, Field(ge=0.1)] = 5.0,
    count: Annotated[int | None, Field(ge=1)] = None,
    duration: Annotated[float | None, Field(gt=0)] = None,
    store: bool = False,
    ledger_url: str | None = None,
    credentials: str | None = None,
) -> Any:
    """Poll snapshots for ``conids`` every ``interval`` s, ``count`` times or for ``duration`` s."""
    if count is None and duration is None:
        raise ValueError("give count or duration: market_data never polls forever")
    logger = get_run_logger()
    install_log_redaction()  # the flow owns its process's logging: no secret in any log line
    settings = await aresolve_settings(credentials)
    limiter = await pacing_limiter(settings)
    ledger = None
    if store:
        from ibkr_tasks.ledger import Ledger

        ledger = await asyncio.to_thread(Ledger, ledger_url)
    run_id = flow_run.get_id() or "local"
    rounds = stored = 0
    async with IBKRClient.from_settings(settings, limiter=limiter) as client:
        await client.ensure_session()
        async for snapshots in client.poll_snapshots(
            conids, interval=interval, count=count, duration=duration
        ):
            rounds += 1
            for s in snapshots:
                logger.info("%s", _fmt(s))
            if ledger is not None:
                stored += await asyncio.to_thread(ledger.store_quotes, snapshots, run_id)
    message = f"{rounds} round(s) of {len(conids)} conid(s)" + (
        f", {stored} quote(s) stored" if store else ""
    )
    return Completed(message=message, data={"rounds": rounds, "stored": stored})

"""Market-data polling: snapshots of a list of conids every ``interval`` seconds.

Logs each round's quotes and, with ``store=True``, appends them to the ledger's ``quotes`` table so
they can be queried next to fills and positions. Stops after ``count`` rounds or ``duration`` seconds
(one of them is required: a deployment should never poll forever by accident). The first snapshot of a
conid is IBKR's preflight and carries no values; the client makes it and waits, so every logged round
has data. IBKR allows 10 snapshot requests per second; the client paces them.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import Field

from ibkr_tasks.connect import ibkr_client, open_ledger
from ibkr_tasks.tasks import refresh_session
from ibkr_tasks.tasks.market_data import poll_market_data


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
    ledger = await open_ledger(ledger_url) if store else None
    run_id = flow_run.get_id() or "local"
    async with ibkr_client(credentials) as client:
        await refresh_session(client)
        polled = await poll_market_data(
            client, conids, interval=interval, count=count, duration=duration, ledger=ledger, run_id=run_id
        )
    message = f"{polled.rounds} round(s) of {len(conids)} conid(s)" + (
        f", {polled.stored} quote(s) stored" if store else ""
    )
    return Completed(message=message, data={"rounds": polled.rounds, "stored": polled.stored})

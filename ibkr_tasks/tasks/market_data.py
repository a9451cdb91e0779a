"""The market-data task: snapshots of a list of conids every ``interval`` seconds, logged and kept.

One task run for the whole polling (not one per round: a poll of an hour at 5 s would be 720 runs).
``retries=0``: a second attempt would poll, and store, the rounds already done again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from ibkr_tasks.client.background import BackgroundClient
from ibkr_tasks.formatting import number
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.models import Snapshot
from ibkr_tasks.tasks.ibkr import ClientSource, using

__all__ = ["PollResult", "describe_snapshot", "poll_market_data", "polling_rounds"]


def describe_snapshot(s: Snapshot) -> str:
    """``265598 AAPL last=189.5 bid=189.4 ask=189.6 volume=1200``: one quote on one log line."""
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


async def polling_rounds(
    *,
    interval: float,
    count: int | None,
    duration: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AsyncIterator[int]:
    """Yield the round numbers 0, 1, ... at ``interval`` s, ``count`` times and/or for ``duration`` s.

    Ticks are scheduled from the start, so a slow round does not make the polling drift; a round that
    would start at or after ``duration`` is not started.
    """
    if interval <= 0:
        raise ValueError("interval must be positive (seconds between snapshots)")
    start = clock()
    done = 0
    while count is None or done < count:
        if duration is not None and clock() - start >= duration:
            return
        yield done
        done += 1
        if count is not None and done >= count:
            return
        delay = start + done * interval - clock()
        if duration is not None and clock() + max(delay, 0.0) - start >= duration:
            return
        await sleep(max(delay, 0.0))


@dataclass(frozen=True)
class PollResult:
    rounds: int
    stored: int


Snapshots = Callable[[list[int]], Awaitable[list[Snapshot]]]


async def _poll(
    snapshot: Snapshots,
    conids: list[int],
    interval: float,
    count: int | None,
    duration: float | None,
    ledger: Ledger | None,
    run_id: str,
) -> PollResult:
    logger = get_run_logger()
    rounds = stored = 0
    async for _ in polling_rounds(interval=interval, count=count, duration=duration):
        snapshots = await snapshot(conids)
        rounds += 1
        for s in snapshots:
            logger.info("%s", describe_snapshot(s))
        if ledger is not None:
            stored += await asyncio.to_thread(ledger.store_quotes, snapshots, run_id)
    return PollResult(rounds=rounds, stored=stored)


@task(name="poll-market-data", cache_policy=NO_CACHE, retries=0)
async def poll_market_data(
    client: ClientSource | BackgroundClient,
    conids: Sequence[int],
    interval: float = 5.0,
    count: int | None = None,
    duration: float | None = None,
    ledger: Ledger | None = None,
    run_id: str = "local",
) -> PollResult:
    """Snapshots of ``conids`` every ``interval`` s, ``count`` times or for ``duration`` s; each quote
    logged, and appended to the ledger's ``quotes`` table when a ``ledger`` is given. The client makes
    IBKR's preflight (the first snapshot of a conid carries no values) and paces the requests."""
    wanted = [int(c) for c in conids]
    if isinstance(client, BackgroundClient):  # a flow's client, on its own I/O loop
        return await _poll(client.snapshot, wanted, interval, count, duration, ledger, run_id)
    async with using(client) as c:
        return await _poll(c.snapshot, wanted, interval, count, duration, ledger, run_id)

"""Tasks that talk to IBKR. Reads retry on transient errors; order placement never retries here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, cast

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from ibkr_tasks.blocks import IBKRCredentials, aresolve_settings
from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.background import BackgroundClient
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.client.settings import TaskSettings, TradesScope
from ibkr_tasks.errors import RateLimited, ServerError, TransportError
from ibkr_tasks.models import AccountInfo, Fill, OrderRequest, OrderResult, ParseResult, Position, Snapshot

# Transient failures worth another try of a *read*. Authentication problems, bad input and account
# mismatches are not: retrying them only hides the cause.
_TRANSIENT = (TransportError, ServerError, RateLimited)


async def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a read only when it failed for a transient reason (async: the task engine awaits it)."""
    try:
        await state.aresult()
    except _TRANSIENT:
        return True
    except Exception:
        return False
    return False


ClientSource: TypeAlias = IBKRClient | BackgroundClient | IBKRCredentials | str | None
"""What a task talks to IBKR through: a live client (shared by a flow's tasks; an ``IBKRClient`` or
the ``BackgroundClient`` that runs one on its own thread), a credentials block or the name of a saved
one, or None for the ``IBKR_*`` environment."""


@asynccontextmanager
async def using(source: ClientSource) -> AsyncIterator[IBKRClient]:
    """The client ``source`` names: itself, or one built (and closed) for this call from a block/env."""
    if not (source is None or isinstance(source, IBKRCredentials | str)):
        # A live client, or anything that speaks its API: a BackgroundClient forwards every call to
        # its IBKRClient; tests pass doubles.
        yield cast(IBKRClient, source)
        return
    install_log_redaction()  # the task builds the client: it owns the logging of its requests
    async with IBKRClient.from_settings(await aresolve_settings(source)) as client:
        await client.ensure_session()
        yield client


def read_retry_delays(retries: int) -> list[float]:
    """Prefect's ``retry_delay_seconds`` of the reads: ``IBKR_TASK_RETRY_DELAYS`` (5 then 20 s by
    default), read when the task is defined (Prefect calls this once, with the task's ``retries``)."""
    return TaskSettings().retry_delays


# The options every read shares are written out on each task (not unpacked from a dict) so that
# Prefect's typed `task` overloads check them.
READ_RETRIES = 2
READ_RETRY_JITTER = 0.5


@task(
    name="refresh-session",
    cache_policy=NO_CACHE,
    retries=READ_RETRIES,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=READ_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
async def refresh_session(client: ClientSource = None, allow_competing: bool = False) -> None:
    """Open (or re-open) the brokerage session and make the /iserver/accounts preflight."""
    async with using(client) as c:
        await c.ensure_session(allow_competing=allow_competing)
        settings = getattr(c.transport, "settings", None)  # a test double may have none
        get_run_logger().info("IBKR brokerage session ready at %s", getattr(settings, "api_url", "?"))


@task(
    name="list-accounts",
    cache_policy=NO_CACHE,
    retries=READ_RETRIES,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=READ_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
async def list_accounts(client: ClientSource = None) -> list[AccountInfo]:
    """Every account of the login, FA sub-accounts included."""
    async with using(client) as c:
        accounts = await c.list_accounts()
    get_run_logger().info(
        "login has %d account(s): %s", len(accounts), ", ".join(a.account_id for a in accounts)
    )
    return accounts


@task(
    name="collect-fills",
    cache_policy=NO_CACHE,
    retries=READ_RETRIES,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=READ_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
async def collect_fills(
    client: ClientSource, account_ids: Sequence[str], days: int = 1, scope: TradesScope | None = None
) -> dict[str, ParseResult[Fill]]:
    """The fills of every requested account: one trades request for an FA master's sub-accounts, one
    per account otherwise (IBKR paces them at 1 per 5 s); ``scope`` overrides the client's trades
    scope (``login``, ``account``, ``auto``)."""
    async with using(client) as c:
        result = await c.fills(list(account_ids), days=days, scope=scope)
    logger = get_run_logger()
    for account_id in account_ids:
        batch = result.get(account_id)
        n_ok = len(batch.items) if batch else 0
        n_bad = len(batch.rejected) if batch else 0
        logger.info("%s: %d fill(s) in the last %d day(s), %d unparseable", account_id, n_ok, days, n_bad)
    return result


@task(
    name="fetch-positions",
    task_run_name="fetch-positions-{account_id}",
    cache_policy=NO_CACHE,
    retries=READ_RETRIES,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=READ_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
async def fetch_positions(
    client: ClientSource, account_id: str, invalidate: bool = True, after_trades: bool = False
) -> ParseResult[Position]:
    """All pages of one account's positions (cache invalidated first so the snapshot is current);
    ``after_trades``: once a trades answer covering the account has arrived in ``client`` (see
    ``IBKRClient.positions``)."""
    async with using(client) as c:
        if after_trades:  # only then: a client of the user's own may not know the keyword
            result = await c.positions(account_id, invalidate=invalidate, after_trades=True)
        else:
            result = await c.positions(account_id, invalidate=invalidate)
    get_run_logger().info(
        "%s: %d position(s), %d unparseable", account_id, len(result.items), len(result.rejected)
    )
    return result


@task(
    name="snapshot",
    cache_policy=NO_CACHE,
    retries=READ_RETRIES,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=READ_RETRY_JITTER,
    retry_condition_fn=retry_transient,
)
async def snapshot(client: ClientSource, conids: Sequence[int]) -> list[Snapshot]:
    """One market-data snapshot of the given conids (the preflight is handled by the client)."""
    async with using(client) as c:
        return await c.snapshot(list(conids))


@task(name="place-order", task_run_name="place-order-{account_id}-{coid}", cache_policy=NO_CACHE, retries=0)
async def place_order(
    client: ClientSource, account_id: str, order: OrderRequest, coid: str, policy: Any = None
) -> OrderResult:
    """Place one order with a deterministic cOID.

    ``retries=0`` on purpose: a second attempt goes through the same cOID, and the client resolves
    "already registered" to the existing order instead of sending a new one.
    """
    async with using(client) as c:
        result = await c.place_order(account_id, order, coid=coid, policy=policy)
    get_run_logger().info("%s: order %s (cOID %s) %s", account_id, result.order_id, coid, result.status)
    return result


@task(name="cancel-all", task_run_name="cancel-all-{account_id}", cache_policy=NO_CACHE, retries=0)
async def cancel_all(client: ClientSource, account_id: str) -> list[str]:
    """Cancel this account's working orders, and only this account's."""
    async with using(client) as c:
        cancelled = await c.cancel_all(account_id)
    get_run_logger().info("%s: cancel requested for %d order(s)", account_id, len(cancelled))
    return [str(result) for result in cancelled]

"""What every flow does before its tasks run: the IBKR client with its pacing, and the ledger.

A flow composes tasks; how the client is built is decided once, here:

    async with ibkr_client(credentials) as client:      # settings, pacing, client on its own loop
        await refresh_session(client)
        ...
    ledger = await open_ledger(ledger_url)

- the settings come from the saved ``IBKRCredentials`` block ``credentials`` or the ``IBKR_*``
  environment (:func:`ibkr_tasks.blocks.aresolve_settings`);
- log redaction is installed: the flow owns its process's logging, and no secret reaches a log line;
- the pacing is a limiter of the run's own, on Prefect's global concurrency limits when they exist for
  the login, in-process otherwise (:func:`ibkr_tasks.prefect_limits.pacing_limiter`);
- the client runs on an I/O loop of its own (:class:`~ibkr_tasks.client.background.BackgroundClient`),
  with a short thread switch interval while it is open: Prefect's task engine on the flow's loop would
  otherwise delay the pacing's wake-ups and cost request slots (docs/pacing.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from ibkr_tasks.blocks import aresolve_settings
from ibkr_tasks.client.background import FAST_SWITCH_INTERVAL, BackgroundClient, gc_frozen
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.prefect_limits import backend_kind, pacing_limiter

__all__ = ["ibkr_client", "open_ledger", "run_logger"]


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow or task run's logger; the module's logger outside a run (scripts, benches)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("ibkr_tasks")


@asynccontextmanager
async def ibkr_client(
    credentials: str | None = None, *, settings: IBKRSettings | None = None
) -> AsyncIterator[BackgroundClient]:
    """An open client for the login ``credentials`` names (or ``settings``), paced for that login."""
    install_log_redaction()
    if settings is None:
        settings = await aresolve_settings(credentials)
    limiter = await pacing_limiter(settings)
    run_logger().info(
        "IBKR pacing: %s",
        "Prefect global concurrency limits" if backend_kind(limiter) == "prefect" else "in-process",
    )
    with gc_frozen():  # a full garbage collection would stop the I/O thread too (docs/pacing.md)
        async with BackgroundClient(
            settings, limiter=limiter, switch_interval=FAST_SWITCH_INTERVAL
        ) as client:
            yield client


async def open_ledger(ledger_url: str | None = None) -> Ledger:
    """The ledger at ``ledger_url`` (``IBKR_LEDGER_URL`` or the local SQLite file when None), opened
    off the event loop (it may migrate the schema)."""
    ledger = await asyncio.to_thread(Ledger, ledger_url)
    run_logger().info("ledger: %r", ledger)
    return ledger

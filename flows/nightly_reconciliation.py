"""Nightly reconciliation: IBKR fills, commissions and positions into the per-account SQL ledger.

Run it from a deployment (see prefect.yaml: weekdays 18:30 America/New_York), from Python::

    import asyncio
    from flows.nightly_reconciliation import nightly_reconciliation
    asyncio.run(nightly_reconciliation(days=1))

or against the simulator with ``make demo``. The run:

1. opens the brokerage session (ssodh/init + /iserver/accounts preflight);
2. discovers the login's accounts (FA sub-accounts included) unless ``accounts`` is given;
3. collects the fills of every account, as the trades scope says (``trades_scope``, IBKR_TRADES_SCOPE;
   ``auto``: ONE trades call for an FA master's sub-accounts, one per account, paced at IBKR's 1 per
   5 s, on a login that is not an FA master), and splits them by account;
4. per account, concurrently and inside IBKR's rate limits: page through the positions; if a trades
   answer for the whole login held no row for the account but its positions moved since the last
   snapshot, ask for its trades by ``accountId`` (ibkr_tasks.reconcile); ingest fills and commissions
   (idempotent), reconcile the positions against the ledger, report;
5. publishes a summary table, a break report per account, progress, and the events
   ``ibkr.reconciliation.break`` / ``ibkr.reconciliation.completed`` for automations.

One failing account does not stop the others; the run ends Failed if any account failed (or had
breaks, with ``fail_on_breaks``), with a message naming them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import acreate_progress_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from ibkr_tasks.client.settings import TradesScope
from ibkr_tasks.connect import ibkr_client, open_ledger
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.nightly import (
    SharedFills,
    cancel_all,
    keep_contracts,
    prefetch_positions,
    reconcile_account,
    reconcile_accounts,
    seed_contracts,
    select_accounts,
    shared_trades_accounts,
    unknown_outcomes,
    verdict,
)
from ibkr_tasks.reporting import (
    BREAKS_TAG,
    PROGRESS_KEY,
    AccountOutcome,
    ProgressUpdates,
    Window,
    publish_account,
    publish_summary,
)
from ibkr_tasks.tasks import list_accounts
from ibkr_tasks.tasks import refresh_session as refresh_session_task


def _window() -> Window:
    """The trading date this run reconciles (its scheduled start, in New York) and its day window."""
    start = flow_run.get_scheduled_start_time() if flow_run.get_id() else None
    days = (flow_run.get_parameters() or {}).get("days", 1) if flow_run.get_id() else 1
    return Window.at(start or datetime.now(UTC), int(days))


async def _tag_run(flow_run_id: str, tag: str) -> None:
    """Add ``tag`` to this flow run: the run list and the run page show tags, not state messages."""
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(str(flow_run_id)))
            await client.update_flow_run(run.id, tags=sorted({*run.tags, tag}))
    except Exception as exc:  # a label only: never fail the run over it
        get_run_logger().warning("could not tag the run %r (%s: %s)", tag, type(exc).__name__, exc)


def _run_name() -> str:
    """``reconcile-2026-11-30``: nightly runs are named after the trading date they reconcile."""
    return _window().run_name


@flow(name="nightly-reconciliation", flow_run_name=_run_name, retries=0, validate_parameters=True)
async def nightly_reconciliation(
    accounts: list[str] | None = None,
    days: Annotated[int, Field(ge=1, le=7)] = 1,
    ledger_url: str | None = None,
    fail_on_breaks: bool = False,
    credentials: str | None = None,
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 16,
    trades_scope: TradesScope | None = None,
) -> dict[str, Any] | State:
    """Reconcile IBKR fills, commissions and positions into the ledger for every account.

    Args:
        accounts: account ids to reconcile; all accounts of the login when omitted (an empty list
            is an error, not "all").
        days: how many days of executions to fetch (1..7; IBKR keeps no more).
        ledger_url: SQLAlchemy URL of the ledger; ``IBKR_LEDGER_URL`` or ``sqlite:///ibkr_ledger.db`` by default.
        fail_on_breaks: end the run Failed when any account has a break.
        credentials: name of a saved ``IBKRCredentials`` block; the ``IBKR_*`` environment otherwise.
        max_concurrency: accounts fetching their trades and positions at once (IBKR's rate limits apply
            underneath); their ledger writes queue up apart from it.
        trades_scope: how the fills are asked for: ``auto`` (one trades request for an FA master's
            sub-accounts, one per account otherwise), ``login`` (one request) or ``account`` (one per
            account); ``IBKR_TRADES_SCOPE`` (default ``auto``) when omitted.
    """
    logger = get_run_logger()
    if accounts is not None and not accounts:
        raise ConfigurationError(
            "accounts=[] names no account to reconcile; leave it out to reconcile every account of the login"
        )
    flow_run_id = flow_run.get_id()
    run_id = flow_run_id or f"local-{uuid.uuid4()}"
    window = _window()

    async with ibkr_client(credentials) as client:
        opening = asyncio.ensure_future(open_ledger(ledger_url))  # while the session is checked
        try:
            await refresh_session_task(client)
            infos = await list_accounts(client)
        except BaseException:
            opening.cancel()
            raise
        selection = select_accounts(infos, accounts)
        targets = selection.targets
        logger.info("reconciling %d account(s), %d day(s) of executions", len(targets), days)
        # The trades request goes out before the ledger is open (a first run creates its schema: 0.3 s
        # on SQLite); the contract info the ledger knows is remembered before the answer's instruments
        # are looked up (remember_first holds the lookup until then).
        seeding = asyncio.ensure_future(seed_contracts(client, opening)) if targets else None
        shared = SharedFills([])
        if targets:
            try:
                shared = SharedFills(await shared_trades_accounts(client, targets, trades_scope))
            except Exception as exc:  # reported on every account, as a failed trades answer is
                shared = SharedFills(list(targets), error=f"{type(exc).__name__}: {exc}")
                logger.error("collecting fills failed: %s", shared.error)
            shared.start(client, opening, run_id, days, trades_scope)
        slots = asyncio.Semaphore(max_concurrency)
        # The served accounts' positions go out as soon as the trades answer has arrived, whatever
        # else of the run (the ledger opening, its writes) is still under way.
        prefetched = prefetch_positions(client, shared, slots)
        try:
            ledger = await opening
            known_contracts = await seeding if seeding is not None else set()
        except BaseException:
            shared.cancel()
            await cancel_all([*prefetched.values(), *([seeding] if seeding is not None else [])])
            raise
        filed = asyncio.gather(
            asyncio.to_thread(ledger.upsert_accounts, infos),
            acreate_progress_artifact(
                progress=0.0, key=PROGRESS_KEY, description=f"Accounts reconciled, {window.describe()}"
            ),
        )

        async def keep_shared_contracts() -> set[int]:
            # The one trades answer's instruments are kept while the accounts are reconciled.
            await shared.wait()
            return await keep_contracts(client, ledger, known_contracts)

        keeping = asyncio.ensure_future(keep_shared_contracts())
        _, progress_id = await filed
        progress = ProgressUpdates(progress_id, len(targets))

        async def one(account_id: str, slots: asyncio.Semaphore) -> AccountOutcome:
            outcome = await reconcile_account(
                client,
                ledger,
                account_id,
                shared if account_id in shared.accounts else None,
                run_id,
                flow_run_id,
                days,
                slots,
                prefetched.get(account_id),
            )
            # Reporting talks to Prefect, not IBKR: it does not hold one of the accounts' slots.
            await publish_account(outcome, run_id, window)
            progress.advance()
            return outcome

        outcomes = await reconcile_accounts(targets, one, slots)
        await progress.flush()
        # and those the accounts' own trades answers brought
        await keep_contracts(client, ledger, known_contracts | await keeping)

    outcomes += unknown_outcomes(selection.unknown)
    await publish_summary(outcomes, run_id, window)
    summary = {
        "run_id": run_id,
        "accounts": [o.as_dict() for o in outcomes],
        "unattributed_quarantined": shared.quarantined,
    }
    for o in outcomes:
        logger.info("%s: %s, %d break(s); %s", o.account_id, o.status, o.breaks, o.describe())
        if o.breaks:
            logger.warning("%s: %s", o.headline(), "; ".join(o.instruments()))
    if flow_run_id and any(o.breaks for o in outcomes):
        await _tag_run(flow_run_id, BREAKS_TAG)
    end = verdict(outcomes, window, fail_on_breaks=fail_on_breaks)
    if end.failed:
        return Failed(message=end.message, data=summary)
    return Completed(message=end.message, data=summary)

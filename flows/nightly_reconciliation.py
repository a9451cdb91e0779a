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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import opaque
from pydantic import Field

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.blocks import aresolve_settings
from ibkr_tasks.client.background import FAST_SWITCH_INTERVAL, BackgroundClient
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.client.settings import TradesScope
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.models import AccountInfo, Fill, ParseResult
from ibkr_tasks.prefect_limits import backend_kind, pacing_limiter
from ibkr_tasks.reconcile import fills_to_recheck
from ibkr_tasks.reporting import (
    BREAKS_TAG,
    PROGRESS_KEY,
    AccountOutcome,
    CommissionBreak,
    PositionBreak,
    Window,
    publish_account,
    publish_summary,
)
from ibkr_tasks.tasks import (
    collect_fills,
    fetch_positions,
    ingest_fills,
    list_accounts,
    quarantine_rows,
    reconcile_positions,
)
from ibkr_tasks.tasks import refresh_session as refresh_session_task
from ibkr_tasks.tasks.runs import start_account_run


def reconcilable_accounts(infos: list[AccountInfo]) -> list[str]:
    """The accounts that hold positions: every account of the login but an FA master's own entry."""
    return [a.account_id for a in infos if not (a.has_child_accounts or a.is_multiplex_parent)]


def _apply_ingest(outcome: AccountOutcome, result: Any) -> None:
    outcome.fills_new = result.fills_new
    outcome.fills_updated = result.fills_updated
    outcome.fills_superseded = result.fills_superseded
    outcome.commissions_finalised = result.commissions_finalised
    outcome.commissions_changed = result.commissions_changed
    outcome.quarantined += result.quarantined
    outcome.commission_breaks = [
        CommissionBreak(execution_id=b.execution_id, old=b.expected, new=b.actual, currency=b.currency)
        for b in result.commission_breaks
    ]


def _apply_reconcile(outcome: AccountOutcome, result: Any, positions: list[Any]) -> None:
    held = {p.conid: p for p in positions}  # the broker's mark price, multiplier and currency
    outcome.position_breaks = []
    for b in result.breaks:
        pos = held.get(b.conid)
        outcome.position_breaks.append(
            PositionBreak(
                conid=b.conid,
                symbol=b.symbol or (pos.symbol if pos else None),
                expected=b.expected,
                actual=b.actual,
                price=pos.mkt_price if pos else None,
                multiplier=pos.multiplier if pos else b.multiplier,
                currency=pos.currency if pos else None,
            )
        )
    outcome.resolved = result.resolved
    outcome.as_of = result.taken_at


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


async def _reconcile_account(
    client: BackgroundClient,
    ledger: Ledger,
    account_id: str,
    fills_by_account: Mapping[str, ParseResult[Fill]] | None,
    run_id: str,
    flow_run_id: str | None,
    days: int,
    *,
    own_trades: bool = False,
) -> AccountOutcome:
    """(own trades) -> positions -> (self-check) -> ingest -> reconcile for one account; failures are
    caught and reported, not raised. ``own_trades``: the account's trades are asked for here, by
    ``accountId``, not found in ``fills_by_account``."""
    logger = get_run_logger()
    outcome = AccountOutcome(account_id=account_id)
    outcome.last_success = await asyncio.to_thread(ledger.last_reconciled_at, account_id)
    await start_account_run(ledger, account_id, run_id, flow_run_id)  # closes dead runs (abandoned)
    try:
        if own_trades:
            fills_by_account = await collect_fills(client, [account_id], days=days, scope="account")
            unattributed = list(getattr(fills_by_account, "unattributed", ()))
            if unattributed:  # rows that name no account: kept, never dropped
                outcome.quarantined += await quarantine_rows(ledger, opaque(unattributed), run_id)
        fills = fills_by_account.get(account_id) if fills_by_account is not None else None
        if fills_by_account is None or fills is None:
            raise RuntimeError(f"fills for {account_id} could not be collected")
        positions = await fetch_positions(client, account_id)
        outcome.positions = len(positions.items)
        reason = await asyncio.to_thread(
            fills_to_recheck, ledger, account_id, fills_by_account, positions.items
        )
        if reason:
            logger.warning("%s: %s; asking for its trades by account id", account_id, reason)
            own = await collect_fills(client, [account_id], days=days, scope="account")
            fills = own[account_id]
        outcome.fills_seen = len(fills.items)
        outcome.commissions_pending = sum(1 for f in fills.items if f.commission is None)
        # opaque(): Prefect would otherwise walk every field of every fill (and every payload key)
        # twice per task call to look for futures; at 200 fills x 16 accounts that stalls the run.
        ingested = await ingest_fills(
            ledger, account_id, opaque(fills.items), run_id, rejected=opaque(fills.rejected), as_state=True
        )
        _apply_ingest(outcome, await ingested.aresult())
        if positions.rejected:
            quarantined = await ingest_fills(
                ledger, account_id, [], run_id, rejected=opaque(positions.rejected)
            )
            outcome.quarantined += quarantined.quarantined
        # The ledger picks the snapshot's time under the account's lock; the fills only bound it.
        reconciled = await reconcile_positions(
            ledger,
            account_id,
            opaque(positions.items),
            run_id,
            not_before=max((f.trade_time for f in fills.items), default=None),
            as_state=True,
        )
        _apply_reconcile(outcome, await reconciled.aresult(), positions.items)
        outcome.status = "breaks" if outcome.breaks else "completed"
    except Exception as exc:  # one account's failure must not stop the others
        outcome.status = "failed"
        outcome.error = f"{type(exc).__name__}: {exc}"
        logger.error("%s: reconciliation failed: %s", account_id, outcome.error)
    run_status = "failed" if outcome.status == "failed" else "succeeded"
    await asyncio.to_thread(
        ledger.finish_run, account_id, run_id, run_status, outcome.counts(), error=outcome.error
    )
    return outcome


async def _remembered_contracts(client: BackgroundClient, ledger: Ledger) -> set[int]:
    """Seed the client's contract cache from the ledger; the conids it knew."""
    logger = get_run_logger()
    try:
        known = await asyncio.to_thread(ledger.known_contracts)
    except Exception as exc:  # an optimisation only: without it every instrument is looked up
        logger.warning("stored contract info unavailable (%s: %s); looking all up", type(exc).__name__, exc)
        return set()
    client.contracts.remember(known.values())
    logger.info("contract info of %d instrument(s) known from earlier runs", len(known))
    return set(known)


async def _keep_contracts(client: BackgroundClient, ledger: Ledger, known: set[int]) -> None:
    """Store the contract info the client looked up in this run, for the next nights."""
    learned = [info for conid, info in client.contracts.cached().items() if conid not in known]
    if not learned:
        return
    try:
        stored = await asyncio.to_thread(ledger.store_contracts, learned)
    except Exception as exc:
        get_run_logger().warning("could not keep contract info (%s: %s)", type(exc).__name__, exc)
        return
    get_run_logger().info("kept contract info of %d new instrument(s)", stored)


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
        max_concurrency: accounts processed at once (IBKR's rate limits apply underneath).
        trades_scope: how the fills are asked for: ``auto`` (one trades request for an FA master's
            sub-accounts, one per account otherwise), ``login`` (one request) or ``account`` (one per
            account); ``IBKR_TRADES_SCOPE`` (default ``auto``) when omitted.
    """
    logger = get_run_logger()
    install_log_redaction()  # the flow owns its process's logging: no secret in any log line
    if accounts is not None and not accounts:
        raise ConfigurationError(
            "accounts=[] names no account to reconcile; leave it out to reconcile every account of the login"
        )
    settings = await aresolve_settings(credentials)
    flow_run_id = flow_run.get_id()
    run_id = flow_run_id or f"local-{uuid.uuid4()}"
    window = _window()
    ledger = await asyncio.to_thread(Ledger, ledger_url)
    logger.info("ledger: %r", ledger)
    limiter = await pacing_limiter(settings)
    logger.info(
        "IBKR pacing: %s",
        "Prefect global concurrency limits" if backend_kind(limiter) == "prefect" else "in-process",
    )

    # The client runs on an I/O loop of its own: Prefect's task engine on this loop would otherwise
    # delay the pacing's wake-ups and cost request slots; a short switch interval while it is open lets
    # its thread take the GIL on time (docs/pacing.md).
    async with BackgroundClient(settings, limiter=limiter, switch_interval=FAST_SWITCH_INTERVAL) as client:
        await refresh_session_task(client)
        infos = await list_accounts(client)
        await asyncio.to_thread(ledger.upsert_accounts, infos)
        known = {a.account_id for a in infos}
        if accounts:
            wanted = [validate_account_id(a) for a in accounts]
        else:
            wanted = reconcilable_accounts(infos)
        unknown = [a for a in wanted if a not in known]
        targets = [a for a in wanted if a in known]
        logger.info("reconciling %d account(s), %d day(s) of executions", len(targets), days)

        progress_id = await acreate_progress_artifact(
            progress=0.0, key=PROGRESS_KEY, description=f"Accounts reconciled, {window.describe()}"
        )
        fills: Mapping[str, ParseResult[Fill]] = {}
        own_trades: set[str] = set()
        collect_error: str | None = None
        unattributed_quarantined = 0
        known_contracts: set[int] = set()
        if targets:
            # Contract info (currency, multiplier) of instruments seen on earlier nights comes from the
            # ledger: the trades call then looks up only new instruments (IBKR's 10 req/s is shared).
            known_contracts = await _remembered_contracts(client, ledger)
            try:
                # The accounts one trades request serves (an FA master's sub-accounts) are collected
                # here; every other account asks for its own trades when its turn comes, so its
                # positions are fetched while the next account waits for IBKR's 1 trades request per 5 s.
                requests = await client.trades_requests(targets, trades_scope)
                shared = [
                    a for a in targets if any(r.account_id is None and a in r.accounts for r in requests)
                ]
                own_trades = set(targets) - set(shared)
                if shared:
                    fills = await collect_fills(client, shared, days=days, scope=trades_scope)
                    unattributed = list(getattr(fills, "unattributed", ()))
                    if unattributed:  # rows that name no account of ours: kept, never dropped
                        unattributed_quarantined = await quarantine_rows(ledger, opaque(unattributed), run_id)
            except Exception as exc:
                collect_error = f"{type(exc).__name__}: {exc}"
                logger.error("collecting fills failed: %s", collect_error)

        semaphore = asyncio.Semaphore(max_concurrency)
        done = 0

        async def one(account_id: str) -> AccountOutcome:
            nonlocal done
            async with semaphore:
                outcome = await _reconcile_account(
                    client,
                    ledger,
                    account_id,
                    None if collect_error is not None and account_id not in own_trades else fills,
                    run_id,
                    flow_run_id,
                    days,
                    own_trades=account_id in own_trades,
                )
            if collect_error and outcome.error:
                outcome.error = f"collecting fills failed: {collect_error}"
            # Reporting talks to Prefect, not IBKR: it does not hold one of the accounts' slots.
            await publish_account(outcome, run_id, window)
            done += 1
            await aupdate_progress_artifact(progress_id, progress=100.0 * done / max(len(targets), 1))
            return outcome

        outcomes = list(await asyncio.gather(*(one(a) for a in targets)))
        await _keep_contracts(client, ledger, known_contracts)

    for account_id in unknown:
        outcomes.append(
            AccountOutcome(account_id=account_id, status="failed", error="not an account of this IBKR login")
        )
    await publish_summary(outcomes, run_id, window)
    summary = {
        "run_id": run_id,
        "accounts": [o.as_dict() for o in outcomes],
        "unattributed_quarantined": unattributed_quarantined,
    }

    failed = [o.account_id for o in outcomes if o.status == "failed"]
    with_breaks = [o.account_id for o in outcomes if o.breaks]
    for o in outcomes:
        logger.info(
            "%s: %s (new %d, updated %d, superseded %d, finalised %d, changed %d, quarantined %d, breaks %d)",
            o.account_id,
            o.status,
            o.fills_new,
            o.fills_updated,
            o.fills_superseded,
            o.commissions_finalised,
            o.commissions_changed,
            o.quarantined,
            o.breaks,
        )
        if o.breaks:
            logger.warning("%s: %s", o.headline(), "; ".join(o.instruments()))
    problems = []
    if failed:
        problems.append(f"{len(failed)} account(s) failed: {', '.join(failed)}")
    if fail_on_breaks and with_breaks:
        problems.append(f"{len(with_breaks)} account(s) with breaks: {', '.join(with_breaks)}")
    breaks_text = "; ".join(o.headline() for o in outcomes if o.breaks)
    if with_breaks and flow_run_id:
        await _tag_run(flow_run_id, BREAKS_TAG)
    if problems:
        return Failed(message="; ".join(problems + ([breaks_text] if breaks_text else [])), data=summary)
    clean = len(outcomes) - len(with_breaks)
    if with_breaks:
        message = f"{breaks_text}; {clean} of {len(outcomes)} account(s) without breaks ({window.describe()})"
    else:
        message = f"{len(outcomes)} account(s) reconciled, no breaks ({window.describe()})"
    return Completed(message=message, data=summary)

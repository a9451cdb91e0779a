"""Triggered rebalancing: move one account to target weights or quantities, then book what filled.

Run it from the ``rebalance`` deployment (no schedule: a button in the UI, the CLI, the API or an
automation; see docs/rebalance.md), or from Python::

    import asyncio
    from flows.rebalance import rebalance
    asyncio.run(rebalance(account_id="DU1234567", targets={"265598": 0.3, "756733": 0.5}))

The run is a dry run unless ``dry_run=false``. It:

1. refuses a live (non-``DU``) account without ``allow_live=true`` before any request at all;
2. reads positions, net liquidation value, contract details and fresh snapshots;
3. plans whole-lot orders (:mod:`ibkr_tasks.rebalance.plan`), publishes the plan as a table artifact
   and checks the guards (scope, event contracts never sold, notional limits, stale prices);
4. dry run: stores the planned orders in the ledger's ``orders`` table (status ``planned``) and stops;
5. otherwise places the orders one at a time (intent in the ledger first, deterministic cOIDs,
   prompts per the policy), waits for fills, ingests them and reports targets vs achieved. A failure
   after some orders were placed cancels this run's still-working orders, and only those.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field, ValidationError

from ibkr_tasks.blocks import aresolve_settings
from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.client.redact import install_log_redaction
from ibkr_tasks.errors import (
    IBKRError,
    LiveAccountRefused,
    RateLimited,
    RebalanceRefused,
    ServerError,
    TransportError,
)
from ibkr_tasks.formatting import money, number
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.models import OrderRequest, Position, TimeInForce
from ibkr_tasks.prefect_limits import pacing_limiter
from ibkr_tasks.rebalance import (
    PlanInputs,
    PricingMode,
    RebalanceParams,
    RebalancePlan,
    build_plan,
    check_plan,
    ensure_account_allowed,
    plan_from_orders,
)
from ibkr_tasks.rebalance.execute import (
    ExecutionReport,
    RebalanceFailed,
    execute_plan,
    gather_inputs,
    record_plan,
)
from ibkr_tasks.reporting import artifact_key
from ibkr_tasks.tasks import place_order
from ibkr_tasks.tasks import refresh_session as refresh_session_task


async def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry the reads only on errors that another try can fix (no answer, 5xx, 429).

    Async on purpose: inside the async task engine ``state.result()`` is a coroutine, so a sync check
    would never see the exception (and never retry).
    """
    try:
        await state.aresult()
    except (TransportError, ServerError, RateLimited):
        return True
    except Exception:
        return False
    return False


@task(
    name="gather-rebalance-inputs",
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=_transient,
    task_run_name="gather-rebalance-inputs-{params.account_id}",
    cache_policy=NO_CACHE,
)
async def gather_rebalance_inputs(
    client: IBKRClient, params: RebalanceParams
) -> tuple[PlanInputs, list[Position]]:
    """Positions, net liquidation value, contract details and fresh snapshots of one account (reads only)."""
    return await gather_inputs(client, params)


@task(name="record-plan", cache_policy=NO_CACHE, retries=1)
async def record_plan_task(ledger: Ledger, plan: RebalancePlan) -> int:
    """Store a dry run's planned orders in the ledger (``orders``, status ``planned``); idempotent."""
    return await asyncio.to_thread(record_plan, ledger, plan)


def _run_name() -> str:
    """``rebalance-DU1234567-dry-run`` / ``rebalance-DU1234567-execute``: the mode in the run list."""
    parameters = flow_run.get_parameters() or {}
    mode = "dry-run" if parameters.get("dry_run", True) else "execute"
    return f"rebalance-{str(parameters.get('account_id', '')).upper()}-{mode}"


async def publish_plan(plan: RebalancePlan, dry_run: bool) -> None:
    """The plan table artifact (conid, symbol, action, cOID, quantities, order terms, notional)."""
    await acreate_table_artifact(
        table=plan.table() or [{"conid": "", "symbol": "", "action": "nothing to do"}],
        key=artifact_key("rebalance-plan", plan.account_id),
        description=(
            f"{'Dry run' if dry_run else 'Rebalance'} plan of {plan.account_id} at "
            f"{plan.as_of:%Y-%m-%d %H:%M} UTC: {plan.describe()}"
        ),
    )


async def publish_report(report: ExecutionReport) -> None:
    """Orders (with their outcome) and targets vs achieved, as artifacts."""
    acct = report.account_id
    await acreate_table_artifact(
        table=[o.as_dict() for o in report.orders] or [{"cOID": "", "status": "no orders"}],
        key=artifact_key("rebalance-orders", acct),
        description=f"Orders of rebalance run {report.run_id} for {acct}",
    )
    if report.achieved:
        await acreate_table_artifact(
            table=[a.as_dict() for a in report.achieved],
            key=artifact_key("rebalance-result", acct),
            description=f"Targets vs achieved after rebalance run {report.run_id} for {acct}",
        )
    if report.error or report.cancelled or report.cancel_errors or report.timed_out:
        lines = [f"# Rebalance {acct} stopped" if report.error else f"# Rebalance {acct}", ""]
        if report.error:
            lines += [f"Error: `{report.error}`", ""]
        if report.timed_out:
            lines += ["Some orders were not filled within the fill timeout.", ""]
        lines += [f"Cancel requested for this run's working orders: {', '.join(report.cancelled) or 'none'}."]
        lines += [f"- {e}" for e in report.cancel_errors]
        await acreate_markdown_artifact(
            markdown="\n".join(lines),
            key=artifact_key("rebalance-failure", acct),
            description=f"What rebalance run {report.run_id} did after a failure",
        )


@flow(name="rebalance", flow_run_name=_run_name, retries=0, validate_parameters=True)
async def rebalance(
    account_id: str,
    targets: dict[str, Any] | None = None,
    target_kind: Literal["weight", "quantity"] = "weight",
    orders: list[OrderRequest] | None = None,
    dry_run: bool = True,
    pricing: PricingMode = PricingMode.LIMIT,
    limit_offset_bps: Annotated[Decimal, Field(ge=0)] = Decimal(10),
    tif: TimeInForce = TimeInForce.DAY,
    max_order_notional: Decimal | None = None,
    max_total_notional: Decimal | None = None,
    min_trade_value: Decimal = Decimal(0),
    liquidate_unlisted: bool = False,
    allow_live: bool = False,
    fill_timeout: Annotated[float, Field(ge=0, le=86400)] = 60.0,
    fill_poll_interval: Annotated[float, Field(gt=0)] = 5.0,
    price_max_age: Annotated[float, Field(gt=0)] = 60.0,
    allow_prior_close: bool = False,
    ledger_url: str | None = None,
    credentials: str | None = None,
    prompt_policy: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any] | State:
    """Rebalance one account to ``targets`` (or place explicit ``orders``); a dry run by default.

    Args:
        account_id: the account to trade (``DU...`` paper; a live one needs ``allow_live``).
        targets: conid -> weight of net liquidation value (or quantity with ``target_kind="quantity"``),
            or conid -> ``{"weight"|"quantity": ..., "side": "Yes"|"No", "lot_size": ..., "tick_size": ...}``.
        target_kind: how bare numbers in ``targets`` are read.
        orders: explicit orders computed elsewhere (``market_id``, ``order_side``, ``price``, ``size``,
            ``side``); used instead of targets.
        dry_run: plan and report only; nothing is sent (the default).
        pricing: ``limit`` (snapshot price moved ``limit_offset_bps`` toward the other side) or ``market``.
        limit_offset_bps: how far a limit may be from the snapshot price, in basis points.
        tif: time in force of every order.
        max_order_notional: refuse the plan when one order's notional exceeds this (base currency).
        max_total_notional: refuse the plan when all orders together exceed this.
        min_trade_value: orders below this notional are skipped.
        liquidate_unlisted: also close positions that are not in the targets.
        allow_live: allow a live (non-``DU``) account.
        fill_timeout: seconds to wait for fills; still-working orders of the run are cancelled after it.
        fill_poll_interval: seconds between live-orders polls (IBKR allows one per 5 s).
        price_max_age: a snapshot older than this (seconds) stops the plan.
        allow_prior_close: price from yesterday's close when the market is closed (refused by default).
        ledger_url: SQLAlchemy URL of the ledger (``IBKR_LEDGER_URL`` or ``sqlite:///ibkr_ledger.db``).
        credentials: name of a saved ``IBKRCredentials`` block; the ``IBKR_*`` environment otherwise.
        prompt_policy: path of a prompt policy JSON file; the shipped policy otherwise.
        run_id: id the cOIDs derive from; the flow-run id by default (keep it to resume a run safely).
    """
    logger = get_run_logger()
    install_log_redaction()  # the flow owns its process's logging: no secret in any log line
    try:
        params = RebalanceParams(
            account_id=account_id,
            target_kind=target_kind,
            targets=targets or {},
            orders=orders,
            dry_run=dry_run,
            pricing=pricing,
            limit_offset_bps=limit_offset_bps,
            tif=tif,
            max_order_notional=max_order_notional,
            max_total_notional=max_total_notional,
            min_trade_value=min_trade_value,
            liquidate_unlisted=liquidate_unlisted,
            allow_live=allow_live,
            fill_timeout=fill_timeout,
            fill_poll_interval=fill_poll_interval,
            price_max_age=price_max_age,
            allow_prior_close=allow_prior_close,
        )
    except (ValidationError, IBKRError) as exc:
        return Failed(message=f"invalid rebalance parameters: {exc}")
    try:
        ensure_account_allowed(params.account_id, params.allow_live)  # before any request at all
    except LiveAccountRefused as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))

    run = run_id or flow_run.get_id() or f"local-{uuid.uuid4()}"
    policy = PromptPolicy.load(prompt_policy) if prompt_policy else None
    settings = await aresolve_settings(credentials)
    ledger = await asyncio.to_thread(Ledger, ledger_url)
    limiter = await pacing_limiter(settings)
    acct = params.account_id
    logger.info("rebalance %s of %s (%s)", run, acct, "dry run" if params.dry_run else "EXECUTE")

    async with IBKRClient.from_settings(settings, limiter=limiter) as client:
        await refresh_session_task(client)
        try:
            inputs, _positions = await gather_rebalance_inputs(client, params)
            if params.orders:
                plan = plan_from_orders(params, inputs, run, params.orders)
            else:
                plan = build_plan(params, inputs, run)
        except (RebalanceRefused, IBKRError) as exc:
            logger.error("no plan: %s", exc)
            return Failed(message=f"rebalance of {acct} refused: {exc}")
        await publish_plan(plan, params.dry_run)
        logger.info("plan of %s: %s", acct, plan.describe())
        for row in plan.rows:
            logger.info(
                "%s %s: %s -> %s (%s)",
                row.conid,
                row.symbol,
                number(row.current),
                number(row.target, missing="not a target"),
                row.action,
            )
        for warning in plan.warnings:
            logger.warning("%s", warning)
        try:
            check_plan(plan, params)
        except RebalanceRefused as exc:
            logger.error("%s", exc)
            return Failed(message=f"rebalance of {acct} refused: {exc}")

        summary: dict[str, Any] = {
            "run_id": run,
            "account_id": acct,
            "dry_run": params.dry_run,
            "plan": plan.table(),
            "orders": [o.as_dict() for o in plan.orders],
            "warnings": list(plan.warnings),
        }
        if params.dry_run:
            try:
                n = await record_plan_task(ledger, plan)
            except IBKRError as exc:  # e.g. a repeated run_id whose cOID now carries another price
                return Failed(message=f"dry run of {acct}: the plan could not be stored: {exc}", data=summary)
            return Completed(
                message=f"dry run: {n} order(s) planned for {acct} ({plan.describe()}), nothing sent "
                "(ledger orders, status planned)",
                data=summary,
            )
        try:
            report = await execute_plan(client, ledger, plan, params, place=place_order, policy=policy)
        except RebalanceFailed as exc:
            await publish_report(exc.report)
            summary["execution"] = exc.report.summary()
            return Failed(message=f"rebalance of {acct} failed: {exc}", data=summary)
        except RebalanceRefused as exc:
            return Failed(message=f"rebalance of {acct} refused: {exc}", data=summary)
        except IBKRError as exc:  # before any order was placed (e.g. listing working orders failed)
            return Failed(message=f"rebalance of {acct} failed before placing orders: {exc}", data=summary)

    await publish_report(report)
    summary["execution"] = report.summary()
    off = [a for a in report.achieved if a.off_by is not None and abs(a.off_by) >= 1]
    message = (
        f"{len(report.placed)} order(s) placed for {acct}, {report.fills_new} new fill(s) in the ledger; "
        f"{len(off)} target(s) off by one unit or more"
    )
    filled = [o for o in report.placed if o.filled]
    if filled:
        message += "; filled: " + ", ".join(
            f"{o.side.lower()} {number(o.filled)} {o.symbol or o.conid}"
            + (f" at {money(o.avg_price, o.currency)}" if o.avg_price is not None else "")
            for o in filled[:5]
        )
        message += f" and {len(filled) - 5} more" if len(filled) > 5 else ""
    if report.fills_missing:
        message += (
            f"; fills of {len(report.fills_missing)} order(s) not yet in IBKR's trades "
            "(the next reconciliation books them)"
        )
    if report.timed_out:
        return Failed(
            message=f"{message}; not all orders filled within {params.fill_timeout:g} s "
            f"(cancel requested for {len(report.cancelled)})",
            data=summary,
        )
    return Completed(message=message, data=summary)

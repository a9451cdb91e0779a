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
   after some orders were placed cancels this run's still-working orders, and only those;
6. emits ``ibkr.rebalance.completed`` or ``ibkr.rebalance.failed`` (and ``ibkr.rebalance.order.filled``
   per traded order) with the account as resource.

The tasks are in :mod:`ibkr_tasks.tasks.rebalance`, artifacts, messages and events in
:mod:`ibkr_tasks.rebalance.report`: this module only composes them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, cast

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field, ValidationError

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.connect import ibkr_client, open_ledger
from ibkr_tasks.errors import IBKRError, LiveAccountRefused, RebalanceRefused
from ibkr_tasks.models import OrderRequest, TimeInForce
from ibkr_tasks.rebalance import (
    PricingMode,
    RebalanceParams,
    build_plan,
    check_plan,
    ensure_account_allowed,
    plan_from_orders,
)
from ibkr_tasks.rebalance.execute import RebalanceFailed, execute_plan
from ibkr_tasks.rebalance.params import as_decimal
from ibkr_tasks.rebalance.report import (
    RunResult,
    emit_events,
    execution_message,
    plan_lines,
    publish_plan,
    publish_report,
)
from ibkr_tasks.tasks import refresh_session
from ibkr_tasks.tasks.rebalance import gather_rebalance_inputs, placing_with, record_rebalance_plan


def _run_name() -> str:
    """``rebalance-DU1234567-dry-run`` / ``rebalance-DU1234567-execute``: the mode in the run list."""
    parameters = flow_run.get_parameters() or {}
    mode = "dry-run" if parameters.get("dry_run", True) else "execute"
    return f"rebalance-{str(parameters.get('account_id', '')).upper()}-{mode}"


@flow(name="rebalance", flow_run_name=_run_name, retries=0, validate_parameters=True)
async def rebalance(
    account_id: str,
    targets: dict[str, Any] = {},  # noqa: B006 -- never mutated; a literal {} is what the run form shows
    target_kind: Literal["weight", "quantity"] = "weight",
    orders: list[OrderRequest] | None = None,
    dry_run: bool = True,
    pricing: PricingMode = PricingMode.LIMIT,
    limit_offset_bps: Annotated[float, Field(ge=0)] = 10.0,
    tif: TimeInForce = TimeInForce.DAY,
    max_order_notional: Annotated[float, Field(ge=0)] | None = None,
    max_total_notional: Annotated[float, Field(ge=0)] | None = None,
    min_trade_value: Annotated[float, Field(ge=0)] = 0.0,
    liquidate_unlisted: bool = False,
    allow_live: bool = False,
    fill_timeout: Annotated[float, Field(ge=0, le=86400)] = 60.0,
    fill_poll_interval: Annotated[float, Field(gt=0)] = 5.0,
    price_max_age: Annotated[float, Field(gt=0)] = 60.0,
    allow_prior_close: bool = False,
    ledger_url: str | None = None,
    credentials: str | None = None,
    prompt_policy: str | None = None,
    allow_prompts: list[str] = [],  # noqa: B006 -- never mutated; a literal [] is what the run form shows
    run_id: str | None = None,
) -> State[Any]:
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
        prompt_policy: path of a prompt policy JSON file (a full copy of the shipped one, edited); the
            shipped policy otherwise.
        allow_prompts: prompt message ids to confirm in this run on top of the policy, e.g. ``["o451"]``
            (the order value exceeds the Total Value Limit); see docs/rebalance.md.
        run_id: id the cOIDs derive from; the flow-run id by default (keep it to resume a run safely).
    """
    try:
        params = RebalanceParams(
            account_id=account_id,
            target_kind=target_kind,
            targets=targets,
            orders=orders,
            dry_run=dry_run,
            pricing=pricing,
            limit_offset_bps=as_decimal(limit_offset_bps),
            tif=tif,
            max_order_notional=as_decimal(max_order_notional),
            max_total_notional=as_decimal(max_total_notional),
            min_trade_value=as_decimal(min_trade_value),
            liquidate_unlisted=liquidate_unlisted,
            allow_live=allow_live,
            fill_timeout=fill_timeout,
            fill_poll_interval=fill_poll_interval,
            price_max_age=price_max_age,
            allow_prior_close=allow_prior_close,
            allow_prompts=allow_prompts,
        )
    except (ValidationError, IBKRError) as exc:
        return Failed(message=f"invalid rebalance parameters: {exc}")  # no valid account: no event
    run = run_id or flow_run.get_id() or f"local-{uuid.uuid4()}"
    try:
        result = await _rebalance(
            params, run, ledger_url=ledger_url, credentials=credentials, prompt_policy=prompt_policy
        )
    except Exception as exc:  # e.g. no such credentials block: the run fails, automations still hear it
        emit_events(
            RunResult(
                params.account_id, run, params.dry_run, failed=True, message=f"{type(exc).__name__}: {exc}"
            )
        )
        raise
    emit_events(result)
    if result.failed:
        return Failed(message=result.message, data=result.data)
    return Completed(message=result.message, data=result.data)


async def _rebalance(
    params: RebalanceParams,
    run: str,
    *,
    ledger_url: str | None,
    credentials: str | None,
    prompt_policy: str | None,
) -> RunResult:
    """The run once its parameters are valid: guard, read, plan, check, then record or execute.
    Refusals and failed orders end in the result (``failed``), never as an exception."""
    logger = get_run_logger()
    acct = params.account_id
    result = RunResult(account_id=acct, run_id=run, dry_run=params.dry_run, failed=True, message="")
    try:
        ensure_account_allowed(acct, params.allow_live)  # before any request at all
    except LiveAccountRefused as exc:
        logger.error("%s", exc)
        return result.end(str(exc))

    policy = PromptPolicy.load(prompt_policy) if prompt_policy else None
    ledger = await open_ledger(ledger_url)
    logger.info("rebalance %s of %s (%s)", run, acct, "dry run" if params.dry_run else "EXECUTE")

    async with ibkr_client(credentials) as background:
        client = cast(IBKRClient, background)  # it forwards every coroutine method of IBKRClient
        await refresh_session(client)
        try:
            inputs, _positions = await gather_rebalance_inputs(client, params)
            if params.orders:
                plan = plan_from_orders(params, inputs, run, params.orders)
            else:
                plan = build_plan(params, inputs, run)
        except (RebalanceRefused, IBKRError) as exc:
            logger.error("no plan: %s", exc)
            return result.end(f"rebalance of {acct} refused: {exc}")
        result.plan = plan
        await publish_plan(plan, params.dry_run)
        logger.info("plan of %s: %s", acct, plan.describe())
        for line in plan_lines(plan):
            logger.info("%s", line)
        for warning in plan.warnings:
            logger.warning("%s", warning)
        try:
            check_plan(plan, params)
        except RebalanceRefused as exc:
            logger.error("%s", exc)
            return result.end(f"rebalance of {acct} refused: {exc}")

        data = result.plan_data()
        if params.dry_run:
            try:
                n = await record_rebalance_plan(ledger, plan)
            except IBKRError as exc:  # e.g. a repeated run_id whose cOID now carries another price
                return result.end(f"dry run of {acct}: the plan could not be stored: {exc}", data)
            return result.end(
                f"dry run: {n} order(s) planned for {acct} ({plan.describe()}), nothing sent "
                "(ledger orders, status planned)",
                data,
                failed=False,
            )
        try:
            report = await execute_plan(
                client, ledger, plan, params, place=placing_with(client), policy=policy
            )
        except RebalanceFailed as exc:
            result.report = exc.report
            await publish_report(exc.report)
            return result.end(
                f"rebalance of {acct} failed: {exc}", data | {"execution": exc.report.summary()}
            )
        except RebalanceRefused as exc:
            return result.end(f"rebalance of {acct} refused: {exc}", data)
        except IBKRError as exc:  # before any order was placed (e.g. listing working orders failed)
            return result.end(f"rebalance of {acct} failed before placing orders: {exc}", data)

    result.report = report
    await publish_report(report)
    return result.end(
        execution_message(report, params.fill_timeout),
        data | {"execution": report.summary()},
        failed=report.timed_out,
    )

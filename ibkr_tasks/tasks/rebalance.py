"""Prefect tasks of the ``rebalance`` flow (flows/rebalance.py) over :mod:`ibkr_tasks.rebalance`.

The reads retry on transient failures with the same predicate as every other read
(:mod:`ibkr_tasks.tasks.ibkr`); placing an order is the ``place_order`` task, never retried.
"""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.models import OrderRequest, OrderResult, Position
from ibkr_tasks.rebalance.execute import PlaceFn, gather_inputs, record_plan
from ibkr_tasks.rebalance.params import RebalanceParams
from ibkr_tasks.rebalance.plan import PlanInputs, RebalancePlan
from ibkr_tasks.tasks.ibkr import place_order, read_retry_delays, retry_transient

__all__ = ["gather_rebalance_inputs", "placing_with", "record_rebalance_plan"]


@task(
    name="gather-rebalance-inputs",
    task_run_name="gather-rebalance-inputs-{params.account_id}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=read_retry_delays,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
async def gather_rebalance_inputs(
    client: IBKRClient, params: RebalanceParams
) -> tuple[PlanInputs, list[Position]]:
    """Positions, net liquidation value, contract details and fresh snapshots of one account (reads only)."""
    return await gather_inputs(client, params)


@task(name="record-plan", task_run_name="record-plan-{plan.account_id}", cache_policy=NO_CACHE, retries=1)
async def record_rebalance_plan(ledger: Ledger, plan: RebalancePlan) -> int:
    """Store a dry run's planned orders in the ledger (``orders``, status ``planned``); idempotent."""
    return await asyncio.to_thread(record_plan, ledger, plan)


def placing_with(client: IBKRClient) -> PlaceFn:
    """How :func:`~ibkr_tasks.rebalance.execute.execute_plan` places an order in the flow: through the
    ``place_order`` task (one task run per order, never retried) on the flow's client."""

    async def place(
        account_id: str, order: OrderRequest, coid: str, policy: PromptPolicy | None
    ) -> OrderResult:
        return await place_order(client, account_id, order, coid, policy)

    return place

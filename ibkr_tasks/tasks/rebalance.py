"""Prefect tasks of the ``rebalance`` flow (flows/rebalance.py) over :mod:`ibkr_tasks.rebalance`."""

from __future__ import annotations

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.models import OrderRequest, OrderResult
from ibkr_tasks.rebalance.execute import PlaceFn
from ibkr_tasks.tasks.ibkr import place_order

__all__ = ["placing_with"]


def placing_with(client: IBKRClient) -> PlaceFn:
    """How :func:`~ibkr_tasks.rebalance.execute.execute_plan` places an order in the flow: through the
    ``place_order`` task (one task run per order, never retried) on the flow's client."""

    async def place(
        account_id: str, order: OrderRequest, coid: str, policy: PromptPolicy | None
    ) -> OrderResult:
        return await place_order(client, account_id, order, coid, policy)

    return place

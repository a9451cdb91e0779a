"""Rebalancing an account to targets, without Prefect: parameters, plan, guards, execution.

    from ibkr_tasks.rebalance import RebalanceParams, gather_inputs, build_plan, check_plan

The Prefect flow ``flows/rebalance.py`` wires these together; everything that decides quantities or
money is here and unit-tested without an engine. See docs/rebalance.md.
"""

from ibkr_tasks.rebalance.guards import check_plan, check_working_orders, ensure_account_allowed
from ibkr_tasks.rebalance.params import PricingMode, RebalanceParams, TargetSpec
from ibkr_tasks.rebalance.plan import (
    COID_MAX_LENGTH,
    ContractFacts,
    PlanInputs,
    PlannedOrder,
    PlanRow,
    Quote,
    RebalancePlan,
    build_plan,
    limit_price,
    make_coid,
    plan_from_orders,
    quote_from_snapshot,
    round_to_lot,
)

__all__ = [
    "COID_MAX_LENGTH",
    "ContractFacts",
    "PlanInputs",
    "PlanRow",
    "PlannedOrder",
    "PricingMode",
    "Quote",
    "RebalanceParams",
    "RebalancePlan",
    "TargetSpec",
    "build_plan",
    "check_plan",
    "check_working_orders",
    "ensure_account_allowed",
    "limit_price",
    "make_coid",
    "plan_from_orders",
    "quote_from_snapshot",
    "round_to_lot",
]

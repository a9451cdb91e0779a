"""The guards a rebalance passes before anything is sent; each refuses with a typed error.

- :func:`ensure_account_allowed` — a live (non-``DU``) account needs ``allow_live=True``. Called first,
  before any request at all, so a refused live run never even reads the account.
- :func:`check_plan` — every order is inside the targets (unless ``liquidate_unlisted``), no event
  contract is sold, and each order and the total stay within the notional limits.
- :func:`check_working_orders` — other working orders on the conids about to be traded make the plan
  wrong (they may fill on top of it): refuse instead of doubling.

Prices (missing, stale, halted, prior close) are checked while planning, in
:mod:`ibkr_tasks.rebalance.plan`, because a quantity cannot be computed without one.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from ibkr_tasks.accounts import is_paper_account
from ibkr_tasks.errors import LiveAccountRefused, RebalanceRefused
from ibkr_tasks.formatting import money, number
from ibkr_tasks.models import LiveOrder, OrderSide
from ibkr_tasks.rebalance.params import RebalanceParams
from ibkr_tasks.rebalance.plan import RebalancePlan

__all__ = ["check_plan", "check_working_orders", "ensure_account_allowed"]


def _amount(value: Decimal, currency: str | None = None) -> str:
    return money(value, currency)


def ensure_account_allowed(account_id: str, allow_live: bool) -> None:
    """Refuse a live account unless ``allow_live``; paper accounts (``DU...``) always pass."""
    if is_paper_account(account_id) or allow_live:
        return
    raise LiveAccountRefused(
        f"{account_id} is a live account (not DU...): a rebalance places real orders there. Nothing was "
        "requested from IBKR. Run a dry run first, then pass allow_live=true to trade it"
    )


def check_plan(plan: RebalancePlan, params: RebalanceParams) -> None:
    """Scope, event-contract and notional-limit guards over a finished plan."""
    if not params.liquidate_unlisted:
        outside = [o for o in plan.orders if o.origin == "unlisted"]
        if outside:
            listed = ", ".join(f"{o.conid} ({o.symbol or '?'})" for o in outside)
            raise RebalanceRefused(
                f"the plan would trade conids outside the targets: {listed}. Add them to the targets or "
                "pass liquidate_unlisted=true; nothing was sent",
                reason="unlisted_conid",
            )
    sells = [o for o in plan.orders if o.is_event_contract and o.side == OrderSide.SELL]
    if sells:
        listed = ", ".join(f"{o.conid} ({o.symbol or '?'})" for o in sells)
        raise RebalanceRefused(
            f"event contracts cannot be sold (ForecastEx): {listed}. To reduce a YES holding buy NO, and "
            "vice versa (IBKR nets the two); nothing was sent",
            reason="event_contract_sell",
        )
    if params.max_order_notional is not None:
        big = [o for o in plan.orders if o.notional > params.max_order_notional]
        if big:
            listed = "; ".join(
                f"{o.side.value.lower()} {number(o.quantity)} {o.symbol or o.conid} = {_amount(o.notional, o.currency)}"
                for o in big
            )
            raise RebalanceRefused(
                f"{len(big)} order(s) exceed max_order_notional={_amount(params.max_order_notional, plan.base_currency)}: {listed}. "
                "Raise the limit or rebalance in smaller steps; nothing was sent",
                reason="order_notional",
            )
    if params.max_total_notional is not None and plan.total_notional > params.max_total_notional:
        raise RebalanceRefused(
            f"the plan trades {_amount(plan.total_notional, plan.base_currency)} in total, more than max_total_notional="
            f"{_amount(params.max_total_notional, plan.base_currency)}. Raise the limit or rebalance in smaller steps; nothing was sent",
            reason="total_notional",
        )


def check_working_orders(
    live: Iterable[LiveOrder], plan: RebalancePlan, own_coids: Iterable[str] = ()
) -> None:
    """Refuse when orders not of this run are working on a conid the plan trades."""
    ours = set(own_coids)
    conids = {o.conid for o in plan.orders}
    clashing = [
        o
        for o in live
        if o.is_active and o.conid in conids and o.account_id == plan.account_id and o.order_ref not in ours
    ]
    if clashing:
        listed = ", ".join(f"order {o.order_id} on {o.conid} ({o.status})" for o in clashing)
        raise RebalanceRefused(
            f"{plan.account_id} has working orders on conids this plan trades: {listed}. They could fill on top "
            "of the rebalance: cancel them or wait for them, then run again; nothing was sent",
            reason="working_orders",
        )

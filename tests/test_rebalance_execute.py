"""Executing rebalance plans against the in-process simulator (no Prefect; virtual time for pacing).

Ground truth comes from the simulator's book (``/sim/truth``): the orders it really holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import OrderRejected, OrderStateUnknown, RequestFailed, UnknownPrompt
from ibkr_tasks.ledger import Ledger, OrderRow
from ibkr_tasks.models import OrderRequest, OrderSide
from ibkr_tasks.rebalance import RebalanceParams, build_plan, check_plan, plan_from_orders
from ibkr_tasks.rebalance.execute import RebalanceFailed, execute_plan, gather_inputs
from ibkr_tasks.sim import Quirks, Scenario, create_app

AAPL, MSFT = 265598, 272093
EXPIRED_OPTION = 700100001  # an AAPL option series of the simulator that expired yesterday


@dataclass
class Rig:
    app: Any
    client: IBKRClient
    clock: FakeClock
    ledger: Ledger
    account_id: str

    async def truth(self) -> dict[str, Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://sim"
        ) as http:
            response = await http.get(f"/sim/truth/{self.account_id}")
            response.raise_for_status()
            return response.json()

    def ledger_orders(self, run_id: str) -> list[OrderRow]:
        with self.ledger.session() as session:
            return list(
                session.scalars(select(OrderRow).where(OrderRow.run_id == run_id).order_by(OrderRow.id))
            )


async def make_rig(tmp_path: Any, **quirks: Any) -> Rig:
    scenario = Scenario(
        seed=11,
        accounts=1,
        positions_per_account=4,
        fills_per_account_per_day=0,
        quirks=Quirks(orders_preflight=False, event_netting=True, **quirks),
    )
    app = create_app(scenario)
    clock = FakeClock()
    settings = IBKRSettings(api_url="http://sim/v1/api", access_token="gateway-placeholder")
    transport = Transport(
        settings, http_transport=httpx.ASGITransport(app=app), clock=clock, sleep=clock.sleep
    )
    client = IBKRClient(transport, sleep=clock.sleep, clock=clock)
    (account,) = [a.account_id for a in await client.list_accounts()]
    return Rig(app, client, clock, Ledger(f"sqlite:///{tmp_path / 'ledger.db'}"), account)


@pytest.fixture
async def rig(tmp_path: Any) -> AsyncIterator[Rig]:
    rig = await make_rig(tmp_path)
    yield rig
    await rig.client.aclose()


def params(rig: Rig, **kw: Any) -> RebalanceParams:
    kw.setdefault("allow_prior_close", True)  # the tests run at any hour
    return RebalanceParams(account_id=rig.account_id, dry_run=False, **kw)


async def plan_for(rig: Rig, p: RebalanceParams, run_id: str):
    inputs, _ = await gather_inputs(rig.client, p)
    plan = plan_from_orders(p, inputs, run_id, p.orders) if p.orders else build_plan(p, inputs, run_id)
    check_plan(plan, p)
    return plan


async def test_dropped_order_response_then_retry_leaves_exactly_one_order(rig: Rig) -> None:
    p = params(rig, targets={str(AAPL): 20}, target_kind="quantity", pricing="market")
    plan = await plan_for(rig, p, "run-drop")
    (order,) = plan.orders
    rig.app.state.sim.faults.drop_next_order_responses = 1  # the order is accepted, its answer lost

    first = await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)
    # a retried task: the same plan, the same cOID, sent again
    second = await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)

    truth = await rig.truth()
    ours = [o for o in truth["orders"] if o["cOID"] == order.coid]
    assert len(ours) == 1, truth["orders"]
    assert first.orders[0].order_id == second.orders[0].order_id == ours[0]["order_id"]
    assert first.orders[0].existing and second.orders[0].existing  # found by cOID, never resent
    assert rig.app.state.sim.stats.dropped_order_responses == 1
    (row,) = rig.ledger_orders("run-drop")
    assert row.coid == order.coid and row.order_id == ours[0]["order_id"]
    position = {int(p["conid"]): Decimal(p["position"]) for p in truth["positions"]}
    assert position[AAPL] == 20  # bought once, not twice


async def test_unknown_prompt_stops_that_order_and_fails_with_its_text(tmp_path: Any) -> None:
    rig = await make_rig(tmp_path, prompt_chain_min=1, prompt_chain_max=1)
    try:
        p = params(rig, targets={str(AAPL): 5}, target_kind="quantity", pricing="market")
        plan = await plan_for(rig, p, "run-prompt")
        with pytest.raises(RebalanceFailed) as info:
            await execute_plan(
                rig.client,
                rig.ledger,
                plan,
                p,
                policy=PromptPolicy.allowing([]),  # nothing may be confirmed automatically
                sleep=rig.clock.sleep,
                clock=rig.clock,
            )
        cause = info.value.cause
        assert isinstance(cause, UnknownPrompt)
        text = " ".join(cause.text.split())  # IBKR's text, once, on one line (no "\n" escapes)
        (asked,) = cause.message_ids
        for message in (str(info.value), info.value.report.error or ""):
            assert message.count(text) == 1 and "\\n" not in message, message
            assert f'allow_prompts=["{asked}"]' in message and "prompt_policy" in message
            assert "policy=..." not in message
        truth = await rig.truth()
        assert truth["orders"] == []  # declined: nothing transmitted
        (row,) = rig.ledger_orders("run-prompt")
        assert row.status == "prompt_refused" and row.order_id is None
        assert row.prompts and row.prompts[0]["confirmed"] is False
        assert row.error is not None and row.error.count(text) == 1

        # what the hint says works: the same order again, allowing the refused prompt (the simulator
        # may ask another question next time: that one is then allowed the same way)
        allowed = [asked]
        for _attempt in range(6):
            again = p.model_copy(update={"allow_prompts": tuple(allowed)})
            try:
                report = await execute_plan(
                    rig.client,
                    rig.ledger,
                    plan,
                    again,
                    policy=PromptPolicy.allowing([]),
                    sleep=rig.clock.sleep,
                    clock=rig.clock,
                )
                break
            except RebalanceFailed as refused:
                assert isinstance(refused.cause, UnknownPrompt)
                allowed += refused.cause.message_ids
        else:
            pytest.fail(f"still refused after allowing {allowed}")
        (sent,) = (await rig.truth())["orders"]
        assert report.orders[0].order_id == sent["order_id"]
        assert report.orders[0].answered[0].split(" ")[1] == "(confirmed):"
    finally:
        await rig.client.aclose()


async def test_failure_midway_cancels_only_this_runs_working_orders(rig: Rig) -> None:
    # an order of the same account placed outside the run, still working
    outside = await rig.client.place_order(
        rig.account_id,
        OrderRequest(market_id=str(MSFT), order_side=OrderSide.BUY, size=1, price="1.00"),
        coid="manual-msft-1",
    )
    working = OrderRequest(
        market_id=str(AAPL), order_side=OrderSide.BUY, size=3, price="1.00"
    )  # never crosses
    doomed = OrderRequest(market_id=str(EXPIRED_OPTION), order_side=OrderSide.BUY, size=1, price="1.00")
    p = params(rig, orders=[working, doomed])
    plan = await plan_for(rig, p, "run-midway")

    with pytest.raises(RebalanceFailed, match="expired") as info:
        await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)

    report = info.value.report
    first = report.orders[0]
    assert first.order_id is not None and report.cancelled == [first.order_id]
    truth = {o["order_id"]: o for o in (await rig.truth())["orders"]}
    assert truth[first.order_id]["status"] == "Cancelled"
    assert truth[str(outside.order_id)]["status"] == "Submitted"  # not ours: left working
    rows = {r.coid: r for r in rig.ledger_orders("run-midway")}
    assert rows[first.coid].status == "cancel_requested"
    assert rows[report.orders[1].coid].status == "rejected"


async def test_executed_event_target_buys_the_opposite_outcome_and_books_fills(rig: Rig) -> None:
    yes, no = 713921696, 713921700
    p = params(rig, targets={str(yes): {"quantity": 15, "side": "No"}}, pricing="market")
    inputs, _ = await gather_inputs(rig.client, p)
    held_yes = inputs.positions.get(yes, Decimal(0)) - inputs.positions.get(no, Decimal(0))
    plan = build_plan(p, inputs, "run-event")
    check_plan(plan, p)
    (order,) = plan.orders
    assert order.conid == no and order.side == OrderSide.BUY and order.quantity == held_yes + 15

    report = await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)

    truth = await rig.truth()
    assert [(o["conid"], o["side"]) for o in truth["orders"]] == [(no, "BUY")]
    position = {int(x["conid"]): Decimal(x["position"]) for x in truth["positions"]}
    assert position.get(no, Decimal(0)) - position.get(yes, Decimal(0)) == 15
    (achieved,) = [a for a in report.achieved if a.conid == no]
    assert achieved.achieved == 15 and achieved.off_by == 0
    booked = [f for f in rig.ledger.fills_for(rig.account_id) if f.order_ref == order.coid]
    assert sum(f.quantity for f in booked if f.side == "B") == order.quantity


async def test_unfilled_limit_orders_are_cancelled_at_fill_timeout(rig: Rig) -> None:
    # offset 0: a buy limit at the last price (the mid) never reaches the ask in the simulator
    p = params(rig, targets={str(AAPL): 10}, target_kind="quantity", limit_offset_bps=0, fill_timeout=12)
    plan = await plan_for(rig, p, "run-timeout")
    (order,) = plan.orders
    started = rig.clock()

    report = await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)

    assert report.timed_out and report.cancelled == [report.orders[0].order_id]
    assert rig.clock() - started >= 12  # it waited (virtual time), polling live orders
    (truth,) = (await rig.truth())["orders"]
    assert truth["cOID"] == order.coid and truth["status"] == "Cancelled"
    (row,) = rig.ledger_orders("run-timeout")
    assert row.status == "cancel_requested" and "fill_timeout" in (row.error or "")
    assert report.fills_new == 0 and report.fills_missing == []


async def test_unexpected_error_after_the_order_went_out_is_resolved_by_its_coid(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator accepts the order, then reading IBKR's answer fails with an error nobody planned
    for. The order is live at the broker: the ledger keeps its order id and status, the run counts it
    as placed, and it was sent once."""
    from ibkr_tasks.client import orders as client_orders

    def broken(answer: Any) -> Any:
        raise KeyError("order_status")  # e.g. an answer shaped unlike any seen before

    monkeypatch.setattr(client_orders, "_acknowledgement", broken)
    working = OrderRequest(market_id=str(AAPL), order_side=OrderSide.BUY, size=3, price="1.00")  # rests
    doomed = OrderRequest(market_id=str(EXPIRED_OPTION), order_side=OrderSide.BUY, size=1, price="1.00")
    p = params(rig, orders=[working, doomed])
    plan = await plan_for(rig, p, "run-unexpected")
    first, second = plan.orders

    with pytest.raises(RebalanceFailed) as info:
        await execute_plan(rig.client, rig.ledger, plan, p, sleep=rig.clock.sleep, clock=rig.clock)

    truth = (await rig.truth())["orders"]
    sent = [o for o in truth if o["cOID"] == first.coid]
    assert len(sent) == 1, truth  # sent exactly once, never again after the error
    order_id = sent[0]["order_id"]
    rows = {r.coid: r for r in rig.ledger_orders("run-unexpected")}
    assert rows[first.coid].order_id == order_id
    assert rows[first.coid].status == "cancel_requested"  # this run's working order, cancelled on stop
    report = info.value.report
    assert report.orders[0].order_id == order_id and report.cancelled == [order_id]
    assert "1 order(s) of this run had been placed" in str(info.value)
    assert second.coid in str(info.value) and "expired" in str(info.value)


class Placer:
    """A ``place`` that fails the way a test says, after sending the order (``send``) or not."""

    def __init__(self, rig: Rig, error: Exception, *, send: bool) -> None:
        self.rig, self.error, self.send, self.calls = rig, error, send, 0

    async def __call__(self, account_id: str, order: OrderRequest, coid: str, policy: Any) -> Any:
        self.calls += 1
        if self.send:
            await self.rig.client.place_order(account_id, order, coid=coid, policy=policy)
        raise self.error


def count_lookups(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cOIDs looked up at IBKR (live orders, then trades) from now on."""
    looked_up: list[str] = []
    find = rig.client.orders.find_by_coid

    async def counting(account_id: str, coid: str) -> Any:
        looked_up.append(coid)
        return await find(account_id, coid)

    monkeypatch.setattr(rig.client.orders, "find_by_coid", counting)
    return looked_up


AMBIGUOUS = [
    pytest.param(OrderStateUnknown("no answer from IBKR; not in live orders yet"), id="state-unknown"),
    pytest.param(
        RequestFailed(
            "POST /orders: no answer (ReadTimeout)", method="POST", path="/orders", maybe_sent=True
        ),
        id="read-timeout",
    ),
    pytest.param(RuntimeError("the task runner lost the result"), id="unexpected"),
]


@pytest.mark.parametrize("error", AMBIGUOUS)
async def test_ambiguous_placement_found_by_coid_is_recorded_once_and_never_resent(
    rig: Rig, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order reached IBKR, then placing raised an error that does not say whether it did: it is
    looked up by its cOID, recorded with IBKR's id and status, counted as placed, and the run goes on
    to book its fill. It is sent once."""
    p = params(rig, targets={str(AAPL): 20}, target_kind="quantity", pricing="market")
    plan = await plan_for(rig, p, "run-ambiguous")
    (order,) = plan.orders
    place = Placer(rig, error, send=True)
    looked_up = count_lookups(rig, monkeypatch)

    report = await execute_plan(
        rig.client, rig.ledger, plan, p, place=place, sleep=rig.clock.sleep, clock=rig.clock
    )

    assert place.calls == 1 and looked_up == [order.coid]
    truth = await rig.truth()
    (sent,) = [o for o in truth["orders"] if o["cOID"] == order.coid]
    (row,) = rig.ledger_orders("run-ambiguous")
    assert row.order_id == sent["order_id"] and row.status == "filled"  # this project's word
    assert row.ibkr_status == sent["status"] == "Filled"  # and IBKR's, as it said it
    assert type(error).__name__ in (row.error or "") and "found by its cOID" in (row.error or "")
    assert [o.order_id for o in report.placed] == [sent["order_id"]] and report.orders[0].existing
    booked = [f for f in rig.ledger.fills_for(rig.account_id) if f.order_ref == order.coid]
    assert sum(f.quantity for f in booked) == order.quantity


@pytest.mark.parametrize(
    ("error", "status", "looked_up"),
    [
        pytest.param(OrderStateUnknown("no answer from IBKR"), "unknown", True, id="state-unknown"),
        pytest.param(RuntimeError("the task runner crashed"), "error", True, id="unexpected"),
        pytest.param(
            RequestFailed("POST /orders: could not connect", method="POST", path="/orders", maybe_sent=False),
            "error",
            False,
            id="never-left",
        ),
        pytest.param(
            OrderRejected("IBKR rejected order: no trading permission"), "rejected", False, id="rejected"
        ),
    ],
)
async def test_failed_placement_not_at_ibkr_is_reported_and_not_resent(
    rig: Rig, error: Exception, status: str, looked_up: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placing failed and IBKR does not have the order: the run stops and says so, the ledger row
    keeps the status and the error, and nothing is sent again. Only an error that may have come after
    sending is looked up by cOID."""
    p = params(rig, targets={str(AAPL): 20}, target_kind="quantity", pricing="market")
    plan = await plan_for(rig, p, "run-not-there")
    (order,) = plan.orders
    place = Placer(rig, error, send=False)
    lookups = count_lookups(rig, monkeypatch)

    with pytest.raises(RebalanceFailed) as info:
        await execute_plan(
            rig.client, rig.ledger, plan, p, place=place, sleep=rig.clock.sleep, clock=rig.clock
        )

    assert place.calls == 1 and lookups == ([order.coid] if looked_up else [])
    assert info.value.cause is error and str(error) in str(info.value)
    assert (await rig.truth())["orders"] == []
    (row,) = rig.ledger_orders("run-not-there")
    assert row.status == status and row.order_id is None and str(error) in (row.error or "")
    assert info.value.report.placed == []


async def test_resumed_run_whose_ledger_refuses_a_changed_order_says_why(rig: Rig) -> None:
    """The same run id with a changed price gives the same cOID with another request: the ledger
    refuses it before anything is sent, and the run's message carries that cause."""
    p = params(
        rig, orders=[OrderRequest(market_id=str(AAPL), order_side=OrderSide.BUY, size=3, price="1.00")]
    )
    plan = await plan_for(rig, p, "run-resumed")
    await execute_plan(
        rig.client,
        rig.ledger,
        plan,
        p.model_copy(update={"fill_timeout": 0}),
        sleep=rig.clock.sleep,
        clock=rig.clock,
    )
    changed = params(
        rig, orders=[OrderRequest(market_id=str(AAPL), order_side=OrderSide.BUY, size=3, price="1.01")]
    )
    replan = await plan_for(rig, changed, "run-resumed")
    assert replan.orders[0].coid == plan.orders[0].coid

    with pytest.raises(RebalanceFailed) as info:
        await execute_plan(rig.client, rig.ledger, replan, changed, sleep=rig.clock.sleep, clock=rig.clock)

    message = str(info.value)
    assert "None" not in message
    assert "LedgerError" in message and "different request" in message
    assert info.value.report.error and "different request" in info.value.report.error
    assert len((await rig.truth())["orders"]) == 1  # nothing sent again

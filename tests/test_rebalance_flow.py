"""The ``rebalance`` flow through Prefect against the simulator served on loopback.

All flow tests live in this module (the Prefect test server costs ~10 s once per session). The plan,
guards and execution details are tested without Prefect in test_rebalance_plan.py and
test_rebalance_execute.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import select

from flows.rebalance import rebalance
from ibkr_tasks.ledger import Ledger, OrderRow
from ibkr_tasks.rebalance.report import EVENT_COMPLETED, EVENT_FAILED, EVENT_ORDER_FILLED
from ibkr_tasks.reporting import artifact_key
from ibkr_tasks.sim import Quirks, Scenario
from ibkr_tasks.testing import SimulatorHandle, running_simulator

pytestmark = pytest.mark.usefixtures("prefect_harness")

AAPL, SPY = 265598, 756733
YES, NO = 713921696, 713921700


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorHandle]:
    scenario = Scenario(
        seed=5,
        accounts=1,
        live_account=True,
        positions_per_account=4,
        fills_per_account_per_day=0,
        # a dropped order response hangs 1 s, then the served simulator answers 504 (a gateway timeout)
        quirks=Quirks(orders_preflight=False, event_netting=True, drop_delay_seconds=1.0),
    )
    with running_simulator(scenario) as handle:
        monkeypatch.setenv("IBKR_API_URL", handle.api_url)
        monkeypatch.setenv("IBKR_ACCESS_TOKEN", "gateway-placeholder")
        monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
        yield handle


@pytest.fixture
async def emitted(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[], Awaitable[list[Any]]]]:
    """The Prefect events a test's runs emit, recorded on their way to the test server."""
    from prefect.events.clients import AssertingPassthroughEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_a, **_k: worker)

    async def drained() -> list[Any]:
        await worker.drain()  # waits until every event emitted so far went through the client
        client = AssertingPassthroughEventsClient.last
        assert client is not None
        return [e for e in client.events if e.event.startswith("ibkr.")]

    try:
        yield drained
    finally:
        await worker.drain()  # also when the test failed before reading the events
        AssertingPassthroughEventsClient.reset()


def accounts(sim: SimulatorHandle) -> tuple[str, str]:
    """(paper, live) account ids of the simulated login."""
    response = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30)  # control endpoint: not counted
    response.raise_for_status()
    kinds = {a["account_id"]: a["kind"] for a in response.json()}
    paper = next(a for a, kind in kinds.items() if kind == "paper")
    live = next(a for a, kind in kinds.items() if kind == "live")
    return paper, live


def positions(sim: SimulatorHandle, account_id: str) -> dict[int, Decimal]:
    return {int(p["conid"]): Decimal(p["position"]) for p in sim.truth(account_id)["positions"]}


def order_rows(ledger_url: str, run_id: str) -> list[OrderRow]:
    with Ledger(ledger_url).session() as session:
        return list(session.scalars(select(OrderRow).where(OrderRow.run_id == run_id)))


async def artifact(key: str) -> dict[str, Any] | None:
    """The newest artifact with ``key`` from the Prefect API (None when absent).

    Read with a plain POST: with prefect 3.8.8 and fastapi 0.154, ``Artifact.get`` sends ``null``
    flow/task-run filters that the server answers 422, and empty ones match no flow-level artifact.
    """
    async with httpx.AsyncClient(base_url=str(PREFECT_API_URL.value()), timeout=30) as http:
        response = await http.post(
            "/artifacts/filter",
            json={"artifacts": {"key": {"any_": [key]}}, "sort": "UPDATED_DESC", "limit": 1},
        )
        response.raise_for_status()
        found = response.json()
    return found[0] if found else None


async def run(**kw: Any):
    kw.setdefault("allow_prior_close", True)  # the suite runs at any hour
    return await rebalance(return_state=True, **kw)


async def run_name(state: Any) -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(state.state_details.flow_run_id)).name


def table(artifact_row: dict[str, Any] | None) -> list[dict[str, Any]]:
    import json

    assert artifact_row is not None
    data = artifact_row["data"]
    return list(json.loads(data) if isinstance(data, str) else data)


async def test_dry_run_places_nothing_stores_the_plan_and_publishes_it(
    sim: SimulatorHandle, tmp_path
) -> None:
    paper, _ = accounts(sim)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    state = await run(account_id=paper, targets={str(AAPL): 0.05, str(SPY): 0.05}, ledger_url=ledger_url)

    assert state.is_completed(), state.message
    assert sim.truth(paper)["orders"] == []
    assert sim.stats()["requests"].get("POST /iserver/account/{acct}/orders", 0) == 0
    data = await state.result()
    planned = {o["conid"]: o for o in data["orders"]}
    assert set(planned) == {AAPL, SPY}

    plan = await artifact(artifact_key("rebalance-plan", paper))
    assert plan is not None and plan["type"] == "table"
    assert str(AAPL) in plan["data"] and "notional" in plan["data"]
    assert await run_name(state) == f"rebalance-{paper}-dry-run"
    rows = {r["conid"]: r for r in table(plan)}
    assert list(rows[AAPL])[:4] == ["conid", "symbol", "action", "cOID"]
    assert rows[AAPL]["cOID"] == planned[AAPL]["coid"] and rows[AAPL]["price is"] == "limit"
    assert rows[AAPL]["type"] == "LMT" and rows[AAPL]["tif"] == "DAY"
    assert all("E+" not in v and v != "None" for r in rows.values() for v in map(str, r.values()))
    assert re.search(r"NLV [\d,]+\.\d\d [A-Z]{3}", plan["description"]), plan["description"]
    assert "NLV" in (state.message or "")

    rows = order_rows(ledger_url, data["run_id"])
    assert {r.coid for r in rows} == {o["coid"] for o in data["orders"]}
    assert {r.status for r in rows} == {"planned"} and all(r.order_id is None for r in rows)

    # explicit Horizon-style orders computed elsewhere go through the same plan, guards and ledger
    explicit = [{"market_id": str(YES), "order_side": "Buy", "price": "0.40", "size": 7, "side": "No"}]
    state = await run(account_id=paper, orders=explicit, ledger_url=ledger_url)
    assert state.is_completed(), state.message
    data = await state.result()
    (order,) = data["orders"]
    assert order["conid"] == NO and order["side"] == "Buy" and order["quantity"] == "7"
    assert sim.truth(paper)["orders"] == []


async def test_executed_rebalance_reaches_targets_and_books_fills(
    sim: SimulatorHandle, tmp_path, emitted: Callable[[], Awaitable[list[Any]]]
) -> None:
    paper, _ = accounts(sim)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    before = positions(sim, paper)
    state = await run(
        account_id=paper,
        targets={str(AAPL): {"quantity": 30}, str(YES): {"quantity": 12, "side": "Yes"}},
        dry_run=False,
        pricing="market",
        max_order_notional=100000,
        ledger_url=ledger_url,
    )

    assert state.is_completed(), state.message
    after = positions(sim, paper)
    assert abs(after.get(AAPL, Decimal(0)) - 30) <= 1
    assert abs(after.get(YES, Decimal(0)) - after.get(NO, Decimal(0)) - 12) <= 1
    truth_orders = sim.truth(paper)["orders"]
    assert all(o["side"] == "BUY" for o in truth_orders if o["conid"] in (YES, NO))  # never sold
    held_no = before.get(NO, Decimal(0)) - before.get(YES, Decimal(0))
    if held_no + 12 > 0:
        assert [o["conid"] for o in truth_orders if o["conid"] in (YES, NO)] == [YES]

    data = await state.result()
    coids = {o["coid"] for o in data["orders"]}
    assert coids == {o["cOID"] for o in truth_orders}
    booked = [f for f in Ledger(ledger_url).fills_for(paper) if f.order_ref in coids]
    assert {f.order_ref for f in booked} == coids
    assert {(r.status, r.ibkr_status) for r in order_rows(ledger_url, data["run_id"])} == {
        ("filled", "Filled")
    }
    result = await artifact(artifact_key("rebalance-result", paper))
    assert result is not None and str(AAPL) in result["data"] and "achieved" in result["data"]
    assert await run_name(state) == f"rebalance-{paper}-execute"
    orders = table(await artifact(artifact_key("rebalance-orders", paper)))
    assert orders and all(o["status"] == "Filled" for o in orders)
    for o in orders:  # what filled, at which average price, in which currency
        assert o["filled"] == o["quantity"], o
        assert re.fullmatch(r"[\d,]+\.\d{2,} [A-Z]{3}", o["avg price"]), o
    assert "filled: buy " in (state.message or "")

    # events: one per filled order, then the run's; the account is the resource, the summary is
    # shown by the UI as a related resource
    events = await emitted()
    assert [e.event for e in events] == [EVENT_ORDER_FILLED] * len(orders) + [EVENT_COMPLETED]
    assert {e.resource.id for e in events} == {f"ibkr.account.{paper}"}
    for event in events:
        assert f"ibkr.summary: {event.payload['summary']}" in [r.id for r in event.related]
    by_coid = {o["cOID"]: o for o in orders}
    for event in events[:-1]:
        p = event.payload
        row = by_coid[p["coid"]]
        assert p["account_id"] == paper and p["mode"] == "execute"
        assert int(p["conid"]) == row["conid"] and p["symbol"] == row["symbol"] and p["side"] == row["side"]
        assert Decimal(p["quantity"]) == Decimal(row["filled"].replace(",", ""))
        assert Decimal(p["avg_price"]) > 0 and p["currency"] == "USD"
        assert p["summary"].startswith(f"{paper}: buy {row['filled']} {row['symbol']} at ")
    done = events[-1].payload
    assert done["mode"] == "execute" and done["account_id"] == paper and done["run_id"] == data["run_id"]
    assert (done["orders_placed"], done["orders_filled"], done["orders_failed"]) == (
        len(orders),
        len(orders),
        0,
    )
    assert done["summary"].startswith(f"rebalance {paper} execute completed: {len(orders)} of ")


async def test_live_account_without_allow_live_is_refused_before_any_request(
    sim: SimulatorHandle, tmp_path
) -> None:
    _, live = accounts(sim)
    sent_before = sim.stats()["requests_total"]
    state = await run(
        account_id=live, targets={str(AAPL): 0.1}, dry_run=False, ledger_url=f"sqlite:///{tmp_path / 'l.db'}"
    )
    assert state.is_failed()
    assert "allow_live" in (state.message or "")
    assert sim.stats()["requests_total"] == sent_before  # not one request, let alone an order
    assert sim.truth(live)["orders"] == []


async def test_oversize_order_is_refused_and_nothing_is_sent(
    sim: SimulatorHandle, tmp_path, emitted: Callable[[], Awaitable[list[Any]]]
) -> None:
    paper, _ = accounts(sim)
    state = await run(
        account_id=paper,
        targets={str(AAPL): 0.2},
        dry_run=False,
        max_order_notional=1000,
        ledger_url=f"sqlite:///{tmp_path / 'l.db'}",
    )
    assert state.is_failed()
    assert "max_order_notional" in (state.message or "")
    assert sim.truth(paper)["orders"] == []
    assert sim.stats()["requests"].get("POST /iserver/account/{acct}/orders", 0) == 0
    (event,) = await emitted()
    assert event.event == EVENT_FAILED and event.resource.id == f"ibkr.account.{paper}"
    assert event.payload["mode"] == "execute" and event.payload["orders_placed"] == 0
    assert event.payload["orders_planned"] == 1 and "max_order_notional" in event.payload["summary"]
    assert f"ibkr.summary: {event.payload['summary']}" in [r.id for r in event.related]


async def test_dropped_order_response_leaves_exactly_one_order_also_when_run_again(
    sim: SimulatorHandle, tmp_path
) -> None:
    paper, _ = accounts(sim)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    sim.faults(drop_next_order_response=1)  # accepted at the simulator, the answer never arrives
    kw: dict[str, Any] = {
        "account_id": paper,
        "targets": {str(AAPL): 7},
        "target_kind": "quantity",
        "pricing": "market",
        "dry_run": False,
        "ledger_url": ledger_url,
        "run_id": "rebalance-drop-test",
    }
    first = await run(**kw)
    again = await run(**kw)  # the same run again: same cOIDs, nothing new to buy

    assert first.is_completed(), first.message
    assert again.is_completed(), again.message
    assert sim.stats()["dropped_order_responses"] == 1
    orders = sim.truth(paper)["orders"]
    assert len(orders) == 1 and orders[0]["conid"] == AAPL
    assert positions(sim, paper)[AAPL] == 7
    (row,) = order_rows(ledger_url, "rebalance-drop-test")
    assert row.coid == orders[0]["cOID"] and row.order_id == orders[0]["order_id"]


async def test_unknown_prompt_fails_the_run_with_its_text_and_places_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    scenario = Scenario(
        seed=5,
        accounts=1,
        positions_per_account=2,
        fills_per_account_per_day=0,
        quirks=Quirks(orders_preflight=False, prompt_chain_min=1, prompt_chain_max=1),
    )
    policy = tmp_path / "policy.json"
    policy.write_text('{"prompts": {}}')  # nothing may be confirmed automatically
    with running_simulator(scenario) as handle:
        monkeypatch.setenv("IBKR_API_URL", handle.api_url)
        monkeypatch.setenv("IBKR_ACCESS_TOKEN", "gateway-placeholder")
        monkeypatch.setenv("IBKR_RATE_LIMIT_BACKEND", "local")
        response = httpx.get(f"{handle.base_url}/sim/accounts", timeout=30)
        paper = next(a["account_id"] for a in response.json() if a["kind"] == "paper")
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        state = await run(
            account_id=paper,
            targets={str(AAPL): 3},
            target_kind="quantity",
            pricing="market",
            dry_run=False,
            prompt_policy=str(policy),
            ledger_url=ledger_url,
            run_id="rebalance-prompt-test",
        )
        assert state.is_failed()
        assert "Are you sure you want to submit this order?" in (state.message or "")
        assert handle.truth(paper)["orders"] == []
        (row,) = order_rows(ledger_url, "rebalance-prompt-test")
        assert row.status == "prompt_refused" and row.prompts[0]["confirmed"] is False
        (order,) = table(await artifact(artifact_key("rebalance-orders", paper)))
        asked = row.prompts[0]["message_ids"][0]
        opening = " ".join(row.prompts[0]["messages"][0].split())[:40]
        assert order["prompts"].startswith(f"{asked} (declined): {opening}"), order

        # the failure artifact: IBKR's text once, line by line, and the flow parameter that allows it
        failure = await artifact(artifact_key("rebalance-failure", paper))
        assert failure is not None and failure["type"] == "markdown"
        markdown = failure["data"]
        assert "\\n" not in markdown
        for line in filter(None, (x.strip() for x in row.prompts[0]["messages"][0].splitlines())):
            assert markdown.count(line) == 1 and f"> {line}" in markdown, markdown
        assert f'`allow_prompts=["{asked}"]`' in markdown and "`prompt_policy`" in markdown
        assert "policy=..." not in markdown
        assert f'allow_prompts=["{asked}"]' in (state.message or "")


async def test_unexpected_error_after_the_order_was_accepted_still_records_it_as_placed(
    sim: SimulatorHandle, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IBKR accepts the order, then reading its answer raises an error no handler expects: the run
    finds the order by its cOID, records the broker's id and status, and counts it as placed."""
    from ibkr_tasks.client import orders as client_orders

    def unreadable(answer: Any) -> Any:
        raise KeyError("order_status")

    monkeypatch.setattr(client_orders, "_acknowledgement", unreadable)
    paper, _ = accounts(sim)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    state = await run(
        account_id=paper,
        targets={str(AAPL): 4},
        target_kind="quantity",
        pricing="market",
        dry_run=False,
        ledger_url=ledger_url,
        run_id="rebalance-unexpected-test",
    )

    assert state.is_completed(), state.message
    assert (state.message or "").startswith(f"1 order(s) placed for {paper}")
    (sent,) = sim.truth(paper)["orders"]  # sent exactly once
    (row,) = order_rows(ledger_url, "rebalance-unexpected-test")
    assert row.coid == sent["cOID"] and row.order_id == sent["order_id"]
    assert row.status == "filled" and row.ibkr_status == sent["status"] == "Filled"
    assert "KeyError" in (row.error or "") and "found by its cOID" in (row.error or "")
    assert positions(sim, paper)[AAPL] == 4


async def test_resumed_run_with_a_changed_order_fails_naming_the_cause(
    sim: SimulatorHandle, tmp_path
) -> None:
    paper, _ = accounts(sim)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    kw: dict[str, Any] = {
        "account_id": paper,
        "dry_run": False,
        "ledger_url": ledger_url,
        "run_id": "rebalance-resume-test",
        "fill_timeout": 0,
    }
    order = {"market_id": str(AAPL), "order_side": "Buy", "size": 2, "price": "1.00"}  # rests, unfilled
    first = await run(orders=[order], **kw)
    resumed = await run(orders=[{**order, "price": "1.01"}], **kw)  # same cOID, another request

    assert first.message and "1 order(s) placed" in first.message
    assert resumed.is_failed()
    assert "None" not in (resumed.message or "")
    assert "different request" in (resumed.message or ""), resumed.message
    assert len(sim.truth(paper)["orders"]) == 1


async def test_a_run_that_raises_still_emits_its_failed_event(
    emitted: Callable[[], Awaitable[list[Any]]], tmp_path
) -> None:
    state = await run(
        account_id="DU1234567",
        targets={str(AAPL): 0.1},
        credentials="no-such-block",
        ledger_url=f"sqlite:///{tmp_path / 'l.db'}",
    )
    assert state.is_failed() and "no-such-block" in (state.message or "")
    (event,) = await emitted()
    assert event.event == EVENT_FAILED and event.resource.id == "ibkr.account.DU1234567"
    assert event.payload["mode"] == "dry-run" and "no-such-block" in event.payload["summary"]

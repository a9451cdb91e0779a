"""The simulated brokerage: determinism, ground truth consistent with the API, orders, paging, clock."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ibkr_tasks.accounts import is_paper_account
from ibkr_tasks.sim import Scenario, create_app
from ibkr_tasks.sim.commissions import commission_for
from ibkr_tasks.sim.testing import FakeTime, sim_client

API = "/v1/api"
SIGN = {"B": 1, "S": -1, "X": -1, "N": -1}


async def snapshot_everything(app: Any) -> list[bytes]:
    """Raw bytes of the payloads a client reads, for byte-for-byte comparison."""
    out = []
    async with sim_client(app) as c:
        out.append((await c.get(f"{API}/iserver/accounts")).content)
        out.append((await c.get(f"{API}/portfolio/accounts")).content)
        out.append((await c.get(f"{API}/iserver/account/trades", params={"days": 7})).content)
        for acct in app.sim.book.accounts:
            out.append((await c.get(f"{API}/portfolio/{acct}/positions/0")).content)
            out.append((await c.get(f"/sim/truth/{acct}")).content)
        await c.post("/sim/advance", json={"days": 1})
        out.append((await c.get(f"{API}/iserver/account/trades", params={"days": 2})).content)
    return out


async def test_same_seed_same_payloads_and_another_seed_differs() -> None:
    scenario = Scenario.demo()
    a = await snapshot_everything(create_app(scenario, **FakeTime().kwargs()))
    b = await snapshot_everything(create_app(scenario, **FakeTime().kwargs()))
    c = await snapshot_everything(create_app(scenario.model_copy(update={"seed": 8}), **FakeTime().kwargs()))
    assert a == b
    assert a[2] != c[2] and a[0] != c[0]


async def test_account_kinds_on_one_login() -> None:
    app = create_app(Scenario(accounts=4, fa=True, live_account=True), **FakeTime().kwargs())
    async with sim_client(app) as c:
        ids = (await c.get(f"{API}/iserver/accounts")).json()["accounts"]
        portfolio = (await c.get(f"{API}/portfolio/accounts")).json()
        subs = (await c.get(f"{API}/portfolio/subaccounts")).json()
    masters = [i for i in ids if i.startswith("DF")]
    paper = [i for i in ids if i.startswith("DU")]
    live = [i for i in ids if i.startswith("U")]
    assert len(masters) == 1 and len(paper) == 4 and len(live) == 1
    assert any(i[2].isalpha() for i in paper), "paper ids with a letter after DU (e.g. DUO873728)"
    assert all(is_paper_account(i) for i in paper + masters) and not is_paper_account(live[0])
    assert {s["accountId"] for s in subs} == set(paper)
    assert all(s["faclient"] is True and s["parent"]["accountId"] == masters[0] for s in subs)
    assert {p["id"] for p in portfolio} == set(ids)


async def all_positions(c: httpx.AsyncClient, acct: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 0
    while True:
        batch = (await c.get(f"{API}/portfolio/{acct}/positions/{page}")).json()
        rows.extend(batch)
        if len(batch) < 100:
            return rows
        page += 1


async def test_positions_pages_of_100_from_zero_then_empty() -> None:
    app = create_app(Scenario(accounts=1, positions_per_account=250), **FakeTime().kwargs())
    acct = app.sim.book.trading_accounts()[0].account_id
    async with sim_client(app) as c:
        sizes = [len((await c.get(f"{API}/portfolio/{acct}/positions/{p}")).json()) for p in range(4)]
        truth = (await c.get(f"/sim/truth/{acct}")).json()
        beyond = (await c.get(f"{API}/portfolio/{acct}/positions/99")).json()
    assert sizes[:2] == [100, 100] and 0 < sizes[2] < 100 and sizes[3] == 0
    assert sum(sizes) == len(truth["positions"])
    assert beyond == []


async def test_truth_matches_positions_and_trades_and_fills_move_positions() -> None:
    scenario = Scenario.demo()
    app = create_app(scenario, **FakeTime().kwargs())
    async with sim_client(app) as c:
        accounts = [a.account_id for a in app.sim.book.trading_accounts()]
        before = {a: (await c.get(f"/sim/truth/{a}")).json() for a in accounts}
        await c.get(f"{API}/iserver/account/trades", params={"days": 7})  # publishes corrections etc.
        await c.post("/sim/advance", json={"days": 1})
        after = {a: (await c.get(f"/sim/truth/{a}")).json() for a in accounts}
        rows = (await c.get(f"{API}/iserver/account/trades", params={"days": 1})).json()
        for acct in accounts:
            truth = after[acct]
            # positions endpoint == truth
            api_pos = {r["conid"]: Decimal(str(r["position"])) for r in await all_positions(c, acct)}
            assert api_pos == {p["conid"]: Decimal(p["position"]) for p in truth["positions"]}
            # the trades payload carries exactly the truth's executions of today (+ junk rows)
            mine = {r["execution_id"]: r for r in rows if r.get("account") == acct and "execution_id" in r}
            today = {
                e["execution_id"]: e
                for e in truth["executions"]
                if e["trade_time"][:10] == truth["as_of"][:10]
            }
            assert today and set(today) == set(mine)
            for eid, e in today.items():
                assert Decimal(mine[eid]["price"]) == Decimal(e["price"])
                assert Decimal(str(mine[eid]["size"])) == Decimal(e["size"])
                shown = mine[eid].get("commission")
                assert (None if shown is None else Decimal(shown)) == (
                    None if e["commission"] is None else Decimal(e["commission"])
                )
            # positions moved by exactly the new, non-superseded executions
            old_ids = {e["execution_id"] for e in before[acct]["executions"]}
            moved: dict[int, Decimal] = {
                p["conid"]: Decimal(p["position"]) for p in before[acct]["positions"]
            }
            for e in truth["executions"]:
                eid = e["execution_id"]
                if eid in old_ids or e["superseded"] or (eid.endswith(".02") and eid[:-2] + "01" in old_ids):
                    continue  # already counted, or replaced by its correction (same size, new price)
                moved[e["conid"]] = moved.get(e["conid"], Decimal(0)) + SIGN[e["side"]] * Decimal(e["size"])
            assert {k: v for k, v in moved.items() if v} == {
                p["conid"]: Decimal(p["position"]) for p in truth["positions"]
            }


async def test_trade_times_never_in_the_simulators_future_and_clock_never_behind_wall() -> None:
    fake = FakeTime()
    app = create_app(Scenario(accounts=2, fills_per_account_per_day=50), **fake.kwargs())
    async with sim_client(app) as c:
        for step in ({"seconds": 3600}, {"days": 1}, {"seconds": 1}):
            await c.post("/sim/advance", json=step)
            fake.tick(10)
            now = app.sim.clock.now()
            assert now >= fake.wall()
            rows = (await c.get(f"{API}/iserver/account/trades", params={"days": 7})).json()
            latest = max(r["trade_time_r"] for r in rows)
            assert latest <= now.timestamp() * 1000
        assert (await c.post("/sim/advance", json={"seconds": -5})).status_code == 400


async def test_trades_days_window_and_account_filter() -> None:
    app = create_app(Scenario(accounts=3, history_days=5, fills_per_account_per_day=6), **FakeTime().kwargs())
    first = app.sim.book.trading_accounts()[0].account_id
    async with sim_client(app) as c:
        counts = [
            len((await c.get(f"{API}/iserver/account/trades", params={"days": d})).json())
            for d in (1, 3, 5, 7)
        ]
        one = (await c.get(f"{API}/iserver/account/trades", params={"days": 7, "accountId": first})).json()
    assert counts[0] < counts[1] < counts[2] == counts[3]
    assert {r["account"] for r in one} == {first}
    days = {r["trade_time"][:8] for r in one}
    assert len(days) == 5


async def trade_accounts(c: httpx.AsyncClient, **params: Any) -> set[str]:
    rows = (await c.get(f"{API}/iserver/account/trades", params={"days": 7, **params})).json()
    return {r["account"] for r in rows}


async def test_multi_account_login_answers_trades_for_the_selected_account_only() -> None:
    """Not an FA master: the trades answer is the selected account's; ``POST /iserver/account`` and a
    trades ``accountId`` select another one (and it stays selected)."""
    app = create_app(Scenario(accounts=3, fills_per_account_per_day=6), **FakeTime().kwargs())
    first, second, third = (a.account_id for a in app.sim.book.trading_accounts())
    async with sim_client(app) as c:
        assert (await c.get(f"{API}/iserver/accounts")).json()["selectedAccount"] == first
        assert await trade_accounts(c) == {first}
        switched = (await c.post(f"{API}/iserver/account", json={"acctId": second})).json()
        assert switched == {"set": True, "acctId": second}
        assert await trade_accounts(c) == {second}
        assert (await c.get(f"{API}/iserver/accounts")).json()["selectedAccount"] == second
        assert await trade_accounts(c, accountId=third) == {third}
        assert await trade_accounts(c) == {third}
        await c.post(f"{API}/iserver/auth/ssodh/init", json={"publish": True, "compete": True})
        await c.get(f"{API}/iserver/accounts")
        assert await trade_accounts(c) == {first}  # a new brokerage session selects the default again
        bad = await c.get(f"{API}/iserver/account/trades", params={"accountId": "DU0000000"})
        assert bad.status_code == 400


async def test_fa_master_answers_trades_for_its_sub_accounts() -> None:
    app = create_app(Scenario(accounts=3, fa=True, live_account=True), **FakeTime().kwargs())
    book = app.sim.book
    master = next(a.account_id for a in book.accounts.values() if a.kind == "master")
    clients = {a.account_id for a in book.trading_accounts() if a.faclient}
    async with sim_client(app) as c:
        assert (await c.get(f"{API}/iserver/accounts")).json()["selectedAccount"] == master
        assert await trade_accounts(c) == clients  # the live account is not one of the master's clients
        one = next(iter(clients))
        assert await trade_accounts(c, accountId=one) == {one}
        assert await trade_accounts(c) == {one}  # the sub-account stays selected ...
        await c.post(f"{API}/iserver/account", json={"acctId": master})
        assert await trade_accounts(c) == clients  # ... until the master is selected again


def _ticket(**kw: Any) -> dict[str, Any]:
    base = {"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 10}
    base.update(kw)
    return {"orders": [base]}


async def test_market_order_fills_at_once_with_commission_from_the_schedule() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    acct = app.sim.book.trading_accounts()[0].account_id
    async with sim_client(app) as c:
        ack = (
            await c.post(f"{API}/iserver/account/{acct}/orders", json=_ticket(cOID="mkt-1", quantity=300))
        ).json()
        assert ack[0]["order_status"] == "Filled"
        rows = [
            r for r in (await c.get(f"{API}/iserver/account/trades")).json() if r.get("order_ref") == "mkt-1"
        ]
    assert sum(r["size"] for r in rows) == 300
    assert all(r["order_id"] == int(ack[0]["order_id"]) and r["side"] == "B" for r in rows)
    for r in rows:
        inst = app.sim.book.catalog.get(265598)
        assert Decimal(r["commission"]) == commission_for(inst, Decimal(str(r["size"])), Decimal(r["price"]))
        assert r["net_amount"] == pytest.approx(r["size"] * float(r["price"]))


def test_commission_schedule() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    get = app.sim.book.catalog.get
    assert commission_for(get(265598), Decimal(100), Decimal("190")) == Decimal("1.00")  # min 1.00
    assert commission_for(get(265598), Decimal(1000), Decimal("190")) == Decimal("5.00")  # 0.005/share
    assert commission_for(get(265598), Decimal(1000), Decimal("0.10")) == Decimal("1.00")  # max 1% (>= min)
    assert commission_for(get(700100001), Decimal(3), Decimal("2")) == Decimal("1.95")  # options 0.65
    assert commission_for(get(637533641), Decimal(2), Decimal("6000")) == Decimal("1.70")  # futures 0.85
    assert commission_for(get(713921696), Decimal(40), Decimal("0.6")) == Decimal("0.40")  # events 0.01


async def test_limit_order_rests_then_fills_partially_and_can_be_cancelled() -> None:
    app = create_app(Scenario(accounts=2), **FakeTime().kwargs())
    a1, a2 = (a.account_id for a in app.sim.book.trading_accounts())
    async with sim_client(app) as c:
        low = (
            await c.post(
                f"{API}/iserver/account/{a1}/orders", json=_ticket(orderType="LMT", price=1, cOID="low")
            )
        ).json()
        assert low[0]["order_status"] == "Submitted"
        oid = low[0]["order_id"]
        big = _ticket(orderType="LMT", price=10_000, quantity=5000, cOID="big")
        crossing = (await c.post(f"{API}/iserver/account/{a1}/orders", json=big)).json()
        status = (await c.get(f"{API}/iserver/account/order/status/{crossing[0]['order_id']}")).json()
        assert crossing[0]["order_status"] == "Submitted" and 0 < int(status["cum_fill"]) < 5000  # partial
        other = (await c.delete(f"{API}/iserver/account/{a2}/order/{oid}")).json()
        assert other == {"error": f"OrderID {oid} doesn't exist"}
        cancel = (await c.delete(f"{API}/iserver/account/{a1}/order/{oid}")).json()
        assert cancel == {
            "msg": "Request was submitted",
            "order_id": int(oid),
            "conid": 265598,
            "account": a1,
        }
        assert (await c.get(f"{API}/iserver/account/order/status/{oid}")).json()[
            "order_status"
        ] == "Cancelled"
        await c.post("/sim/advance", json={"seconds": 120})
        status = (await c.get(f"{API}/iserver/account/order/status/{crossing[0]['order_id']}")).json()
    assert int(status["cum_fill"]) > 0 and status["order_status"] in {"Submitted", "Filled"}


async def test_order_rejects_are_http_200_errors() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    acct = app.sim.book.trading_accounts()[0].account_id
    url = f"{API}/iserver/account/{acct}/orders"
    async with sim_client(app) as c:
        no_price = await c.post(url, json=_ticket(orderType="LMT"))
        assert no_price.status_code == 200 and no_price.json() == {"error": "invalid order price fields"}
        sell_event = (await c.post(url, json=_ticket(conid=713921696, side="SELL"))).json()
        assert "cannot be sold" in sell_event["error"]
        fut = (await c.post(url, json=_ticket(conid=637533641, quantity=1))).json()
        assert "manualIndicator" in fut["error"]
        ok = (await c.post(url, json=_ticket(conid=637533641, quantity=1, manualIndicator=False))).json()
        assert ok[0]["order_status"] == "Filled"
        unknown = await c.post(f"{API}/iserver/account/DU0000000/orders", json=_ticket())
        assert unknown.status_code == 400 and "accountId is not valid" in unknown.json()["error"]
        assert (await c.post(url, json={"nope": 1})).status_code == 500


async def test_live_orders_cover_the_login_unless_account_given() -> None:
    app = create_app(Scenario(accounts=2, quirks={"orders_preflight": False}), **FakeTime().kwargs())
    a1, a2 = (a.account_id for a in app.sim.book.trading_accounts())
    async with sim_client(app) as c:
        for acct in (a1, a2):
            await c.post(f"{API}/iserver/account/{acct}/orders", json=_ticket(orderType="LMT", price=1))
        both = (await c.get(f"{API}/iserver/account/orders")).json()["orders"]
        one = (await c.get(f"{API}/iserver/account/orders", params={"accountId": a2})).json()["orders"]
        filled = (await c.get(f"{API}/iserver/account/orders", params={"filters": "filled"})).json()["orders"]
    assert {o["acct"] for o in both} == {a1, a2} and [o["acct"] for o in one] == [a2]
    assert all(isinstance(o["orderId"], int) and o["side"] == "BUY" for o in both)
    assert filled == []


async def test_event_contract_buy_of_the_opposite_side_nets_in_truth() -> None:
    app = create_app(Scenario(accounts=1, quirks={"event_netting": True}), **FakeTime().kwargs())
    acct = app.sim.book.trading_accounts()[0].account_id
    yes = app.sim.book.accounts[acct].positions[713921696].qty
    assert yes > 0  # the opening book is long YES
    async with sim_client(app) as c:
        await c.post(
            f"{API}/iserver/account/{acct}/orders", json=_ticket(conid=713921700, quantity=5, cOID="no-5")
        )
        truth = (await c.get(f"/sim/truth/{acct}")).json()
    pos = {p["conid"]: Decimal(p["position"]) for p in truth["positions"]}
    no_before = Decimal(0)  # netting never leaves both sides long
    assert pos.get(713921696, Decimal(0)) == yes - 5 and pos.get(713921700, Decimal(0)) == no_before
    sides = [(e["conid"], e["side"]) for e in truth["executions"][-3:]]
    assert sorted(sides) == sorted([(713921700, "B"), (713921696, "N"), (713921700, "N")])


def test_scenario_yaml_roundtrip(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "seed: 11\naccounts: 2\nfa: true\nquirks:\n  late_commissions: 0.5\n  rate_limits: true\n"
    )
    sc = Scenario.from_yaml(path)
    assert (sc.seed, sc.accounts, sc.fa, sc.quirks.late_commissions, sc.quirks.rate_limits) == (
        11,
        2,
        True,
        0.5,
        True,
    )
    path.write_text("quirks:\n  no_such_quirk: true\n")
    with pytest.raises(ValueError, match="no_such_quirk"):
        Scenario.from_yaml(path)


async def test_faults_endpoint_switches_quirks_at_run_time() -> None:
    app = create_app(Scenario(accounts=1), **FakeTime().kwargs())
    async with sim_client(app) as c:
        r = await c.post("/sim/faults", json={"quirks": {"error_rate_5xx": 1.0}})
        assert r.json()["quirks"]["error_rate_5xx"] == 1.0
        assert (await c.get(f"{API}/portfolio/accounts")).status_code in (500, 503)
        bad = await c.post("/sim/faults", json={"quirks": {"error_rate_5xx": 7}})
        assert bad.status_code == 400
        await c.post("/sim/faults", json={"quirks": {"error_rate_5xx": 0.0}, "expire_session": True})
        assert (await c.get(f"{API}/portfolio/accounts")).status_code == 401
        assert (await c.get("/sim/truth/NOPE")).status_code == 404
        assert (await c.get(f"{API}/iserver/nothing")).status_code == 404


def test_fixed_start_is_respected() -> None:
    start = datetime(2027, 3, 3, 16, 0, tzinfo=UTC)
    app = create_app(Scenario(accounts=1), **FakeTime(start).kwargs())
    assert app.sim.clock.now() == start


_DIGEST_SCRIPT = """
import asyncio, hashlib
from ibkr_tasks.sim import Scenario, create_app
from ibkr_tasks.sim.testing import FakeTime, sim_client

async def main():
    sc = Scenario.demo()
    sc = sc.model_copy(update={"quirks": sc.quirks.model_copy(update={"corrections": 0.5, "malformed_ratio": 0.1})})
    app = create_app(sc, **FakeTime().kwargs())
    digest = hashlib.sha256()
    async with sim_client(app) as c:
        for _ in range(2):
            digest.update((await c.get("/v1/api/iserver/account/trades", params={"days": 7})).content)
        await c.post("/sim/advance", json={"days": 1})
        digest.update((await c.get("/v1/api/iserver/account/trades", params={"days": 7})).content)
        for acct in app.sim.book.accounts:
            digest.update((await c.get(f"/sim/truth/{acct}")).content)
    print(digest.hexdigest())

asyncio.run(main())
"""


def test_same_seed_same_payloads_across_processes() -> None:
    """Nothing depends on object ids or string hashing: two interpreters give identical bytes."""
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1

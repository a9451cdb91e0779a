"""Peer check: ibind 0.2.2, the most used Python Client Portal client, against the simulator.

Two parts, one run:

1. **Compatibility.** ibind's ``IbkrClient`` talks to the simulator on loopback (plain HTTP, no TLS;
   no tickler and no websocket: ibind starts neither unless asked) exactly as it would to a Client
   Portal Gateway, through every endpoint the simulator serves, including ``place_order`` with
   ibind's standard answers (every ``QuestionType`` answered yes) for a market and a limit order. Each
   call must succeed and answer in the shape ibind reads.
2. **Side by side**, each on a fresh simulator (same seed) with IBKR's limits enforced (429 + penalty
   box) and 30 ms latency: all positions of a 1,000-position account (invalidate + pages until a
   short one) and one trades call (a day of 300 fills; this client also resolves each instrument's
   currency and multiplier), with ibind and with this client: wall time, requests, 429s.

ibind is an optional extra (``pip install -e '.[peer]'``), never a dependency of ibkr-tasks.
Run: ``.venv/bin/python bench/peer_ibind.py``. This is a measurement, not a test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

os.environ["IBKR_RATE_LIMIT_BACKEND"] = "local"
os.environ["IBKR_ACCESS_TOKEN"] = "bench-gateway"  # a local gateway takes any placeholder
# ibind's own settings, read when it is imported: no log files, quiet console.
os.environ.setdefault("IBIND_LOG_TO_FILE", "false")
os.environ.setdefault("IBIND_LOG_LEVEL", "ERROR")
os.environ.setdefault("IBIND_AUTO_REGISTER_SHUTDOWN", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibkr_tasks.client.api import IBKRClient  # noqa: E402
from ibkr_tasks.client.ratelimit import reset_limiters  # noqa: E402
from ibkr_tasks.client.settings import IBKRSettings  # noqa: E402
from ibkr_tasks.sim import Scenario  # noqa: E402
from ibkr_tasks.sim.scenario import Quirks  # noqa: E402
from ibkr_tasks.testing import SimulatorHandle, running_simulator  # noqa: E402

try:
    from ibind import IbkrClient, OrderRequest, QuestionType, StockQuery
    from ibind.support.errors import ExternalBrokerError
except ImportError:  # pragma: no cover
    raise SystemExit("ibind is not installed: pip install -e '.[peer]' (ibind==0.2.2)") from None

POSITIONS = 1000
FILLS = 300
STANDARD_ANSWERS = dict.fromkeys(QuestionType, True)


def measured(positions: int = POSITIONS, fills: int = FILLS, *, limits: bool = True) -> Scenario:
    return Scenario(
        seed=17,
        accounts=1,
        positions_per_account=positions,
        fills_per_account_per_day=fills,
        history_days=1,
        latency_ms=30,
        quirks=Quirks(rate_limits=limits, penalty_box_seconds=60),
    )


def ibind_client(sim: SimulatorHandle, account_id: str | None = None) -> Any:
    return IbkrClient(
        url=sim.api_url + "/",
        account_id=account_id,
        cacert=False,  # plain HTTP on loopback
        timeout=60,
        auto_register_shutdown=False,
    )


def sim_accounts(sim: SimulatorHandle) -> list[str]:
    rows = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30).json()
    return [r["account_id"] for r in rows if r["kind"] != "master"]


# --------------------------------------------------------------------------------- compatibility
def compatibility() -> list[tuple[str, bool, str]]:
    """Every endpoint the simulator serves, called through ibind; (call, ok, what came back)."""
    results: list[tuple[str, bool, str]] = []
    # Every order is asked one or two of the confirmation prompts that fit it, as IBKR words them.
    prompts = Quirks(prompt_chain_min=1, prompt_chain_max=2)
    with running_simulator(Scenario(seed=17, accounts=2, positions_per_account=30, quirks=prompts)) as sim:
        first, second = sim_accounts(sim)
        c = ibind_client(sim, first)
        conid = next(p["conid"] for p in sim.truth(first)["positions"] if p["sec_type"] == "STK")

        def check(name: str, call: Callable[[], Any], ok: Callable[[Any], bool]) -> Any:
            try:
                data = call()
                data = getattr(data, "data", data)
                good = bool(ok(data))
                results.append((name, good, str(data)[:90]))
                return data
            except Exception as exc:
                results.append((name, False, f"{type(exc).__name__}: {str(exc)[:200]}"))
                return None

        check("check_health", c.check_health, lambda d: d is True)
        check("authentication_status", c.authentication_status, lambda d: d["authenticated"] is True)
        check("tickle", c.tickle, lambda d: d["iserver"]["authStatus"]["authenticated"] is True)
        check("initialize_brokerage_session", c.initialize_brokerage_session, lambda d: "authenticated" in d)
        check("receive_brokerage_accounts", c.receive_brokerage_accounts, lambda d: first in d["accounts"])
        check("portfolio_accounts", c.portfolio_accounts, lambda d: {a["id"] for a in d} >= {first, second})
        check("switch_account", lambda: c.switch_account(second), lambda d: d.get("acctId") == second)
        check(
            "trades (selected account)",
            lambda: c.trades(days="1"),
            lambda d: {r["account"] for r in d} == {second},
        )
        check("switch_account back", lambda: c.switch_account(first), lambda d: d.get("acctId") == first)
        check("invalidate_backend_portfolio_cache", c.invalidate_backend_portfolio_cache, lambda d: d)
        check("positions", c.positions, lambda d: d and all(r["acctId"] == first for r in d))
        check("positions2", c.positions2, lambda d: isinstance(d, list) and d)
        check("portfolio_summary", c.portfolio_summary, lambda d: "netliquidation" in d)
        check("get_ledger", c.get_ledger, lambda d: "BASE" in d)
        check(
            "trades (accountId)",
            lambda: c.trades(days="2"),
            lambda d: d and {r["account"] for r in d} == {first},
        )
        check(
            "contract_information_by_conid",
            lambda: c.contract_information_by_conid(str(conid)),
            lambda d: int(d["con_id"]) == conid,
        )
        check(
            "security_definition_by_conid",
            lambda: c.security_definition_by_conid([str(conid)]),
            lambda d: d["secdef"][0]["conid"] == conid,
        )
        check(
            "search_contract_by_symbol",
            lambda: c.search_contract_by_symbol("AAPL"),
            lambda d: d and d[0]["conid"],
        )
        check(
            "security_stocks_by_symbol",
            lambda: c.security_stocks_by_symbol(StockQuery("AAPL")),
            lambda d: d["AAPL"],
        )
        check(
            "live_marketdata_snapshot",
            lambda: c.live_marketdata_snapshot(str(conid), ["31", "84", "86"]),
            lambda d: isinstance(d, list),
        )
        check(
            "live_marketdata_snapshot (again)",
            lambda: c.live_marketdata_snapshot(str(conid), ["31", "84", "86"]),
            lambda d: d[0].get("31"),
        )
        check("live_orders", c.live_orders, lambda d: "orders" in d)
        for kind, extra in (("MKT", {}), ("LMT", {"price": 1.0})):
            order = OrderRequest(
                conid=conid,
                side="BUY",
                quantity=1,
                order_type=kind,
                acct_id=first,
                coid=f"peer-{kind}",
                **extra,
            )
            placed = check(
                f"place_order {kind} (standard answers)",
                lambda order=order: c.place_order(order, STANDARD_ANSWERS),
                lambda d: (d[0] if isinstance(d, list) else d).get("order_id"),
            )
            if kind == "LMT" and placed is not None:
                order_id = str((placed[0] if isinstance(placed, list) else placed)["order_id"])
                check(
                    "order_status",
                    lambda order_id=order_id: c.order_status(order_id),
                    lambda d, order_id=order_id: str(d.get("order_id")) == order_id,
                )
                check(
                    "cancel_order",
                    lambda order_id=order_id: c.cancel_order(order_id),
                    lambda d: "msg" in d or "order_id" in d,
                )
        replies = sim.stats()["requests"].get("POST /iserver/reply/{id}", 0)
        results.append(("prompts answered by ibind's reply", replies >= 2, f"{replies} POST /iserver/reply"))
        check("logout", c.logout, lambda d: d.get("status") is True)
        c.close()
    return results


# --------------------------------------------------------------------------------- side by side
def stats_delta(sim: SimulatorHandle, before: dict[str, Any]) -> tuple[int, int]:
    after = sim.stats()
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    return requests, after["responses_429"] - before["responses_429"]


def run_ibind(task: str) -> dict[str, Any]:
    with running_simulator(measured()) as sim:
        (account,) = sim_accounts(sim)
        c = ibind_client(sim, account)
        c.receive_brokerage_accounts()  # the preflights, as a user of ibind makes them
        c.portfolio_accounts()
        time.sleep(1.0)  # the preflights' requests leave IBKR's 1 s window before the timing starts
        before = sim.stats()
        started = time.perf_counter()
        rows: list[Any] = []
        error = ""
        try:
            if task == "positions":
                c.invalidate_backend_portfolio_cache(account)
                page = 0
                while True:
                    batch = c.positions(account, page=page).data
                    rows.extend(batch)
                    if len(batch) < 100:
                        break
                    page += 1
            else:
                rows = c.trades(days="1", account_id=account).data
        except ExternalBrokerError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
        wall = time.perf_counter() - started
        requests, n429 = stats_delta(sim, before)
        c.close()
    return {"wall": wall, "requests": requests, "429": n429, "rows": len(rows), "error": error}


def run_ours(task: str) -> dict[str, Any]:
    reset_limiters()
    with running_simulator(measured()) as sim:
        (account,) = sim_accounts(sim)

        async def go() -> tuple[float, int, dict[str, Any]]:
            async with IBKRClient.from_settings(IBKRSettings(api_url=sim.api_url)) as client:
                await client.ensure_session()
                await client.list_accounts()  # the preflights
                await asyncio.sleep(1.0)  # as for ibind
                before = sim.stats()
                started = time.perf_counter()
                if task == "positions":
                    n = len((await client.positions(account, invalidate=True)).items)
                else:
                    n = len((await client.fills([account], days=1))[account].items)
                return time.perf_counter() - started, n, before

        wall, rows, before = asyncio.run(go())
        requests, n429 = stats_delta(sim, before)
    return {"wall": wall, "requests": requests, "429": n429, "rows": rows, "error": ""}


def main() -> int:
    print(f"ibind {version('ibind')} against the simulator (loopback, plain HTTP)\n")
    print("1. every call the simulator serves, through ibind:")
    results = compatibility()
    for name, ok, seen in results:
        print(f"   {'ok ' if ok else 'FAIL'} {name:<40} {seen}")
    failed = [name for name, ok, _ in results if not ok]
    print(f"   {len(results) - len(failed)}/{len(results)} as ibind expects\n")

    print(
        "2. side by side, IBKR's limits enforced (10 req/s, 429 + penalty box), 30 ms latency, fresh "
        "simulator each (timed after the preflights and a 1 s pause):\n"
    )
    print(f"   {'task':<32} {'client':<12} {'wall s':>7} {'requests':>9} {'429s':>5} {'rows':>6}  note")
    for task, label in (
        ("positions", f"all positions of {POSITIONS:,}"),
        ("trades", f"one trades call ({FILLS} fills)"),
    ):
        for name, fn in (("ibind", run_ibind), ("ibkr-tasks", run_ours)):
            r = fn(task)
            print(
                f"   {label:<32} {name:<12} {r['wall']:>7.2f} {r['requests']:>9} {r['429']:>5} {r['rows']:>6}  {r['error']}"
            )
    print(
        "\n   (ibkr-tasks' trades call also asks /trsrv/secdef for each instrument's currency and "
        "multiplier, which the trades rows lack; ibind returns the raw rows)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

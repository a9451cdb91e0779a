"""Reconciliation benchmark: the nightly flow at scale against the simulator, with IBKR's limits.

50 accounts x 250 positions x 200 fills/day on one login, 30 ms latency per request, IBKR's global and
per-endpoint rate limits enforced by the simulator (429 + penalty box). Measured side by side in one run:

- **direct**: the same client and ledger calls the tasks make (session, accounts, one trades call,
  per account ingest -> positions -> reconcile, concurrently), without Prefect;
- **flow**: ``nightly_reconciliation`` run through Prefect (local ephemeral server, warmed up first).

Printed: wall time of each, the lower bound that the rate limits allow for the requests each made
(requests / global rate, or the slowest per-endpoint limit, whichever is larger), their ratio (goal
<= 1.2), the 429s the simulator answered (goal 0) and the orchestration overhead flow vs direct
(goal <= 10 %). Each run gets a fresh simulator (same seed) and a fresh SQLite ledger. The flow then
runs a second night against the same simulator and ledger ("flow #2"): it asks IBKR only for what
changes (trades, positions), since contract info comes from the ledger.

Run: ``.venv/bin/python bench/reconcile.py`` (a few minutes; ``--accounts 10`` for a quick look).
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="ibkr-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["IBKR_RATE_LIMIT_BACKEND"] = "local"
os.environ["IBKR_ACCESS_TOKEN"] = "bench-gateway"  # a local gateway takes any placeholder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.nightly_reconciliation import reconcilable_accounts  # noqa: E402
from ibkr_tasks.client.api import IBKRClient  # noqa: E402
from ibkr_tasks.client.ratelimit import ENDPOINT_RULES, GATEWAY_GLOBAL, reset_limiters, rules_for  # noqa: E402
from ibkr_tasks.client.settings import IBKRSettings  # noqa: E402
from ibkr_tasks.ledger import Ledger  # noqa: E402
from ibkr_tasks.sim import Scenario  # noqa: E402
from ibkr_tasks.sim.scenario import Quirks  # noqa: E402
from ibkr_tasks.testing import running_simulator  # noqa: E402


def scenario(accounts: int, positions: int, fills: int) -> Scenario:
    return Scenario(
        seed=21,
        accounts=accounts,
        fa=True,
        positions_per_account=positions,
        fills_per_account_per_day=fills,
        history_days=1,
        latency_ms=30,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=60),
    )


async def direct(ledger_url: str, days: int) -> None:
    """The flow's work without Prefect: the same client and ledger calls, the same concurrency."""
    ledger = Ledger(ledger_url)
    run_id = "bench-direct"
    async with IBKRClient.from_settings(IBKRSettings()) as client:
        await client.ensure_session()
        infos = await client.list_accounts()
        ledger.upsert_accounts(infos)
        targets = reconcilable_accounts(infos)
        known = ledger.known_contracts()  # as the flow does: contract info kept from earlier runs
        client.contracts.remember(known.values())
        fills = await client.fills(targets, days=days)
        ledger.store_contracts(i for c, i in client.contracts.cached().items() if c not in known)
        semaphore = asyncio.Semaphore(16)  # the flow's default max_concurrency

        async def one(account_id: str) -> None:
            async with semaphore:
                batch = fills[account_id]
                await asyncio.to_thread(ledger.start_run, account_id, run_id)
                result = await asyncio.to_thread(
                    ledger.ingest, account_id, batch.items, run_id, batch.rejected
                )
                positions = await client.positions(account_id, invalidate=True)
                rec = await asyncio.to_thread(
                    ledger.reconcile,
                    account_id,
                    positions.items,
                    run_id,
                    not_before=max((f.trade_time for f in batch.items), default=None),
                )
                counts = result.counts() | {"breaks": len(rec.breaks) + len(result.commission_breaks)}
                await asyncio.to_thread(ledger.finish_run, account_id, run_id, "succeeded", counts)

        await asyncio.gather(*(one(a) for a in targets))
    ledger.dispose()


async def flow(ledger_url: str, days: int) -> Any:
    from flows.nightly_reconciliation import nightly_reconciliation

    state = await nightly_reconciliation(days=days, ledger_url=ledger_url, return_state=True)
    if not state.is_completed():
        raise SystemExit(f"flow run ended {state.name}: {state.message}")
    return state


def lower_bound(stats: dict[str, Any]) -> tuple[float, int]:
    """Seconds the rate limits allow at best for the requests the simulator saw, and their count."""
    requests: dict[str, int] = stats["requests"]
    total = sum(requests.values())
    bound = (total - 1) / GATEWAY_GLOBAL.rate if total else 0.0
    for key, n in requests.items():
        method, _, path = key.partition(" ")
        path = path.removeprefix("/v1/api")
        for rule in rules_for(method or "GET", path, ENDPOINT_RULES):
            if rule.limit is not None and n > 1:
                bound = max(bound, (n - 1) * rule.limit.interval)
    return bound, total


def measure(name: str, sc: Scenario, days: int, fn: Any, nights: int = 1) -> list[dict[str, Any]]:
    """Run ``fn`` ``nights`` times against one simulator and one ledger (the same simulated day, so
    a later night finds what the first one stored); one result per night."""
    reset_limiters()
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_simulator(sc) as sim:
        os.environ["IBKR_API_URL"] = sim.api_url
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        before = sim.stats()
        late_before = 0
        for night in range(1, nights + 1):
            started_at = time.time()
            started = time.perf_counter()
            asyncio.run(fn(ledger_url, days))
            wall = time.perf_counter() - started
            ended_at = time.time()
            stats = sim.stats()
            from ibkr_tasks.client.ratelimit import get_limiter

            backend = get_limiter(IBKRSettings()).backend
            requests = {k: n - before["requests"].get(k, 0) for k, n in stats["requests"].items()}
            bound, total = lower_bound({"requests": {k: n for k, n in requests.items() if n}})
            first = stats["first_request_at"] if night == 1 else None
            results.append(
                {
                    "name": name if night == 1 else f"{name} #{night}",
                    "wall": wall,
                    "bound": bound,
                    "requests": total,
                    "contract_info": requests.get("GET /iserver/contract/{conid}/info", 0),
                    "429": stats.get("responses_429", 0) - before.get("responses_429", 0),
                    "violations": stats.get("rate_limit_violations", 0)
                    - before.get("rate_limit_violations", 0),
                    "late": getattr(backend, "late_wakeups", 0) - late_before,
                    # before the first API request arrived / after the last one: time outside the API
                    "head": (first - started_at) if first else float("nan"),
                    "tail": ended_at - (stats["last_request_at"] or ended_at),
                }
            )
            before, late_before = stats, getattr(backend, "late_wakeups", 0)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--positions", type=int, default=250)
    parser.add_argument("--fills", type=int, default=200)
    args = parser.parse_args(argv)
    sc = scenario(args.accounts, args.positions, args.fills)
    print(
        f"reconcile bench: {args.accounts} accounts x {args.positions} positions x {args.fills} fills/day, "
        f"30 ms latency, IBKR limits enforced (gateway: {GATEWAY_GLOBAL.requests} req/s)"
    )
    print("warming up Prefect (ephemeral server start, not timed) ...", flush=True)
    from prefect import flow as prefect_flow

    @prefect_flow
    async def warm_up() -> None:
        return None

    asyncio.run(warm_up())

    # The flow runs a second night on the same simulated day: only the positions are asked again;
    # contract info comes from the ledger (see docs/prefect.md).
    (direct_run,) = measure("direct", sc, 1, direct)
    flow_runs = measure("flow", sc, 1, flow, nights=2)
    results = [direct_run, *flow_runs]
    print(
        f"\n{'run':<8} {'wall s':>8} {'bound s':>8} {'ratio':>6} {'requests':>9} {'429s':>5} {'violations':>10}"
        f" {'contract info':>13} {'late wakeups':>13} {'head s':>7} {'tail s':>7}"
    )
    for r in results:
        ratio = r["wall"] / r["bound"] if r["bound"] else float("nan")
        print(
            f"{r['name']:<8} {r['wall']:>8.2f} {r['bound']:>8.2f} {ratio:>6.3f} {r['requests']:>9} "
            f"{r['429']:>5} {r['violations']:>10} {r['contract_info']:>13} {r['late']:>13} {r['head']:>7.2f} {r['tail']:>7.2f}"
        )
    print("(head: start to the first API request; tail: the last API request to the end)")
    d, f, again = results
    overhead = (f["wall"] - d["wall"]) / d["wall"] * 100
    print(f"\nPrefect orchestration overhead (flow vs direct wall time): {overhead:+.1f} %  (goal <= 10 %)")
    print(f"flow wall / rate-limit lower bound: {f['wall'] / f['bound']:.3f}  (goal <= 1.2)")
    print(f"429s answered: direct {d['429']}, flow {f['429']}, flow #2 {again['429']}  (goal 0)")
    print(
        f"second night: {again['wall']:.2f} s for {again['requests']} requests"
        f" ({again['contract_info']} contract info lookups; first night {f['contract_info']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

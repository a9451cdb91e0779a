"""What contract info costs in one trades call: requests and wall time, against the simulator.

One FA login (its one trades answer covers both sub-accounts) with two paper accounts whose trades of two days hold about 300 distinct instruments, none
known to the client beforehand (a first night). The simulator runs in its own process with IBKR's
global and per-endpoint rate limits enforced (429 + penalty box) and 30 ms latency per request.
Measured: one ``IBKRClient.fills(..., days=2)`` call after the session is open: its wall time, the
requests it made by endpoint, and the 429s the simulator answered (goal 0).

Run: ``.venv/bin/python bench/contract_info.py`` (``--positions``/``--fills`` change the size).
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

os.environ["IBKR_RATE_LIMIT_BACKEND"] = "local"
os.environ["IBKR_ACCESS_TOKEN"] = "bench-gateway"  # a local gateway takes any placeholder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibkr_tasks.client.api import IBKRClient  # noqa: E402
from ibkr_tasks.client.settings import IBKRSettings  # noqa: E402
from ibkr_tasks.sim import Scenario  # noqa: E402
from ibkr_tasks.sim.scenario import Quirks  # noqa: E402
from ibkr_tasks.testing import running_simulator  # noqa: E402


def scenario(positions: int, fills: int) -> Scenario:
    return Scenario(
        seed=3,
        accounts=2,
        fa=True,
        positions_per_account=positions,
        fills_per_account_per_day=fills,
        history_days=2,
        latency_ms=30,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=60),
    )


async def one_trades_call(accounts: list[str]) -> tuple[float, int]:
    async with IBKRClient.from_settings(IBKRSettings()) as client:
        await client.ensure_session()
        started = time.perf_counter()
        fills = await client.fills(accounts, days=2)
        took = time.perf_counter() - started
    conids = {f.conid for acct in accounts for f in fills[acct].items}
    missing = sum(1 for acct in accounts for f in fills[acct].items if f.currency is None)
    if missing:
        raise SystemExit(f"{missing} fills without a currency")
    return took, len(conids)


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    out = {}
    for key, n in after["requests"].items():
        diff = n - before["requests"].get(key, 0)
        if diff:
            out[key] = diff
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=300, help="holdings per account")
    parser.add_argument("--fills", type=int, default=180, help="fills per account per day")
    args = parser.parse_args()
    with running_simulator(scenario(args.positions, args.fills)) as sim:
        os.environ["IBKR_API_URL"] = sim.api_url
        rows = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30).json()
        accounts = sorted(a["account_id"] for a in rows if a["kind"] == "paper")
        before = sim.stats()
        took, conids = asyncio.run(one_trades_call(accounts))
        after = sim.stats()
    made = delta(before, after)
    session = {k: v for k, v in made.items() if "auth" in k or k.endswith("/iserver/accounts")}
    call = {k: v for k, v in made.items() if k not in session}
    print(f"one trades call, {conids} distinct conids, none known beforehand")
    print(f"  wall time of fills(): {took:.1f} s")
    print(f"  requests of fills(): {sum(call.values())}")
    for key, n in sorted(call.items()):
        print(f"    {n:5d}  {key}")
    print(f"  429s answered: {after['responses_429']}, limit violations: {after['rate_limit_violations']}")


if __name__ == "__main__":
    main()

"""Reconciliation benchmark: the nightly flow at scale against the simulator, with IBKR's limits.

Two kinds of login, each with IBKR's global and per-endpoint rate limits enforced by the simulator
(429 + penalty box) and 30 ms latency per request:

- **FA**: an FA master with 50 client accounts x 250 positions x 200 fills/day; one trades request
  answers for every sub-account;
- **multi-account**: 10 accounts under one username, no FA master; a trades request answers for the
  selected account only, so each account costs one (IBKR allows 1 per 5 s).

Each login runs two nights through Prefect against the same simulator and ledger: a first night (no
contract info known) and a later night on the same simulated day (contract info from the ledger). For
the FA login the same work also runs without Prefect (**direct**, the same client and ledger calls)
to show the orchestration overhead (goal <= 10 %).

The **physical bound** is the least time IBKR's limits (ibkr_tasks.client.ratelimit) allow for the
fewest requests the job needs, whatever the client happened to send:

- session and account discovery: ``POST /iserver/auth/status``, ``GET /iserver/accounts``,
  ``GET /portfolio/accounts``;
- trades: one request per scope unit (FA: 1; multi-account: one per account);
- contract info: ``ceil(unknown / 200)`` ``/trsrv/secdef`` requests, ``unknown`` being the traded
  instruments the ledger did not know before the night;
- positions: per account, one invalidate and ``positions // 100 + 1`` pages;

at the global 10 req/s, and no faster than the trades requests allow: the first after discovery,
then one per 5 s, then the contract info of the last answer. Printed: wall time, the bound, their
ratio (goal <= 1.1 on both nights and both logins), requests needed and sent, contract-info requests
(``/trsrv/secdef`` and ``/iserver/contract/{conid}/info``) and 429s (goal 0).

Run: ``.venv/bin/python bench/reconcile.py`` (a few minutes; ``--accounts 10`` for a quick look;
``--trace`` prints where each night idled between requests and its first requests, ``--gc`` every
garbage collection over 20 ms). Run it on a quiet machine: on a shared VM, CPU taken by its host
(``st`` in ``vmstat``) shows up as late wake-ups and late writes, and in the ratio.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
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
# The slow endpoints' pacing is shared by the processes of a machine per host (127.0.0.1 for every
# simulator): a private directory keeps other simulators' runs on this machine out of the measurement.
os.environ["IBKR_PACING_DIR"] = tempfile.mkdtemp(prefix="ibkr-bench-pacing-")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibkr_tasks.client.api import IBKRClient  # noqa: E402
from ibkr_tasks.client.background import gc_frozen  # noqa: E402
from ibkr_tasks.client.ratelimit import (  # noqa: E402
    GATEWAY_GLOBAL,
    PORTFOLIO_ACCOUNTS,
    TRADES,
    reset_limiters,
)
from ibkr_tasks.client.settings import IBKRSettings  # noqa: E402
from ibkr_tasks.ledger import Ledger  # noqa: E402
from ibkr_tasks.nightly import reconcilable_accounts, seed_contracts  # noqa: E402
from ibkr_tasks.sim import Scenario  # noqa: E402
from ibkr_tasks.sim.asgi import ARRIVED_HEADER  # noqa: E402
from ibkr_tasks.sim.scenario import Quirks  # noqa: E402
from ibkr_tasks.testing import running_simulator  # noqa: E402


def scenario(accounts: int, positions: int, fills: int, *, fa: bool = True) -> Scenario:
    return Scenario(
        seed=21,
        accounts=accounts,
        fa=fa,
        positions_per_account=positions,
        fills_per_account_per_day=fills,
        history_days=1,
        latency_ms=30,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=60),
    )


async def direct(ledger_url: str, days: int) -> None:
    """The flow's work without Prefect: the same client and ledger calls, the same concurrency and
    order (trades while the ledger opens, positions the moment the answer is in, fills booked while the
    positions are fetched), on one event loop and with the same garbage-collection scope."""
    ledger = Ledger(ledger_url)
    run_id = "bench-direct"
    with gc_frozen():
        async with IBKRClient.from_settings(IBKRSettings()) as client:
            await client.ensure_session()
            infos = await client.list_accounts()
            targets = reconcilable_accounts(infos)
            opened: asyncio.Future[Ledger] = asyncio.get_running_loop().create_future()
            opened.set_result(ledger)  # opened already; its schema is made on first use, as in the flow
            seeding = asyncio.ensure_future(seed_contracts(client, opened))  # type: ignore[arg-type]
            requests = await client.trades_requests(targets)
            shared = [a for a in targets if any(r.account_id is None and a in r.accounts for r in requests)]
            collecting = asyncio.ensure_future(client.fills(shared, days=days)) if shared else None
            semaphore = asyncio.Semaphore(16)  # the flow's default max_concurrency

            async def fetch(account_id: str) -> Any:
                async with semaphore:
                    return await client.positions(account_id, invalidate=True, after_trades=True)

            fetching = {a: asyncio.ensure_future(fetch(a)) for a in shared}
            known = await seeding
            await asyncio.to_thread(ledger.upsert_accounts, infos)

            async def one(account_id: str) -> None:
                await asyncio.to_thread(ledger.start_run, account_id, run_id)
                if account_id in fetching:
                    assert collecting is not None
                    batch = (await collecting)[account_id]
                    result = await asyncio.to_thread(
                        ledger.ingest, account_id, batch.items, run_id, batch.rejected
                    )
                    positions = await fetching[account_id]
                else:
                    async with semaphore:
                        batch = (await client.fills([account_id], days=days))[account_id]
                        positions = await client.positions(account_id, invalidate=True)
                    result = await asyncio.to_thread(
                        ledger.ingest, account_id, batch.items, run_id, batch.rejected
                    )
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
            ledger.store_contracts(i for c, i in client.contracts.cached().items() if c not in known)
    ledger.dispose()


async def flow(ledger_url: str, days: int) -> Any:
    from flows.nightly_reconciliation import nightly_reconciliation

    state = await nightly_reconciliation(days=days, ledger_url=ledger_url, return_state=True)
    if not state.is_completed():
        raise SystemExit(f"flow run ended {state.name}: {state.message}")
    return state


DISCOVERY = 3  # POST /iserver/auth/status, GET /iserver/accounts, GET /portfolio/accounts
SECDEF_CONIDS = 200  # conids per /trsrv/secdef request
CONTRACT_INFO = ("GET /trsrv/secdef", "GET /iserver/contract/{conid}/info")


def needed_requests(*, trades: int, unknown: int, positions: list[int]) -> dict[str, int]:
    """The fewest requests a night needs, by kind."""
    return {
        "discovery": DISCOVERY,
        "trades": trades,
        "contract info": math.ceil(unknown / SECDEF_CONIDS),
        "positions": sum(1 + n // 100 + 1 for n in positions),  # invalidate + pages to a short one
    }


def physical_bound(needed: dict[str, int]) -> float:
    """Seconds IBKR's limits allow at best for ``needed``: every request at the global rate, and the
    trades requests one per TRADES interval, the first after discovery, the last one's contract info
    after it."""
    total = sum(needed.values())
    bound = (total - 1) / GATEWAY_GLOBAL.rate if total else 0.0
    gap = 1 / GATEWAY_GLOBAL.rate
    if needed["trades"]:
        chain = (DISCOVERY - 1) * gap + gap  # auth status, /iserver/accounts, then the first trades request
        chain += (needed["trades"] - 1) * TRADES.interval
        chain += gap if needed["contract info"] else 0.0
        bound = max(bound, chain)
    return bound


def night_facts(ledger_url: str, known_before: set[int]) -> tuple[set[int], int, list[int]]:
    """From the ledger after a night: the contract info it knows, the traded instruments it did not
    know before, and each account's positions in its newest snapshot."""
    from sqlalchemy import create_engine, text

    ledger = Ledger(ledger_url)
    known = set(ledger.known_contracts())
    ledger.dispose()
    engine = create_engine(ledger_url)
    with engine.connect() as conn:
        traded = {int(c) for (c,) in conn.execute(text("select distinct conid from fills"))}
        positions = [
            int(n)
            for (n,) in conn.execute(
                text(
                    "select count(*) from position_snapshots p where taken_at = (select max(taken_at) "
                    "from position_snapshots q where q.account_id = p.account_id) group by account_id"
                )
            )
        ]
    engine.dispose()
    return known, len(traded - known_before), positions


Row = tuple[float, float, str, str, float]


class RequestTrace:
    """Every request the client sent: (sent, answered, method, path, counted), from httpx itself;
    ``counted`` is when the simulator counted it against IBKR's limits (its x-sim-arrived header)."""

    def __init__(self) -> None:
        import httpx

        self.rows: list[Row] = []
        send = httpx.AsyncClient.request
        rows = self.rows

        async def traced(client: httpx.AsyncClient, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            sent = time.time()
            counted = float("nan")
            try:
                response = await send(client, method, url, *args, **kwargs)
                counted = float(response.headers.get(ARRIVED_HEADER, "nan"))
                return response
            finally:
                if "/v1/api" in str(client.base_url):  # the IBKR API, not Prefect's
                    rows.append((sent, time.time(), method, str(url).split("?", 1)[0], counted))

        httpx.AsyncClient.request = traced  # type: ignore[method-assign]  # measurement only

    def take(self) -> list[Row]:
        rows = sorted(self.rows)
        self.rows.clear()
        return rows


def _kind(path: str) -> str:
    return re.sub(r"/(U|DU|DF|F)[A-Z0-9]+", "/{acct}", re.sub(r"/positions/\d+$", "/positions/{page}", path))


def print_trace(name: str, rows: list[Row], started: float, ended: float) -> None:
    """Where the night's wall time went that the global rate did not need: each gap between two sends
    longer than 1.5 global intervals, summed by the request before and after it."""
    spacing = 1 / GATEWAY_GLOBAL.rate
    gaps: dict[str, list[float]] = {}
    sends = [started] + [r[0] for r in rows]
    labels = ["(start)"] + [f"{r[2]} {_kind(r[3])}" for r in rows]
    for i in range(1, len(sends)):
        gap = sends[i] - sends[i - 1]
        if gap > 1.5 * spacing:
            gaps.setdefault(f"{labels[i - 1]} -> {labels[i]}", []).append(gap - spacing)
    # the most requests the client sent within one global window, and the closest two sends
    window, densest, closest = 1 / GATEWAY_GLOBAL.rate * GATEWAY_GLOBAL.requests, 0, float("inf")
    for i in range(len(rows)):
        j = i
        while j + 1 < len(rows) and rows[j + 1][0] - rows[i][0] < window:
            j += 1
        densest = max(densest, j - i + 1)
        if i:
            closest = min(closest, rows[i][0] - rows[i - 1][0])
    # the shortest time the client took for requests + 1 sends: IBKR's window minus this is what the
    # network, the gateway's scheduling and its clock may still eat before a window holds one too many
    n = GATEWAY_GLOBAL.requests
    span = min((rows[i + n][0] - rows[i][0] for i in range(len(rows) - n)), default=float("nan"))
    counted = sorted(r[4] for r in rows if not math.isnan(r[4]))
    seen = min((counted[i + n] - counted[i] for i in range(len(counted) - n)), default=float("nan"))
    lag = sorted(r[4] - r[0] for r in rows if not math.isnan(r[4]))
    print(
        f"  most sends in one {window:g} s window: {densest}; closest two sends {closest * 1000:.0f} ms apart;"
        f" {n + 1} sends in no less than {span * 1000:.0f} ms (as the simulator counted them: {seen * 1000:.0f} ms)"
    )
    if lag:
        worst = max((r for r in rows if not math.isnan(r[4])), key=lambda r: r[4] - r[0])
        print(
            f"  counted after sent: median {lag[len(lag) // 2] * 1000:.1f} ms, 99th pct "
            f"{lag[int(len(lag) * 0.99)] * 1000:.1f} ms, max {lag[-1] * 1000:.1f} ms "
            f"({worst[2]} {_kind(worst[3])} at +{worst[0] - started:.2f} s)"
        )
    opening = ", ".join(
        f"{r[2]} {_kind(r[3])} +{(r[0] - started) * 1000:.0f}/{(r[1] - started) * 1000:.0f}" for r in rows[:7]
    )
    print(f"  first requests (sent/answered, ms after the start): {opening}")
    tail = ended - (rows[-1][1] if rows else started)
    total = sum(sum(v) for v in gaps.values())
    print(f"  trace {name}: {len(rows)} requests; idle beyond one interval {total:.2f} s; tail {tail:.2f} s")
    for key, values in sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:8]:
        print(f"    {sum(values):6.2f} s in {len(values):3d} gap(s)  {key}")


def watch_gc(threshold: float = 0.02) -> None:
    """Print every garbage collection that stops all threads (the I/O thread's too) for ``threshold`` s."""
    import gc

    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started and (took := time.perf_counter() - started[0]) > threshold:
            print(
                f"  gc: generation {info['generation']} took {took * 1000:.0f} ms, {info['collected']} collected"
            )

    gc.callbacks.append(callback)


def lateness(backend: Any) -> dict[str, float]:
    """The limiter's counts of late wake-ups and late writes (each re-reserved) and their lateness."""
    return {
        "late": getattr(backend, "late_wakeups", 0),
        "late_s": getattr(backend, "late_seconds", 0.0),
        "late_w": getattr(backend, "late_writes", 0),
        "late_w_s": getattr(backend, "late_write_seconds", 0.0),
    }


def measure(
    name: str, sc: Scenario, days: int, fn: Any, nights: int = 1, trace: RequestTrace | None = None
) -> list[dict[str, Any]]:
    """Run ``fn`` ``nights`` times against one simulator and one ledger (the same simulated day, so
    a later night finds what the first one stored); one result per night."""
    from ibkr_tasks.client.ratelimit import get_limiter

    reset_limiters()
    results = []
    trades_units = 1 if sc.fa else sc.accounts
    with tempfile.TemporaryDirectory() as tmp, running_simulator(sc) as sim:
        os.environ["IBKR_API_URL"] = sim.api_url
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        before = sim.stats()
        late_before: dict[str, float] = {}
        known: set[int] = set()
        for night in range(1, nights + 1):
            if night > 1:
                # Nights are hours apart: IBKR's per-endpoint windows (trades, /portfolio/accounts: 1
                # per 5 s) of the last night have long closed. Wait them out, untimed.
                # The limiter keeps them with its margin, from the pacing store's record of last night.
                margin = 1 + IBKRSettings().rate_margin
                time.sleep(max(TRADES.interval, PORTFOLIO_ACCOUNTS.interval) * margin + 0.1)
            started_at = time.time()
            started = time.perf_counter()
            try:
                asyncio.run(fn(ledger_url, days))
            except (Exception, SystemExit) as exc:  # e.g. a 429 that outlasted the retries: still report
                print(f"  {name} #{night} failed: {type(exc).__name__}: {str(exc)[:200]}")
            wall = time.perf_counter() - started
            ended_at = time.time()
            if trace is not None:
                print_trace(f"{name} #{night}", trace.take(), started_at, ended_at)
            stats = sim.stats()
            where = {
                k: n - before.get("rate_limit_violations_by_endpoint", {}).get(k, 0)
                for k, n in stats.get("rate_limit_violations_by_endpoint", {}).items()
            }
            if any(where.values()):
                print(f"  {name} #{night}: IBKR limits crossed at {where} (a penalty box follows)")
            backend = get_limiter(IBKRSettings()).backend
            requests = {k: n - before["requests"].get(k, 0) for k, n in stats["requests"].items()}
            known_after, unknown, positions = night_facts(ledger_url, known)
            needed = needed_requests(trades=trades_units, unknown=unknown, positions=positions)
            first = stats["first_request_at"]
            results.append(
                {
                    "name": f"{name} #{night}",
                    "wall": wall,
                    "bound": physical_bound(needed),
                    "needed": sum(needed.values()),
                    "requests": sum(requests.values()),
                    "trades": requests.get("GET /iserver/account/trades", 0),
                    "contract_info": sum(requests.get(k, 0) for k in CONTRACT_INFO),
                    "unknown": unknown,
                    "429": stats.get("responses_429", 0) - before.get("responses_429", 0),
                    "violations": stats.get("rate_limit_violations", 0)
                    - before.get("rate_limit_violations", 0),
                    **{k: v - late_before.get(k, 0) for k, v in lateness(backend).items()},
                    # before the first API request arrived / after the last one: time outside the API
                    "head": (first - started_at) if first and night == 1 else float("nan"),
                    "tail": ended_at - (stats["last_request_at"] or ended_at),
                }
            )
            before, late_before, known = stats, lateness(backend), known_after
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50, help="client accounts of the FA login")
    parser.add_argument("--multi-accounts", type=int, default=10, help="accounts of the multi-account login")
    parser.add_argument("--positions", type=int, default=250)
    parser.add_argument("--fills", type=int, default=200)
    parser.add_argument("--no-direct", action="store_true", help="skip the run without Prefect")
    parser.add_argument("--no-multi", action="store_true", help="skip the multi-account login")
    parser.add_argument("--trace", action="store_true", help="print where each night idled between requests")
    parser.add_argument("--gc", action="store_true", help="print garbage collections that took over 20 ms")
    args = parser.parse_args(argv)
    if args.gc:
        watch_gc()
    trace = RequestTrace() if args.trace else None
    fa = scenario(args.accounts, args.positions, args.fills, fa=True)
    multi = scenario(args.multi_accounts, args.positions, args.fills, fa=False)
    print(
        f"reconcile bench: {args.positions} positions x {args.fills} fills/day per account, FA login with "
        f"{args.accounts} client accounts, multi-account login with {args.multi_accounts} accounts; 30 ms "
        f"latency, IBKR limits enforced (gateway: {GATEWAY_GLOBAL.requests} req/s, trades 1 per "
        f"{TRADES.interval:g} s)"
    )
    print("warming up Prefect (ephemeral server start, not timed) ...", flush=True)
    from prefect import flow as prefect_flow

    @prefect_flow
    async def warm_up() -> None:
        return None

    asyncio.run(warm_up())

    results = []
    if not args.no_direct:
        results += measure("FA direct", fa, 1, direct, nights=2, trace=trace)
    results += measure("FA flow", fa, 1, flow, nights=2, trace=trace)
    if not args.no_multi:
        results += measure("multi flow", multi, 1, flow, nights=2, trace=trace)
    print(
        f"\n{'run':<14} {'wall s':>7} {'bound s':>8} {'ratio':>6} {'needed':>7} {'sent':>6} {'trades':>6}"
        f" {'unknown':>7} {'contract info':>13} {'429s':>5} {'violations':>10} {'late':>5} {'late s':>6} {'writes':>6} {'w s':>5} {'head s':>7} {'tail s':>7}"
    )
    for r in results:
        r["ratio"] = r["wall"] / r["bound"] if r["bound"] else float("nan")
        print(
            f"{r['name']:<14} {r['wall']:>7.2f} {r['bound']:>8.2f} {r['ratio']:>6.3f} {r['needed']:>7} "
            f"{r['requests']:>6} {r['trades']:>6} {r['unknown']:>7} {r['contract_info']:>13} {r['429']:>5} "
            f"{r['violations']:>10} {r['late']:>5} {r['late_s']:>6.2f} {r['late_w']:>6} {r['late_w_s']:>5.2f} {r['head']:>7.2f} {r['tail']:>7.2f}"
        )
    print(
        "(bound: the fewest requests the night needs under IBKR's limits; needed/sent: those requests and "
        "the ones the client sent;\n unknown: traded instruments without contract info before the night; "
        "late/late s: wake-ups of the limiter later than its tolerance and their summed lateness;\n writes/w s: "
        "requests that reached the socket later than twice the tolerance after their instant (each took a new one);\n head: start to the first API request; tail: the last API request to the end)"
    )
    flows = [r for r in results if " flow " in r["name"]]
    worst = max(r["ratio"] for r in flows)
    print(f"\nworst flow wall / physical bound: {worst:.3f}  (goal <= 1.1 on both nights, both logins)")
    print(f"429s answered: {sum(r['429'] for r in results)}  (goal 0)")
    if not args.no_direct:
        d = sum(r["wall"] for r in results if r["name"].startswith("FA direct"))
        f = sum(r["wall"] for r in results if r["name"].startswith("FA flow"))
        print(
            f"Prefect orchestration overhead (FA flow vs direct, both nights): {(f - d) / d * 100:+.1f} %  (goal <= 10 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

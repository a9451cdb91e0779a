"""Pacing benchmark: 500 mixed requests through the real limiter + transport against a local stub.

66 concurrent tasks (each issuing its share of one endpoint's requests back to back, all started at
once) go through several Transports that share the process-wide limiter, the way one process serving
many accounts would run. An in-process ASGI stub (httpx.ASGITransport; a little random "network" delay
before each arrival) records the arrival time of every request and counts violations of IBKR's exact
limits (no safety margin) with a sliding window. Printed per endpoint: requests, achieved rate,
allowed rate, ratio and violations. Goal: ratio >= 0.95 where the endpoint's own limit was the
binding one ("saturated"), and zero violations everywhere.

Run: ``.venv/bin/python bench/pacing.py`` (about 55 s: 500 requests at the gateway's 10 req/s).
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ibkr_tasks.client.ratelimit import (
    GATEWAY_GLOBAL,
    LIVE_ORDERS,
    PORTFOLIO_ACCOUNTS,
    SNAPSHOT,
    TICKLE,
    TRADES,
    InProcessBackend,
    Limit,
    get_limiter,
)
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

ACCOUNTS = ["DU1000001", "DU1000002", "DU1000003", "DU1000004", "DU1000005"]


@dataclass(frozen=True)
class Kind:
    """One endpoint family of the workload: how many requests, from how many concurrent tasks, and the
    exact IBKR limit the stub checks it against."""

    name: str
    limit: Limit | None
    count: int
    tasks: int


# 500 requests in all, from 66 concurrent tasks. Endpoints slower than the global limit get one task
# per request, so all their requests queue on their own limit from the start ("saturated"); the
# per-5-second ones get only a few requests to keep the run under a minute.
WORKLOAD = [
    Kind("snapshot", SNAPSHOT, 150, 10),
    Kind("trades", TRADES, 4, 4),
    Kind("live_orders", LIVE_ORDERS, 4, 4),
    Kind("portfolio_accounts", PORTFOLIO_ACCOUNTS, 4, 4),
    Kind("positions", None, 100, 5),
    Kind("tickle", TICKLE, 20, 20),
    Kind("other", None, 218, 19),
]


def classify(method: str, path: str) -> str:
    """Which stats bucket a request path belongs to (as the stub sees it)."""
    path = path.removeprefix("/v1/api")
    if path == "/iserver/marketdata/snapshot":
        return "snapshot"
    if path == "/iserver/account/trades":
        return "trades"
    if path == "/iserver/account/orders" and method == "GET":
        return "live_orders"
    if path in ("/portfolio/accounts", "/portfolio/subaccounts"):
        return "portfolio_accounts"
    if path.startswith("/portfolio/") and "/positions/" in path:
        return "positions"
    if path == "/tickle":
        return "tickle"
    if path == "/iserver/accounts":
        return "iserver_accounts"
    return "other"


class Stub:
    """A Client Portal stand-in that only records arrival times and answers 200."""

    def __init__(self, jitter_s: float) -> None:
        self.jitter_s = jitter_s
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.all: list[float] = []

    async def handle(self, request: Request) -> JSONResponse:
        if self.jitter_s:
            await asyncio.sleep(random.uniform(0, self.jitter_s))  # network delay varies per request
        now = time.monotonic()
        kind = classify(request.method, request.url.path)
        self.arrivals[kind].append(now)
        self.all.append(now)
        if kind == "iserver_accounts":
            return JSONResponse({"accounts": ACCOUNTS})
        if kind == "portfolio_accounts":
            return JSONResponse([{"id": a, "accountId": a} for a in ACCOUNTS])
        if kind == "tickle":
            return JSONResponse({"session": "bench", "iserver": {"authStatus": {"authenticated": True}}})
        return JSONResponse([])

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])


def violations(times: list[float], limit: Limit) -> int:
    """Requests that arrived while ``limit.requests`` others were already inside the trailing window."""
    times = sorted(times)
    count = 0
    j = 0
    for i, t in enumerate(times):
        while t - times[j] >= limit.per:
            j += 1
        if i - j + 1 > limit.requests:
            count += 1
    return count


def achieved_rate(times: list[float]) -> float | None:
    times = sorted(times)
    if len(times) < 2 or times[-1] == times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def request_for(kind: str, i: int) -> tuple[str, str, dict[str, str] | None]:
    account = ACCOUNTS[i % len(ACCOUNTS)]
    return {
        "snapshot": (
            "GET",
            "/iserver/marketdata/snapshot",
            {"conids": str(265598 + i), "fields": "31,84,86"},
        ),
        "trades": ("GET", "/iserver/account/trades", {"days": "1"}),
        "live_orders": ("GET", "/iserver/account/orders", None),
        "portfolio_accounts": ("GET", "/portfolio/accounts", None),
        "positions": ("GET", f"/portfolio/{account}/positions/{i % 3}", None),
        "tickle": ("POST", "/tickle", None),
        "other": ("GET", f"/iserver/contract/{1000 + i}/info", None),
    }[kind]


async def run(jitter_ms: float, transports: int, seed: int) -> int:
    random.seed(seed)
    stub = Stub(jitter_ms / 1000)
    app = stub.app()
    settings = IBKRSettings(api_url="http://stub-gateway/v1/api", access_token="bench-placeholder")  # noqa: S106
    clients = [Transport(settings, http_transport=httpx.ASGITransport(app=app)) for _ in range(transports)]
    assert len({id(c.limiter) for c in clients}) == 1, "transports must share the registered limiter"
    assert clients[0].limiter is get_limiter(settings)

    # Each task issues its share of one kind's requests back to back; all tasks start at once.
    tasks: list[list[tuple[str, str, dict[str, str] | None]]] = []
    for kind in WORKLOAD:
        shares: list[list[tuple[str, str, dict[str, str] | None]]] = [[] for _ in range(kind.tasks)]
        for i in range(kind.count):
            shares[i % kind.tasks].append(request_for(kind.name, i))
        tasks.extend(shares)
    random.shuffle(tasks)
    total = sum(len(t) for t in tasks)
    assert total == 500

    async def worker(n: int, share: list[tuple[str, str, dict[str, str] | None]]) -> None:
        client = clients[n % transports]
        for method, path, params in share:
            await client.request(method, path, params=params)

    started = time.monotonic()
    await asyncio.gather(*(worker(n, share) for n, share in enumerate(tasks)))
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()

    print(
        f"pacing benchmark: {total} requests (+{len(stub.all) - total} preflights) from {len(tasks)} concurrent "
        f"tasks through {transports} transports sharing one limiter; "
        f"stub arrival jitter 0-{jitter_ms:g} ms; wall time {elapsed:.1f} s"
    )
    header = f"{'endpoint':<20} {'requests':>8} {'achieved/s':>11} {'allowed/s':>10} {'ratio':>6} {'saturated':>9} {'violations':>10}"
    print(header)
    print("-" * len(header))
    total_violations = 0
    worst_saturated = 1.0
    rows: list[tuple[str, list[float], Limit | None, bool]] = [
        ("global (all)", stub.all, GATEWAY_GLOBAL, True)
    ]
    for kind in WORKLOAD:
        limit = kind.limit
        # An endpoint's own limit is what binds when all its requests wait from the start and it is slower
        # than the global limit (snapshot's 10/s equals the global one, which it shares with everything).
        saturated = limit is not None and limit.rate < GATEWAY_GLOBAL.rate and kind.tasks >= kind.count
        rows.append((kind.name, stub.arrivals[kind.name], limit, saturated))
    rows.append(("iserver_accounts", stub.arrivals["iserver_accounts"], None, False))
    for name, times, limit, saturated in rows:
        rate = achieved_rate(times)
        allowed = limit.rate if limit else None
        ratio = rate / allowed if rate is not None and allowed else None
        bad = violations(times, limit) if limit else 0
        total_violations += bad
        if saturated and ratio is not None:
            worst_saturated = min(worst_saturated, ratio)
        print(
            f"{name:<20} {len(times):>8} "
            f"{(f'{rate:.3f}' if rate is not None else '-'):>11} "
            f"{(f'{allowed:g}' if allowed else '-'):>10} "
            f"{(f'{ratio:.3f}' if ratio is not None else '-'):>6} "
            f"{('yes' if saturated else 'no'):>9} {bad:>10}"
        )
    backend = clients[0].limiter.backend
    if isinstance(backend, InProcessBackend):
        print(
            f"\nlimiter: {backend.late_wakeups} late wake-ups (event loop or CPU busy; each costs a slot), "
            f"{backend.displacements} waiting requests pushed back one slot"
        )
    store = clients[0].limiter.store
    if store is None:
        print("cross-process pacing file: off (IBKR_PACING_DIR=off)")
    else:
        print(
            f"cross-process pacing file {store.path}: locked {store.transactions} times (slow limits only), "
            f"{store.busy_seconds * 1000:.1f} ms in all, {store.problems} problems"
        )
    ok = total_violations == 0 and worst_saturated >= 0.95
    print(
        f"violations of IBKR's exact limits: {total_violations}; lowest ratio among saturated limits: "
        f"{worst_saturated:.3f} -> {'OK' if ok else 'GOAL MISSED'} (goal: 0 violations, ratio >= 0.95)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jitter-ms", type=float, default=3.0, help="max random arrival delay per request")
    parser.add_argument("--transports", type=int, default=5, help="transports (accounts) sharing the limiter")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.jitter_ms, args.transports, args.seed))


if __name__ == "__main__":
    sys.exit(main())

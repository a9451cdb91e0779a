"""``make demo``: the nightly reconciliation, end to end, with no IBKR account.

1. starts the built-in gateway simulator on a loopback port (an FA login with paper accounts,
   options, a future, a ForecastEx event contract; late commissions, a correction, option expiries
   and event netting switched on; IBKR's rate limits enforced);
2. runs ``nightly_reconciliation`` through Prefect into a fresh SQLite ledger and prints what it did;
3. runs it a second and third time: nothing is duplicated, late commissions get finalised;
4. checks the ledger against the simulator's ground truth;
5. the morning step: ``flex_reconciliation`` books the simulator's Activity statement (Flex Web
   Service): fills confirmed, commissions finalised from the statement, cash transactions booked,
   positions compared; and says where everything is.

Run records go to a project-local Prefect home (``.prefect-home``), so
``PREFECT_HOME=.prefect-home .venv/bin/prefect server start`` shows them in the UI afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFECT_HOME = ROOT / ".prefect-home"
LEDGER_PATH = ROOT / "demo_ledger.db"

# Before anything imports prefect: a project-local home, quiet internals, the flow's own logs kept.
os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class DemoFailed(Exception):
    """A run of the demo did not complete: the demo stops and says why."""


def _state_data(state: Any, what: str) -> dict[str, Any]:
    """The summary a completed run returns; :class:`DemoFailed` naming the run, its state and its
    message otherwise. A run that failed before it had a summary (bad settings, an unreachable
    gateway) carries its exception as its result, not the summary."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, dict):  # Completed, or Failed with its summary (shown, then the demo stops)
        return data
    reason = state.message or (f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else "")
    raise DemoFailed(f"{what} ended {state.name}: {reason or 'no message'}")


async def _nightly(days: int, ledger_url: str) -> Any:
    from flows.nightly_reconciliation import nightly_reconciliation

    return await nightly_reconciliation(days=days, ledger_url=ledger_url, return_state=True)


async def _statement(from_date: Any, to_date: Any, ledger_url: str) -> Any:
    from flows.flex_reconciliation import flex_reconciliation

    return await flex_reconciliation(
        from_date=from_date, to_date=to_date, ledger_url=ledger_url, poll_seconds=0.2, return_state=True
    )


def _print_run(title: str, state_data: dict[str, Any], seconds: float) -> None:
    print(f"\n== {title} ({seconds:.1f} s) ==")
    header = (
        f"{'account':<11} {'status':<9} {'fills':>5} {'new':>4} {'upd':>4} {'sup':>4} "
        f"{'comm fin':>8} {'comm chg':>8} {'pending':>7} {'quar':>4} {'breaks':>6}"
    )
    print(header)
    print("-" * len(header))
    for a in state_data["accounts"]:
        print(
            f"{a['account_id']:<11} {a['status']:<9} {a['fills_seen']:>5} {a['fills_new']:>4} "
            f"{a['fills_updated']:>4} {a['fills_superseded']:>4} {a['commissions_finalised']:>8} "
            f"{a['commissions_changed']:>8} {a['commissions_pending']:>7} {a['quarantined']:>4} {a['breaks']:>6}"
        )
        if a.get("error"):
            print(f"    error: {a['error']}")


def _ledger_totals(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    queries = {
        "accounts": "select count(*) from accounts",
        "fills": "select count(*) from fills",
        "current fills": "select count(*) from fills where not superseded",
        "superseded fills": "select count(*) from fills where superseded",
        "commissions final": "select count(*) from commissions where status = 'final'",
        "commissions pending": "select count(*) from commissions where status = 'pending'",
        "open breaks": "select count(*) from breaks where status = 'open'",
        "quarantined rows": "select count(*) from quarantine",
        "reconciliation runs": "select count(*) from reconciliation_runs",
        "cash transactions": "select count(*) from cash_transactions",
        "statement positions": "select count(*) from statement_positions",
    }
    try:
        with engine.connect() as conn:
            return {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in queries.items()}
    finally:
        engine.dispose()


def _print_statement_run(title: str, data: dict[str, Any], seconds: float) -> None:
    print(f"\n== {title} ({seconds:.1f} s) ==")
    header = (
        f"{'account':<11} {'confirmed':>9} {'added':>5} {'cancelled':>9} {'comm fin':>8} {'comm chg':>8} "
        f"{'cash':>4} {'positions':>9} {'breaks':>6}"
    )
    print(header)
    print("-" * len(header))
    for a in data["accounts"]:
        print(
            f"{a['account_id']:<11} {a['fills_confirmed']:>9} {a['fills_added']:>5} {a['fills_cancelled']:>9} "
            f"{a['commissions_finalised']:>8} {a['commissions_changed']:>8} {a['cash_transactions']:>4} "
            f"{a['positions_compared']:>9} {a['breaks']:>6}"
        )


def _morning(ledger_url: str, sim: object, days: int) -> int:
    """The morning step: the Activity statement of the demo's days, from the simulator's Flex service."""
    from datetime import datetime, timedelta

    from ibkr_tasks.flex.times import EASTERN

    base_url = sim.base_url  # type: ignore[attr-defined]
    os.environ["IBKR_FLEX_URL"] = f"{base_url}/flex"
    os.environ["IBKR_FLEX_TOKEN"] = "demo-flex-token"  # noqa: S105 - the simulator accepts any token
    os.environ["IBKR_FLEX_QUERY_ID"] = "1"
    end_day = datetime.now(EASTERN).date()  # the simulator runs on the wall clock
    # The demo's trading days, and the start of the month before (fees, interest, dividends).
    start_day = min(end_day - timedelta(days=days), end_day.replace(day=1) - timedelta(days=1))
    t0 = time.monotonic()
    state = asyncio.run(_statement(start_day, end_day, ledger_url))
    data = _state_data(state, "the morning statement run")
    _print_statement_run(
        f"morning: the Activity statement {start_day}..{end_day} (Flex Web Service)\n   {state.name}: {state.message}",
        data,
        time.monotonic() - t0,
    )
    if not state.is_completed():
        raise DemoFailed(f"the morning statement run ended {state.name}: {state.message}")
    totals = _ledger_totals(ledger_url)
    print("ledger:", ", ".join(f"{k} {v}" for k, v in totals.items()))
    breaks = sum(a["breaks"] for a in data["accounts"])
    print(
        f"morning: {sum(a['commissions_finalised'] for a in data['accounts'])} commission(s) final from the "
        f"statement, {sum(a['cash_transactions'] for a in data['accounts'])} cash transaction(s) booked, "
        f"{breaks} break(s)"
    )
    return breaks


def main() -> int:
    try:
        return _demo()
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


def _demo() -> int:
    from ibkr_tasks.sim import Scenario
    from ibkr_tasks.testing import running_simulator
    from ibkr_tasks.verify import compare_ledger_with_truth

    started = time.monotonic()
    LEDGER_PATH.unlink(missing_ok=True)
    ledger_url = f"sqlite:///{LEDGER_PATH}"
    # The demo scenario, with enough corrections, changed commissions and junk rows to show each of
    # them in a small run (the rates are per fill).
    scenario = Scenario.demo()
    scenario = scenario.model_copy(
        update={
            "quirks": scenario.quirks.model_copy(
                update={"corrections": 0.12, "changed_commission": 0.05, "malformed_ratio": 0.04}
            )
        }
    )
    days = scenario.history_days
    print("ibkr-tasks demo: nightly reconciliation against the built-in Client Portal Gateway simulator")
    with running_simulator(scenario) as sim:
        os.environ["IBKR_API_URL"] = sim.api_url
        os.environ["IBKR_ACCESS_TOKEN"] = "demo-gateway"  # a local gateway accepts any placeholder  # noqa: S105
        print(
            f"simulator: {sim.api_url} (seed {scenario.seed}, {scenario.accounts} paper accounts on an FA login)"
        )
        print("starting Prefect (a local server in the background; the first start takes ~10-20 s) ...")

        totals: list[dict[str, int]] = []
        runs = [
            f"run 1: first reconciliation ({days} days of executions)",
            "run 2: the same again (nothing may be duplicated; late commissions arrive)",
            # Commission changes come one step per trades call; the statement holds the final amount,
            # and an amount the Client Portal has not caught up with would be a (true) break there.
            "run 3: the evening's last run (the last commission changes arrive)",
        ]
        for n, title in enumerate(runs, start=1):
            t0 = time.monotonic()
            state = asyncio.run(_nightly(days, ledger_url))
            data = _state_data(state, f"nightly run {n}")
            _print_run(f"{title}\n   {state.name}: {state.message}", data, time.monotonic() - t0)
            if not state.is_completed():
                raise DemoFailed(f"nightly run {n} ended {state.name}: {state.message}")
            totals.append(_ledger_totals(ledger_url))
            print("ledger:", ", ".join(f"{k} {v}" for k, v in totals[-1].items()))
            if n == 2:
                grew = totals[1]["current fills"] - totals[0]["current fills"]
                print(
                    f"run 2: {grew} more current fill(s) than run 1 "
                    f"({'nothing duplicated' if grew == 0 else 'DUPLICATES'}); "
                    f"{totals[1]['superseded fills']} corrected execution(s) kept as superseded revisions"
                )

        print()

        report = compare_ledger_with_truth(ledger_url, sim)
        print(report.summary())
        morning_breaks = _morning(ledger_url, sim, days)
        stats = sim.stats()
        print(
            f"simulator: {stats.get('requests_total', '?')} API requests, {stats.get('rate_limited', 0)} answered 429"
        )

    print(f"\nledger file:    {LEDGER_PATH}")
    print(
        f"Prefect runs:   {PREFECT_HOME} (see them: PREFECT_HOME={PREFECT_HOME} .venv/bin/prefect server start,"
    )
    print("                then open http://127.0.0.1:4200/runs)")
    print(f"demo took {time.monotonic() - started:.1f} s")
    ok = report.ok and totals[1]["current fills"] == totals[0]["current fills"] and morning_breaks == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

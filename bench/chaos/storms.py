"""The fault storms: the simulator's quirks and run-time faults (docs/simulator.md), one at a time and
all at once. Each storm is applied to a running simulator, new activity is generated under it, and a
nightly run must then bring the ledger to the simulator's truth, retried as a user would (a rerun),
without one 429 provoked by the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Storm:
    name: str
    quirks: dict[str, Any] = field(default_factory=dict)  # switched on for the whole storm
    before: dict[str, Any] = field(default_factory=dict)  # /sim/faults before the first run
    during: tuple[tuple[float, dict[str, Any]], ...] = ()  # (seconds after the run's start, /sim/faults)
    recover: dict[str, Any] = field(default_factory=dict)  # /sim/faults after a failed run: the outage ends
    may_fail: bool = False  # a run may rightly end Failed (then the user reruns)
    account_fault: bool = False  # ``before`` names the first paper account in fail_accounts


STORMS: tuple[Storm, ...] = (
    Storm("late commissions 60%", quirks={"late_commissions": 0.6}),
    Storm("changed commissions 40%", quirks={"changed_commission": 0.4}),
    Storm("corrections 40%", quirks={"corrections": 0.4}),
    Storm("junk trades rows 30%", quirks={"malformed_ratio": 0.3}),
    Storm("stale positions cache", quirks={"positions_cache": True}),
    Storm("5xx on 20% of requests", quirks={"error_rate_5xx": 0.2}, may_fail=True),
    Storm("burst of 8 5xx", before={"fail_next_requests": 8}, may_fail=True),
    Storm("slow responses (30% +700 ms)", quirks={"slow_ratio": 0.3, "slow_ms": 700}),
    Storm("session expires every 12 requests", quirks={"session_expiry_requests": 12}),
    # 8 s: longer than the 5 s spacing of IBKR's slowest endpoints, or no request could ever get through
    Storm("session expires 8 s after each login", quirks={"session_expiry_seconds": 8.0}),
    Storm("ssodh/init required", quirks={"require_ssodh_init": True}),
    Storm("accounts preflight required", quirks={"require_accounts_preflight": True}),
    Storm(
        "session expired and bridge dropped mid-run",
        during=((0.4, {"expire_session": True}), (1.0, {"drop_bridge": True})),
    ),
    Storm(
        "competing session, then taken back",
        before={"competing": True},
        recover={"competing": False},
        may_fail=True,
    ),
    Storm(
        "one account's endpoints down, then back",
        account_fault=True,
        recover={"fail_accounts": []},
        may_fail=True,
    ),
    Storm(
        "everything at once",
        quirks={
            "late_commissions": 0.3,
            "changed_commission": 0.2,
            "corrections": 0.3,
            "malformed_ratio": 0.1,
            "positions_cache": True,
            "error_rate_5xx": 0.1,
            "slow_ratio": 0.1,
            "slow_ms": 300,
            "session_expiry_requests": 25,
            "require_ssodh_init": True,
            "require_accounts_preflight": True,
        },
        during=((0.6, {"expire_session": True}),),
        may_fail=True,
    ),
)

"""Check a ledger against the simulator's ground truth (``GET /sim/truth/{accountId}``).

Used by the demo, the flow tests and the benchmarks: after a reconciliation the ledger must hold
exactly the simulator's executions for each account (same ids, superseded revisions marked, same
quantities, prices and commissions) and the same positions, and nothing of any other account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ibkr_tasks.ledger.positions import ledger_positions
from ibkr_tasks.ledger.schema import CommissionRow, FillRow, ReconciliationRunRow


class TruthSource(Protocol):
    def truth(self, account_id: str) -> dict[str, Any]: ...


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


@dataclass
class AccountCheck:
    account_id: str
    problems: list[str] = field(default_factory=list)
    executions: int = 0
    positions: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class TruthReport:
    accounts: list[AccountCheck]

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.accounts)

    def summary(self) -> str:
        lines = []
        for a in self.accounts:
            verdict = "matches" if a.ok else f"{len(a.problems)} difference(s)"
            lines.append(
                f"{a.account_id}: ledger {verdict} the simulator's ground truth "
                f"({a.executions} executions, {a.positions} positions)"
            )
            lines += [f"    - {p}" for p in a.problems[:10]]
        return "\n".join(lines)


def check_account(
    session: Session, account_id: str, truth: dict[str, Any], *, max_problems: int = 50
) -> AccountCheck:
    check = AccountCheck(account_id=account_id)
    problems = check.problems
    fills = {
        r.execution_id: r for r in session.scalars(select(FillRow).where(FillRow.account_id == account_id))
    }
    commissions = {
        r.execution_id: r
        for r in session.scalars(select(CommissionRow).where(CommissionRow.account_id == account_id))
    }
    executions = {e["execution_id"]: e for e in truth.get("executions", [])}
    check.executions = len(executions)
    for exec_id, e in executions.items():
        row = fills.get(exec_id)
        if row is None:
            problems.append(f"execution {exec_id} missing from the ledger")
            continue
        if bool(e.get("superseded")) != bool(row.superseded):
            problems.append(f"execution {exec_id}: superseded {row.superseded}, truth {e.get('superseded')}")
        for name, ledger_value in (("size", row.quantity), ("price", row.price)):
            if _dec(e.get(name)) != ledger_value:
                problems.append(f"execution {exec_id}: {name} {ledger_value}, truth {e.get(name)}")
        if e.get("side") != row.side:
            problems.append(f"execution {exec_id}: side {row.side}, truth {e.get('side')}")
        commission = commissions.get(exec_id)
        ledger_amount = commission.amount if commission else None
        if _dec(e.get("commission")) != ledger_amount:
            problems.append(f"execution {exec_id}: commission {ledger_amount}, truth {e.get('commission')}")
    for exec_id in fills.keys() - executions.keys():
        problems.append(f"ledger holds {exec_id}, which is not an execution of {account_id}")

    broker = {int(p["conid"]): _dec(p["position"]) or Decimal(0) for p in truth.get("positions", [])}
    check.positions = sum(1 for q in broker.values() if q != 0)
    ledger = {conid: p.quantity for conid, p in ledger_positions(session, account_id).items()}
    for conid in sorted(broker.keys() | ledger.keys()):
        expected = ledger.get(conid, Decimal(0))
        actual = broker.get(conid, Decimal(0))
        if expected != actual:
            problems.append(f"position {conid}: ledger {expected}, truth {actual}")
    del problems[max_problems:]
    return check


def compare_ledger_with_truth(
    ledger_url: str, source: TruthSource, account_ids: list[str] | None = None
) -> TruthReport:
    """Compare every reconciled account (or ``account_ids``) with the simulator's truth."""
    engine = create_engine(ledger_url)
    try:
        with Session(engine) as session:
            if account_ids is None:  # every account a reconciliation ran for
                account_ids = list(
                    session.scalars(
                        select(ReconciliationRunRow.account_id)
                        .distinct()
                        .order_by(ReconciliationRunRow.account_id)
                    )
                )
            return TruthReport([check_account(session, a, source.truth(a)) for a in account_ids])
    finally:
        engine.dispose()

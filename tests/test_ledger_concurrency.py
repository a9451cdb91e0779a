"""Two ingests of the same account at the same time: no duplicates, no deadlock, exact counts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from ibkr_tasks.ledger import FillRow, IngestResult, Ledger, QuarantineRow
from ibkr_tasks.ledger.testing import stream_fills
from ibkr_tasks.models import RejectedRow

ACCOUNT = "DU1234567"
OTHER = "DUO873728"
N = 600


def _run_together(ledger: Ledger, jobs: list[tuple[str, list[Any], list[RejectedRow]]]) -> list[IngestResult]:
    barrier = threading.Barrier(len(jobs))

    def job(account: str, fills: list[Any], rejected: list[RejectedRow], i: int) -> IngestResult:
        barrier.wait(timeout=30)
        return ledger.ingest(account, fills, f"run-{i}", rejected=rejected, batch_size=100)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job, *j, i) for i, j in enumerate(jobs)]
        return [f.result(timeout=120) for f in futures]


def _check(ledger: Ledger, url_kind: str) -> None:
    # Accounts known beforehand: the first insert of an account row must not be what serialises runs.
    ledger.upsert_accounts([ACCOUNT, OTHER])
    fills = list(stream_fills(ACCOUNT, N))
    shared_bad = [
        RejectedRow(kind="fill", account_id=None, reason=f"bad {i}", raw={"i": i}) for i in range(50)
    ]
    results = _run_together(
        ledger,
        [
            (ACCOUNT, fills, shared_bad),
            (ACCOUNT, list(reversed(fills)), list(reversed(shared_bad))),
            (OTHER, list(stream_fills(OTHER, N)), shared_bad),
        ],
    )
    same_account = results[:2]
    # Serialised per account: exactly one of the two saw every fill as new, the other as unchanged.
    assert sorted((r.fills_new, r.fills_unchanged) for r in same_account) == [(0, N), (N, 0)], url_kind
    assert results[2].fills_new == N
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(FillRow)) == 2 * N
        assert session.scalar(select(func.count()).select_from(QuarantineRow)) == 50


@pytest.mark.postgres
def test_two_runs_for_the_same_account_at_once_on_postgresql(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ledger.upgrade()
    try:
        _check(ledger, "postgresql")
    finally:
        ledger.dispose()


def test_two_runs_for_the_same_account_at_once_on_sqlite(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    ledger.upgrade()
    try:
        _check(ledger, "sqlite")
    finally:
        ledger.dispose()

"""When a positions snapshot is filed: chosen by the ledger under the account's lock, never twice."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from ibkr_tasks.ledger import Ledger, PositionSnapshotRow, ReconcileResult
from ibkr_tasks.ledger import positions as positions_mod
from ibkr_tasks.ledger.testing import T0, make_position

ACCOUNT = "DU1234567"
AAPL = 265598
NOW = T0 + timedelta(days=1)  # "now" for the ledger in these tests


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's clock stands still (as a coarse clock, or two runs within one tick, would look)."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return NOW if tz is not None else NOW.replace(tzinfo=None)

    monkeypatch.setattr(positions_mod, "datetime", Frozen)


def _together(ledger: Ledger, n: int, **kwargs: Any) -> list[ReconcileResult]:
    """``n`` runs reconcile the same account at the same moment, each in its own thread."""
    barrier = threading.Barrier(n)

    def one(i: int) -> ReconcileResult:
        barrier.wait(timeout=30)
        return ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], f"run-{i}", **kwargs)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(1, n + 1)]
        return [f.result(timeout=120) for f in futures]


def _snapshot_times(ledger: Ledger) -> dict[str, list[datetime]]:
    with ledger.session() as session:
        rows = session.execute(
            select(PositionSnapshotRow.run_id, PositionSnapshotRow.taken_at).where(
                PositionSnapshotRow.account_id == ACCOUNT
            )
        ).all()
    found: dict[str, list[datetime]] = {}
    for run_id, taken_at in rows:
        found.setdefault(run_id, []).append(taken_at)
    return found


def test_concurrent_runs_of_one_account_never_pick_the_same_snapshot_time(
    ledger: Ledger, frozen_clock: None
) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-0", taken_at=T0)

    results = _together(ledger, 2)

    times = sorted(r.taken_at for r in results)
    assert times == [NOW, NOW + timedelta(microseconds=1)]
    assert all(not r.opening and r.breaks == [] for r in results)  # both compared with the opening
    assert _snapshot_times(ledger) == {
        "run-0": [T0],
        "run-1": [results[0].taken_at],
        "run-2": [results[1].taken_at],
    }


def test_the_lower_bound_from_the_fills_holds_for_concurrent_runs(ledger: Ledger) -> None:
    """The broker's clock runs ahead: its newest trade time is in our future. Both runs file at or
    after it, at distinct times."""
    ahead = datetime.now(UTC) + timedelta(hours=5)

    results = _together(ledger, 2, not_before=ahead)

    times = sorted(r.taken_at for r in results)
    assert times == [ahead, ahead + timedelta(microseconds=1)]
    assert sorted(r.opening for r in results) == [False, True]  # one opening, one comparison
    with ledger.session() as session:
        assert session.scalar(select(func.count(func.distinct(PositionSnapshotRow.taken_at)))) == 2


def test_a_new_snapshot_is_filed_after_every_earlier_one(ledger: Ledger, frozen_clock: None) -> None:
    later = NOW + timedelta(hours=1)  # an earlier run filed a snapshot ahead of our clock
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-0", taken_at=later)

    result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-1", not_before=T0)

    assert result.taken_at == later + timedelta(microseconds=1) and result.breaks == []


def test_a_retried_run_replaces_its_own_snapshot(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-0", taken_at=T0)
    first = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="11")], "run-1")
    again = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="11")], "run-1")

    assert again.taken_at > first.taken_at
    assert _snapshot_times(ledger) == {"run-0": [T0], "run-1": [again.taken_at]}
    (open_break,) = ledger.open_breaks(ACCOUNT)  # one break, the retry's
    assert open_break.run_id == "run-1" and open_break.actual == 11


def test_a_retried_opening_run_moves_the_opening_with_its_snapshot(ledger: Ledger) -> None:
    first = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-1")
    again = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-1")

    assert first.opening and again.opening
    assert _snapshot_times(ledger) == {"run-1": [again.taken_at]}
    assert [(p.conid, p.quantity) for p in ledger.current_positions(ACCOUNT)] == [(AAPL, 10)]


def test_a_time_and_a_lower_bound_together_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="not both"):
        ledger.reconcile(ACCOUNT, [], "run-1", taken_at=T0, not_before=T0)

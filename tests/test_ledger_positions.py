"""Ledger positions (opening snapshot + current fills) and position breaks against the broker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from ibkr_tasks.errors import ForeignAccountRows, LedgerError
from ibkr_tasks.ledger import BreakRow, Ledger, PositionSnapshotRow
from ibkr_tasks.ledger.testing import T0, make_fill, make_position

ACCOUNT = "DU1234567"
AAPL, MSFT, IBM = 265598, 272093, 8314
OPEN = T0  # the opening snapshot
DAY1 = T0 + timedelta(days=1)
DAY2 = T0 + timedelta(days=2)


def _at(hours: float) -> dict[str, object]:
    return {"trade_time": OPEN + timedelta(hours=hours)}


def _breaks(ledger: Ledger) -> dict[int, tuple[Decimal | None, Decimal | None, Decimal | None]]:
    return {
        b.conid: (b.expected, b.actual, b.delta) for b in ledger.open_breaks(ACCOUNT) if b.kind == "position"
    }


def test_the_first_snapshot_is_the_opening_and_has_no_breaks(ledger: Ledger) -> None:
    # Fills before the first snapshot are already in the broker's opening position.
    ledger.ingest(ACCOUNT, [make_fill(n=1, conid=AAPL, quantity="5", **_at(-1))], "run-0")
    result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="100")], "run-1", taken_at=OPEN)
    assert result.opening and result.breaks == []
    assert [(p.conid, p.quantity) for p in ledger.current_positions(ACCOUNT)] == [(AAPL, Decimal(100))]


def test_opening_plus_signed_current_fills_matches_the_broker(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="100")], "run-1", taken_at=OPEN)
    fills = [
        make_fill(n=1, conid=AAPL, side="B", quantity="10", **_at(1)),
        make_fill(n=2, conid=AAPL, side="S", quantity="30", **_at(2)),
        make_fill(n=3, conid=MSFT, side="B", quantity="4", multiplier="1", **_at(3)),
        make_fill(n=4, conid=IBM, side="B", quantity="2", multiplier="100", **_at(4)),
        make_fill(n=5, conid=IBM, side="X", quantity="1", multiplier="100", **_at(5)),  # expiry
        make_fill(n=6, conid=MSFT, side="N", quantity="1", **_at(6)),  # netting
        make_fill(
            n=7, conid=AAPL, side="B", quantity="1", trade_time=OPEN
        ),  # at the snapshot: in the opening
    ]
    ledger.ingest(ACCOUNT, fills, "run-2")
    positions = {p.conid: p for p in ledger.current_positions(ACCOUNT)}
    assert {c: p.quantity for c, p in positions.items()} == {
        AAPL: Decimal(80),
        MSFT: Decimal(3),
        IBM: Decimal(1),
    }
    assert positions[IBM].multiplier == Decimal(100)

    broker = [
        make_position(conid=AAPL, position="80"),
        make_position(conid=MSFT, position="3"),
        make_position(conid=IBM, position="1", multiplier="100"),
    ]
    result = ledger.reconcile(ACCOUNT, broker, "run-2", taken_at=DAY1)
    assert not result.opening
    assert result.breaks == []
    assert ledger.open_breaks(ACCOUNT) == []


def test_differences_and_missing_sides_are_breaks_with_expected_actual_delta(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="100")], "run-1", taken_at=OPEN)
    ledger.ingest(
        ACCOUNT,
        [
            make_fill(n=1, conid=AAPL, side="S", quantity="10", **_at(1)),
            make_fill(n=2, conid=MSFT, side="B", quantity="5", **_at(2)),
            make_fill(n=3, conid=IBM, side="B", quantity="3", **_at(3)),
            make_fill(n=4, conid=IBM, side="S", quantity="3", **_at(4)),  # flat: same as missing
        ],
        "run-2",
    )
    broker = [
        make_position(conid=AAPL, position="85"),  # ledger says 90
        make_position(conid=76792991, position="7"),  # the ledger never saw it
        make_position(conid=4815747, position="0"),  # zero = missing, and the ledger has none: fine
    ]  # MSFT missing at the broker, ledger says 5
    result = ledger.reconcile(ACCOUNT, broker, "run-2", taken_at=DAY1)

    got = {b.conid: (b.expected, b.actual, b.delta) for b in result.breaks}
    assert got == {
        AAPL: (Decimal(90), Decimal(85), Decimal(-5)),
        MSFT: (Decimal(5), Decimal(0), Decimal(-5)),
        76792991: (Decimal(0), Decimal(7), Decimal(7)),
    }
    assert _breaks(ledger) == got
    assert {b.run_id for b in ledger.open_breaks(ACCOUNT)} == {"run-2"}


def test_breaks_resolve_when_matching_and_are_replaced_while_still_wrong(ledger: Ledger) -> None:
    ledger.reconcile(
        ACCOUNT,
        [make_position(conid=AAPL, position="10"), make_position(conid=MSFT, position="5")],
        "run-1",
        taken_at=OPEN,
    )
    ledger.reconcile(
        ACCOUNT,
        [make_position(conid=AAPL, position="12"), make_position(conid=MSFT, position="6")],
        "run-2",
        taken_at=DAY1,
    )
    assert _breaks(ledger) == {AAPL: (10, 12, 2), MSFT: (5, 6, 1)}

    # The missing fills arrive for AAPL only.
    ledger.ingest(ACCOUNT, [make_fill(n=1, conid=AAPL, quantity="2", **_at(5))], "run-3")
    result = ledger.reconcile(
        ACCOUNT,
        [make_position(conid=AAPL, position="12"), make_position(conid=MSFT, position="6")],
        "run-3",
        taken_at=DAY2,
    )
    assert [b.conid for b in result.breaks] == [MSFT]
    assert result.resolved == 1
    with ledger.session() as session:
        rows = {(b.run_id, b.conid): (b.status, b.resolved_run) for b in session.scalars(select(BreakRow))}
    assert rows == {
        ("run-2", AAPL): ("resolved", "run-3"),
        ("run-2", MSFT): ("superseded", "run-3"),
        ("run-3", MSFT): ("open", None),
    }
    assert [(b.run_id, b.conid) for b in ledger.open_breaks(ACCOUNT)] == [("run-3", MSFT)]


def test_reconciling_the_same_run_again_is_idempotent(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-1", taken_at=OPEN)
    for _ in range(2):
        result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="11")], "run-2", taken_at=DAY1)
        assert [b.delta for b in result.breaks] == [Decimal(1)]
    assert len(ledger.open_breaks(ACCOUNT)) == 1
    with ledger.session() as session:
        assert (
            len(
                session.scalars(
                    select(PositionSnapshotRow).where(PositionSnapshotRow.run_id == "run-2")
                ).all()
            )
            == 1
        )

    # The retry now matches: its own break goes away.
    ledger.ingest(ACCOUNT, [make_fill(n=1, conid=AAPL, quantity="1", **_at(1))], "run-2")
    assert (
        ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="11")], "run-2", taken_at=DAY1).breaks
        == []
    )
    assert ledger.open_breaks(ACCOUNT) == []


def test_superseded_fills_do_not_count(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [], "run-1", taken_at=OPEN)  # an empty account still gets an opening
    ledger.ingest(ACCOUNT, [make_fill(n=1, revision=1, quantity="10", **_at(1))], "run-2")
    ledger.ingest(ACCOUNT, [make_fill(n=1, revision=2, quantity="8", **_at(1))], "run-2")
    assert (
        ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="8")], "run-2", taken_at=DAY1).breaks
        == []
    )


def test_fills_after_the_snapshot_time_are_not_compared_with_it(ledger: Ledger) -> None:
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="1")], "run-1", taken_at=OPEN)
    ledger.ingest(
        ACCOUNT, [make_fill(n=1, conid=AAPL, quantity="4", trade_time=DAY1 + timedelta(minutes=1))], "run-2"
    )
    assert (
        ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="1")], "run-2", taken_at=DAY1).breaks
        == []
    )
    assert [p.quantity for p in ledger.current_positions(ACCOUNT)] == [Decimal(5)]


def test_positions_of_another_account_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ForeignAccountRows):
        ledger.reconcile(ACCOUNT, [make_position("DUO873728", conid=AAPL)], "run-1")
    with ledger.session() as session:
        assert session.scalars(select(PositionSnapshotRow)).all() == []


def test_the_snapshot_keeps_what_the_broker_said(ledger: Ledger) -> None:
    ledger.reconcile(
        ACCOUNT,
        [
            make_position(
                conid=AAPL, position="10.5", avg_cost=Decimal("187.123456789"), mkt_value=Decimal("1999.99")
            )
        ],
        "run-1",
        taken_at=OPEN,
    )
    with ledger.session() as session:
        row = session.scalars(select(PositionSnapshotRow)).one()
    assert (row.position, row.avg_cost, row.mkt_value, row.taken_at) == (
        Decimal("10.5"),
        Decimal("187.123456789"),
        Decimal("1999.99"),
        OPEN,
    )
    assert row.raw["acctId"] == ACCOUNT


def test_another_runs_snapshot_is_never_replaced(ledger: Ledger) -> None:
    # Two runs filing at the same instant (e.g. a broker clock ahead of ours): the second is refused
    # instead of overwriting the opening snapshot and silently skipping its comparison.
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "run-1", taken_at=OPEN)
    with pytest.raises(LedgerError, match="already filed a positions snapshot"):
        ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="99")], "run-2", taken_at=OPEN)
    with ledger.session() as session:
        rows = session.scalars(
            select(PositionSnapshotRow).where(PositionSnapshotRow.account_id == ACCOUNT)
        ).all()
    assert [(r.run_id, r.position) for r in rows] == [("run-1", Decimal(10))]
    result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="99")], "run-2", taken_at=DAY1)
    assert [b.delta for b in result.breaks] == [Decimal(89)]

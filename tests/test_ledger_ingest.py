"""Ingest of fills and commissions: idempotent, set-based, corrections, commissions, quarantine, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from ibkr_tasks.errors import ForeignAccountRows
from ibkr_tasks.ledger import (
    BreakRow,
    CommissionHistoryRow,
    CommissionRow,
    FillHistoryRow,
    FillRow,
    Ledger,
    QuarantineRow,
)
from ibkr_tasks.ledger.schema import Base
from ibkr_tasks.ledger.testing import make_fill, stream_fills
from ibkr_tasks.models import RejectedRow, parse_fills
from ibkr_tasks.models import fills as fills_module

ACCOUNT = "DU1234567"
OTHER = "DUO873728"


def _dump(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, for before/after comparisons."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with ledger.session() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            out[table.name] = sorted((tuple(str(v) for v in r) for r in rows), key=repr)
    return out


def _count(ledger: Ledger, model: Any, *where: Any) -> int:
    with ledger.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _commission(ledger: Ledger, execution_id: str) -> CommissionRow:
    with ledger.session() as session:
        return session.scalars(select(CommissionRow).where(CommissionRow.execution_id == execution_id)).one()


def test_reingesting_the_same_fills_changes_nothing(ledger: Ledger) -> None:
    fills = list(stream_fills(ACCOUNT, 120))
    first = ledger.ingest(ACCOUNT, fills, "run-1")
    assert (first.fills_new, first.fills_updated, first.fills_unchanged) == (120, 0, 0)
    before = _dump(ledger)

    again = ledger.ingest(ACCOUNT, fills, "run-2")

    assert (again.fills_new, again.fills_updated, again.fills_unchanged) == (0, 0, 120)
    assert again.counts() == dict.fromkeys(again.counts(), 0)
    assert _dump(ledger) == before  # not even run ids or timestamps moved
    assert _count(ledger, FillRow) == 120
    assert _count(ledger, CommissionHistoryRow) == 0


def test_a_changed_fill_is_updated_and_keeps_its_first_run(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, price="10.00"), make_fill(n=2)], "run-1")
    result = ledger.ingest(ACCOUNT, [make_fill(n=1, price="10.50"), make_fill(n=2)], "run-2")
    assert (result.fills_new, result.fills_updated, result.fills_unchanged) == (0, 1, 1)
    (row, _) = ledger.fills_for(ACCOUNT)
    assert row.price == Decimal("10.5")
    assert (row.first_seen_run, row.last_changed_run) == ("run-1", "run-2")


def test_reingest_is_unchanged_when_the_database_rounds_or_a_commission_arrives(ledger: Ledger) -> None:
    precise = make_fill(n=1, price="187.123456789012345", commission=None)
    assert ledger.ingest(ACCOUNT, [precise], "run-1").fills_new == 1
    again = ledger.ingest(ACCOUNT, [precise], "run-2")
    assert (again.fills_unchanged, again.fills_updated) == (1, 0)
    (row,) = ledger.fills_for(ACCOUNT)
    assert row.price == Decimal("187.1234567890")  # NUMERIC(28, 10) on both dialects

    with_commission = make_fill(n=1, price="187.123456789012345", commission="1.00")
    later = ledger.ingest(ACCOUNT, [with_commission], "run-3")
    assert (later.fills_unchanged, later.commissions_finalised) == (1, 1)


def test_rows_with_an_older_digest_settle_without_a_rewrite(ledger: Ledger) -> None:
    """A digest of an older form (or none, before migration 0003) over the same content: the next
    ingest reads the row, finds nothing different, refreshes the digest only; nothing is rewritten."""
    fills = [make_fill(n=1), make_fill(n=2)]
    ledger.ingest(ACCOUNT, fills, "run-1")
    with ledger.write() as session:
        session.execute(
            update(FillRow).where(FillRow.execution_id == fills[0].execution_id).values(content_hash=None)
        )
    first = ledger.ingest(ACCOUNT, fills, "run-2")
    assert (first.fills_updated, first.fills_rederived, first.fills_unchanged) == (0, 0, 2)
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(FillHistoryRow)) == 0
        row = session.get(FillRow, (ACCOUNT, fills[0].execution_id))
        assert row is not None and row.content_hash is not None and row.last_changed_run == "run-1"
    again = ledger.ingest(ACCOUNT, fills, "run-3")
    assert (again.fills_updated, again.fills_unchanged) == (0, 2)


def _parse(raws: list[dict[str, Any]]) -> list[Any]:
    parsed = parse_fills(raws, multipliers={265598: Decimal(1)})
    assert not parsed.rejected
    return parsed.items


def test_a_parser_fix_reaches_stored_fills_as_a_rederived_revision(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same payload, parsed by a fixed parser: the re-ingest rewrites the derived value, keeps the
    old one in fill_history and counts the fill as re-derived; a plain re-ingest stays unchanged."""
    raws = [make_fill(n=1).raw, make_fill(n=2).raw]
    first = ledger.ingest(ACCOUNT, _parse(raws), "run-1")
    assert first.fills_new == 2
    plain = ledger.ingest(ACCOUNT, _parse(raws), "run-2")
    assert (plain.fills_unchanged, plain.fills_updated, plain.fills_rederived) == (2, 0, 0)

    # The fix: this version of the parser reads the exchange differently, from the same rows.
    real_parse = fills_module.parse_fill
    monkeypatch.setattr(
        fills_module,
        "parse_fill",
        lambda row, **kw: real_parse(row, **kw).model_copy(update={"exchange": "FIXED"}),
    )
    monkeypatch.setattr(fills_module, "PARSER_VERSION", fills_module.PARSER_VERSION + 1)
    fixed = ledger.ingest(ACCOUNT, _parse(raws), "run-3")
    assert (fixed.fills_updated, fixed.fills_rederived, fixed.fills_unchanged) == (2, 2, 0)
    assert {f.exchange for f in ledger.fills_for(ACCOUNT)} == {"FIXED"}
    with ledger.session() as session:
        history = list(session.scalars(select(FillHistoryRow).order_by(FillHistoryRow.execution_id)))
    assert [(h.change, h.run_id, h.parser_version) for h in history] == [
        ("rederived", "run-3", fills_module.PARSER_VERSION)
    ] * 2
    assert [(h.previous["exchange"], h.previous["quantity"]) for h in history] == [("ISLAND", "10")] * 2

    again = ledger.ingest(ACCOUNT, _parse(raws), "run-4")
    assert (again.fills_unchanged, again.fills_updated, again.fills_rederived) == (2, 0, 0)
    ledger.start_run(ACCOUNT, "run-3")
    ledger.finish_run(ACCOUNT, "run-3", "succeeded", fixed)
    run = ledger.get_run(ACCOUNT, "run-3")
    assert run is not None and (run.fills_updated, run.fills_rederived) == (2, 2)


def test_a_version_bump_alone_changes_nothing_stored(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new parser version that derives the same values: the fills stay as they were (no history)."""
    fills = [make_fill(n=1)]
    ledger.ingest(ACCOUNT, fills, "run-1")
    monkeypatch.setattr(fills_module, "PARSER_VERSION", fills_module.PARSER_VERSION + 1)
    bumped = ledger.ingest(ACCOUNT, fills, "run-2")
    assert (bumped.fills_unchanged, bumped.fills_updated) == (1, 0)
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(FillHistoryRow)) == 0


def test_changed_content_from_ibkr_is_an_update_with_history(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, price=Decimal("10"))], "run-1")
    moved = ledger.ingest(ACCOUNT, [make_fill(n=1, price=Decimal("10.5"))], "run-2")
    assert (moved.fills_updated, moved.fills_rederived) == (1, 0)
    with ledger.session() as session:
        (history,) = session.scalars(select(FillHistoryRow))
    assert (history.change, history.previous["price"]) == ("updated", "10")


def test_statements_per_batch_do_not_grow_with_rows(ledger: Ledger) -> None:
    """Set-based: the number of SQL statements is the same for 3 fills and for 400 fills."""
    statements: list[str] = []

    def count(conn: Any, clauseelement: Any, *args: Any) -> None:
        statements.append(type(clauseelement).__name__)

    ledger.ingest(ACCOUNT, [make_fill(n=10_000)], "run-0")  # the schema check happens once, before
    event.listen(ledger.engine, "before_execute", count)
    try:
        ledger.ingest(ACCOUNT, list(stream_fills(ACCOUNT, 3, start=0)), "run-1", batch_size=1000)
        small = len(statements)
        statements.clear()
        ledger.ingest(ACCOUNT, list(stream_fills(ACCOUNT, 400, start=10)), "run-1", batch_size=1000)
        large = len(statements)
    finally:
        event.remove(ledger.engine, "before_execute", count)
    assert small == large
    assert large <= 10


def test_large_inputs_are_chunked_and_streamed(ledger: Ledger) -> None:
    result = ledger.ingest(ACCOUNT, stream_fills(ACCOUNT, 250), "run-1", batch_size=100)
    assert result.fills_new == 250
    assert _count(ledger, FillRow) == 250
    assert ledger.ingest(ACCOUNT, stream_fills(ACCOUNT, 250), "run-2", batch_size=100).fills_unchanged == 250


def test_a_crash_mid_ingest_leaves_the_old_state_and_a_rerun_completes(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, list(stream_fills(ACCOUNT, 10)), "run-1")
    before = _dump(ledger)

    def crashing() -> Iterator[Any]:
        yield from stream_fills(ACCOUNT, 150)  # the first 100 are written before the crash
        raise RuntimeError("connection to IBKR lost")

    with pytest.raises(RuntimeError, match="connection to IBKR lost"):
        ledger.ingest(ACCOUNT, crashing(), "run-2", batch_size=100)
    assert _dump(ledger) == before

    result = ledger.ingest(ACCOUNT, stream_fills(ACCOUNT, 150), "run-2", batch_size=100)
    assert (result.fills_new, result.fills_unchanged) == (140, 10)
    assert _count(ledger, FillRow) == 150


def test_a_correction_supersedes_the_older_revision(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, revision=1, quantity="10", commission="1.00")], "run-1")
    result = ledger.ingest(ACCOUNT, [make_fill(n=1, revision=2, quantity="12", commission="1.20")], "run-2")

    assert (result.fills_new, result.fills_superseded) == (1, 1)
    rows = {r.revision: r for r in ledger.fills_for(ACCOUNT, include_superseded=True)}
    assert rows[1].superseded and not rows[2].superseded
    assert rows[1].execution_family == rows[2].execution_family
    assert [r.revision for r in ledger.fills_for(ACCOUNT)] == [2]
    # Positions and totals count only the current revision.
    assert [p.quantity for p in ledger.current_positions(ACCOUNT)] == [Decimal(12)]
    assert ledger.commission_totals(ACCOUNT) == {"USD": Decimal("1.20")}
    # Seeing both again changes nothing.
    both = [
        make_fill(n=1, revision=1, quantity="10", commission="1.00"),
        make_fill(n=1, revision=2, quantity="12", commission="1.20"),
    ]
    again = ledger.ingest(ACCOUNT, both, "run-3")
    assert (again.fills_new, again.fills_updated, again.fills_superseded) == (0, 0, 0)


def test_a_late_older_revision_is_stored_superseded(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, revision=3, quantity="7")], "run-1")
    result = ledger.ingest(ACCOUNT, [make_fill(n=1, revision=2, quantity="5")], "run-2")
    assert (result.fills_new, result.fills_superseded) == (1, 1)
    rows = {r.revision: r.superseded for r in ledger.fills_for(ACCOUNT, include_superseded=True)}
    assert rows == {2: True, 3: False}
    assert [p.quantity for p in ledger.current_positions(ACCOUNT)] == [Decimal(7)]


def test_revisions_in_one_batch_keep_only_the_newest_current(ledger: Ledger) -> None:
    fills = [make_fill(n=1, revision=r, quantity=str(r)) for r in (2, 1, 3)]
    result = ledger.ingest(ACCOUNT, fills, "run-1")
    assert (result.fills_new, result.fills_superseded) == (3, 2)
    assert [(r.revision, r.superseded) for r in ledger.fills_for(ACCOUNT, include_superseded=True)] == [
        (1, True),
        (2, True),
        (3, False),
    ]


def test_a_missing_commission_is_pending_never_zero_and_a_later_value_finalises_it(ledger: Ledger) -> None:
    pending = make_fill(n=1, commission=None)
    first = ledger.ingest(ACCOUNT, [pending], "run-1")
    assert first.commissions_finalised == 0
    row = _commission(ledger, pending.execution_id)
    assert (row.amount, row.status) == (None, "pending")
    assert ledger.commission_totals(ACCOUNT) == {}
    assert ledger.pending_commissions(ACCOUNT) == 1

    # Still pending on the next fetch: nothing changes.
    assert ledger.ingest(ACCOUNT, [pending], "run-2").commissions_finalised == 0

    final = ledger.ingest(ACCOUNT, [make_fill(n=1, commission="1.02")], "run-3")
    assert (final.commissions_finalised, final.commissions_changed, final.fills_unchanged) == (1, 0, 1)
    row = _commission(ledger, pending.execution_id)
    assert (row.amount, row.currency, row.status, row.last_changed_run) == (
        Decimal("1.02"),
        "USD",
        "final",
        "run-3",
    )
    with ledger.session() as session:
        history = session.scalars(select(CommissionHistoryRow)).all()
    assert [(h.previous_amount, h.previous_status, h.amount, h.status, h.run_id) for h in history] == [
        (None, "pending", Decimal("1.02"), "final", "run-3")
    ]
    assert ledger.commission_totals(ACCOUNT) == {"USD": Decimal("1.02")}
    assert ledger.open_breaks(ACCOUNT) == []


def test_a_changed_commission_is_kept_in_history_and_reported_as_a_break(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, commission="1.02")], "run-1")
    changed = ledger.ingest(ACCOUNT, [make_fill(n=1, commission="1.50")], "run-2")

    assert changed.commissions_changed == 1
    (brk,) = changed.commission_breaks
    assert (brk.expected, brk.actual, brk.delta, brk.currency) == (
        Decimal("1.02"),
        Decimal("1.50"),
        Decimal("0.48"),
        "USD",
    )
    (stored,) = ledger.open_breaks(ACCOUNT)
    assert (stored.kind, stored.execution_id, stored.run_id) == (
        "commission_change",
        brk.execution_id,
        "run-2",
    )
    assert (stored.expected, stored.actual, stored.delta) == (
        Decimal("1.02"),
        Decimal("1.5"),
        Decimal("0.48"),
    )
    assert _commission(ledger, brk.execution_id).amount == Decimal("1.5")
    assert _count(ledger, CommissionHistoryRow) == 1
    assert changed.counts()["breaks"] == 1

    # The same value again, or the commission missing from a later payload: nothing changes.
    assert ledger.ingest(ACCOUNT, [make_fill(n=1, commission="1.50")], "run-3").commissions_changed == 0
    assert ledger.ingest(ACCOUNT, [make_fill(n=1, commission=None)], "run-4").commissions_changed == 0
    assert _commission(ledger, brk.execution_id).amount == Decimal("1.5")
    assert _count(ledger, CommissionHistoryRow) == 1
    assert _count(ledger, BreakRow) == 1


def test_a_zero_commission_is_kept_as_zero(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(n=1, commission="0.0")], "run-1")
    row = _commission(ledger, make_fill(n=1).execution_id)
    assert (row.amount, row.status) == (Decimal(0), "final")


def test_rejected_rows_are_quarantined_once_with_their_raw_payload(ledger: Ledger) -> None:
    rejected = [
        RejectedRow(
            kind="fill",
            account_id=ACCOUNT,
            key="x.1",
            reason="side 'Q' is not one of B, S, X, N",
            raw={"side": "Q", "execution_id": "x.1"},
        ),
        RejectedRow(
            kind="fill", account_id=None, key=None, reason="expected a JSON object, got str", raw="garbage"
        ),
    ]
    result = ledger.ingest(ACCOUNT, [make_fill(n=1)], "run-1", rejected=rejected)
    assert (result.fills_new, result.quarantined) == (1, 2)
    with ledger.session() as session:
        rows = {r.key: r for r in session.scalars(select(QuarantineRow))}
    assert rows["x.1"].raw == {"side": "Q", "execution_id": "x.1"}
    assert rows["x.1"].reason.startswith("side 'Q'")
    assert (rows["x.1"].account_id, rows["x.1"].first_seen_run) == (ACCOUNT, "run-1")
    assert (rows[None].account_id, rows[None].raw) == (None, "garbage")

    ledger.ingest(ACCOUNT, [make_fill(n=1)], "run-2", rejected=rejected)
    assert _count(ledger, QuarantineRow) == 2


def test_quarantine_is_part_of_the_ingest_transaction(ledger: Ledger) -> None:
    rejected = [RejectedRow(kind="fill", account_id=ACCOUNT, reason="bad", raw={"a": 1})]

    def crashing() -> Iterator[Any]:
        yield make_fill(n=1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ledger.ingest(ACCOUNT, crashing(), "run-1", rejected=rejected)
    assert _count(ledger, QuarantineRow) == 0
    assert _count(ledger, FillRow) == 0


def test_fills_of_another_account_are_refused_before_anything_is_written(ledger: Ledger) -> None:
    fills = [make_fill(ACCOUNT, 1), make_fill(OTHER, 2)]
    with pytest.raises(ForeignAccountRows, match=OTHER):
        ledger.ingest(ACCOUNT, fills, "run-1")
    assert _count(ledger, FillRow) == 0

    # Streamed: the foreign row arrives in the second batch; the first batch is rolled back too.
    streamed = (f for f in [*stream_fills(ACCOUNT, 5), make_fill(OTHER, 99)])
    with pytest.raises(ForeignAccountRows):
        ledger.ingest(ACCOUNT, streamed, "run-1", batch_size=2)
    assert _count(ledger, FillRow) == 0

    foreign_rejected = [RejectedRow(kind="fill", account_id=OTHER, reason="bad", raw={})]
    with pytest.raises(ForeignAccountRows):
        ledger.ingest(ACCOUNT, [make_fill(ACCOUNT, 1)], "run-1", rejected=foreign_rejected)
    assert _count(ledger, FillRow) == 0 and _count(ledger, QuarantineRow) == 0


def test_accounts_are_kept_apart(ledger: Ledger) -> None:
    ledger.ingest(ACCOUNT, [make_fill(ACCOUNT, 1)], "run-1")
    result = ledger.ingest(OTHER, [make_fill(OTHER, 1)], "run-1")  # same execution id, other account
    assert result.fills_new == 1
    assert len(ledger.fills_for(ACCOUNT)) == len(ledger.fills_for(OTHER)) == 1


def test_a_fill_built_without_its_payload_row_is_still_seen_to_change(ledger: Ledger) -> None:
    # Users who book fills from elsewhere (e.g. Flex statements) may leave ``raw`` empty: the
    # change check must then rest on the typed fields.
    bare = make_fill(price="10.00").model_copy(update={"raw": {}})
    ledger.ingest("DU1234567", [bare], "r1")
    same = ledger.ingest("DU1234567", [bare], "r2")
    moved = ledger.ingest("DU1234567", [bare.model_copy(update={"price": Decimal("10.05")})], "r3")
    assert (same.fills_unchanged, same.fills_updated) == (1, 0)
    assert moved.fills_updated == 1
    assert ledger.fills_for("DU1234567")[0].price == Decimal("10.05")

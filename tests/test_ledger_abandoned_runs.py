"""Runs that can no longer be running (killed, lost) are closed as ``abandoned`` by the next run of the
account, and their positions snapshots stop counting as a reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from ibkr_tasks.errors import LedgerError
from ibkr_tasks.ledger import Ledger, ReconciliationRunRow
from ibkr_tasks.ledger import engine as engine_mod
from ibkr_tasks.ledger.testing import T0, make_position

ACCOUNT = "DU1234567"
OTHER = "DUO873728"
AAPL = 265598


def _status(ledger: Ledger, account_id: str, run_id: str) -> str | None:
    row = ledger.get_run(account_id, run_id)
    return None if row is None else row.status


def _started(ledger: Ledger, run_id: str, when: datetime) -> None:
    with ledger.write() as session:
        session.execute(
            update(ReconciliationRunRow).where(ReconciliationRunRow.run_id == run_id).values(started_at=when)
        )


def test_migration_adds_the_abandoned_status_and_downgrades_it_to_failed(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade("0004_contracts")
        with ledger.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (account_id, is_paper, created_at) "
                    "VALUES ('DU1234567', true, '2026-11-25 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO reconciliation_runs (account_id, run_id, started_at, status, fills_new, "
                    "fills_updated, fills_superseded, commissions_finalised, commissions_changed, "
                    "quarantined, breaks) VALUES ('DU1234567', 'killed', '2026-11-25 00:00:00', 'running', "
                    "0, 0, 0, 0, 0, 0, 0)"
                )
            )
        ledger.upgrade("0005_abandoned_runs")
        assert engine_mod.current_revision(ledger.engine) == "0005_abandoned_runs"
        with ledger.engine.begin() as conn:  # at 0005 exactly: the ledger API wants the newest schema
            conn.execute(text("UPDATE reconciliation_runs SET status = 'abandoned' WHERE run_id = 'killed'"))
        with ledger.engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM reconciliation_runs")).scalar_one() == "abandoned"
        with pytest.raises(IntegrityError, match=r"(?i)check"):  # the constraint is still there
            with ledger.engine.begin() as conn:
                conn.execute(text("UPDATE reconciliation_runs SET status = 'lost'"))

        engine_mod.downgrade(ledger.engine, "0004_contracts")
        with ledger.engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM reconciliation_runs")).scalar_one() == "failed"
        ledger.upgrade()
        assert _status(Ledger(engine=ledger.engine), ACCOUNT, "killed") == "failed"
    finally:
        ledger.dispose()


def test_the_next_run_abandons_runs_whose_flow_run_has_ended(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "killed", flow_run_id="flow-killed")
    ledger.start_run(ACCOUNT, "alive", flow_run_id="flow-alive")
    ledger.start_run(OTHER, "other-killed", flow_run_id="flow-killed")

    abandoned = ledger.start_run(ACCOUNT, "next", flow_run_id="flow-next", ended_flow_runs={"flow-killed"})

    assert abandoned == ["killed"]
    row = ledger.get_run(ACCOUNT, "killed")
    assert row is not None and row.status == "abandoned" and row.finished_at is not None
    assert "next" in (row.error or "") and "no longer running" in (row.error or "")
    assert _status(ledger, ACCOUNT, "alive") == "running"  # its flow run may still be running
    assert _status(ledger, ACCOUNT, "next") == "running"
    assert _status(ledger, OTHER, "other-killed") == "running"  # another account's run is its own
    # A retry of the same run never abandons itself.
    assert ledger.start_run(ACCOUNT, "next", flow_run_id="flow-next", ended_flow_runs={"flow-next"}) == []
    assert _status(ledger, ACCOUNT, "next") == "running"


def test_runs_older_than_the_limit_are_abandoned(db_url: str) -> None:
    ledger = Ledger(db_url, run_max_age=timedelta(hours=2))
    ledger.upgrade()
    try:
        now = datetime.now(UTC)
        ledger.start_run(ACCOUNT, "stale")  # run outside Prefect: no flow run to ask about
        ledger.start_run(ACCOUNT, "recent")
        _started(ledger, "stale", now - timedelta(hours=3))
        _started(ledger, "recent", now - timedelta(hours=1))

        assert ledger.start_run(ACCOUNT, "next") == ["stale"]
        assert "older than 2h" in (ledger.get_run(ACCOUNT, "stale").error or "")  # type: ignore[union-attr]
        assert _status(ledger, ACCOUNT, "recent") == "running"
    finally:
        ledger.dispose()


def test_the_age_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    from ibkr_tasks.ledger.ledger import DEFAULT_RUN_MAX_AGE

    monkeypatch.delenv("IBKR_LEDGER_RUN_MAX_HOURS", raising=False)
    assert Ledger(sqlite_url).run_max_age == DEFAULT_RUN_MAX_AGE == timedelta(hours=6)
    monkeypatch.setenv("IBKR_LEDGER_RUN_MAX_HOURS", "1.5")
    assert Ledger(sqlite_url).run_max_age == timedelta(hours=1, minutes=30)
    monkeypatch.setenv("IBKR_LEDGER_RUN_MAX_HOURS", "soon")
    with pytest.raises(LedgerError, match="IBKR_LEDGER_RUN_MAX_HOURS"):
        Ledger(sqlite_url)


def test_an_abandoned_opening_no_longer_opens_the_books(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "killed", flow_run_id="flow-killed")
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "killed", taken_at=T0)
    assert ledger.latest_snapshot_at(ACCOUNT) == T0  # killed after filing it, before finishing

    assert ledger.start_run(ACCOUNT, "next", ended_flow_runs={"flow-killed"}) == ["killed"]

    assert ledger.latest_snapshot_at(ACCOUNT) is None
    assert ledger.current_positions(ACCOUNT) == []
    result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="12")], "next")
    assert result.opening and result.breaks == [] and result.taken_at > T0
    assert ledger.latest_snapshot_at(ACCOUNT) == result.taken_at
    assert [(p.conid, p.quantity) for p in ledger.current_positions(ACCOUNT)] == [(AAPL, 12)]


def test_an_abandoned_comparison_no_longer_counts_and_its_breaks_are_settled(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "first")
    ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "first", taken_at=T0)
    ledger.finish_run(ACCOUNT, "first", "succeeded")
    later = T0 + timedelta(days=1)
    ledger.start_run(ACCOUNT, "killed", flow_run_id="flow-killed")
    killed = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="11")], "killed", taken_at=later)
    assert len(killed.breaks) == 1  # never reported: the run died before finishing

    assert ledger.start_run(ACCOUNT, "next", ended_flow_runs={"flow-killed"}) == ["killed"]

    assert ledger.latest_snapshot_at(ACCOUNT) == T0  # the newest reconciliation is the first run's
    result = ledger.reconcile(ACCOUNT, [make_position(conid=AAPL, position="10")], "next")
    assert not result.opening and result.breaks == []
    assert result.taken_at > later  # still after every snapshot filed, the abandoned one included
    assert ledger.open_breaks(ACCOUNT) == []  # the abandoned run's break is settled by this one


def test_a_run_that_finishes_after_all_keeps_its_own_word(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "slow", flow_run_id="flow-slow")
    ledger.start_run(ACCOUNT, "next", ended_flow_runs={"flow-slow"})
    ledger.finish_run(ACCOUNT, "slow", "succeeded")
    assert _status(ledger, ACCOUNT, "slow") == "succeeded"

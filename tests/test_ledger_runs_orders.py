"""reconciliation_runs, accounts, read helpers and the orders audit trail."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Integer

from ibkr_tasks.errors import LedgerError
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.schema import Account, QuoteRow, ReconciliationRunRow
from ibkr_tasks.ledger.testing import T0, make_fill
from ibkr_tasks.models import AccountInfo, RejectedRow, parse_snapshot
from ibkr_tasks.models.runs import RUN_COUNTS

ACCOUNT = "DU1234567"


def test_a_run_row_records_status_times_and_counts(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "nightly-2026-11-02", flow_run_id="3f1c5a0e-0000-4000-8000-000000000001")
    run = ledger.get_run(ACCOUNT, "nightly-2026-11-02")
    assert run is not None and (run.status, run.finished_at, run.fills_new) == ("running", None, 0)

    ingest = ledger.ingest(
        ACCOUNT,
        [make_fill(n=1, commission="1"), make_fill(n=2, commission=None)],
        "nightly-2026-11-02",
        rejected=[RejectedRow(kind="fill", account_id=ACCOUNT, reason="bad", raw={"x": 1})],
    )
    ledger.finish_run(ACCOUNT, "nightly-2026-11-02", "succeeded", ingest)

    run = ledger.get_run(ACCOUNT, "nightly-2026-11-02")
    assert run is not None
    assert (run.status, run.fills_new, run.quarantined, run.breaks, run.error) == ("succeeded", 2, 1, 0, None)
    assert run.flow_run_id == "3f1c5a0e-0000-4000-8000-000000000001"
    assert run.finished_at is not None and run.finished_at >= run.started_at
    with ledger.session() as session:
        account = session.get(Account, ACCOUNT)
    assert account is not None and account.last_reconciled_at == run.finished_at and account.is_paper


def test_a_failed_run_keeps_its_error_and_can_be_retried(ledger: Ledger) -> None:
    ledger.start_run(ACCOUNT, "r1")
    ledger.finish_run(ACCOUNT, "r1", "failed", {"breaks": 2}, error="NotAuthenticated: log in to the gateway")
    run = ledger.get_run(ACCOUNT, "r1")
    assert run is not None and (run.status, run.breaks, run.error) == (
        "failed",
        2,
        "NotAuthenticated: log in to the gateway",
    )
    ledger.start_run(ACCOUNT, "r1")
    run = ledger.get_run(ACCOUNT, "r1")
    assert run is not None and (run.status, run.error, run.finished_at) == ("running", None, None)
    with ledger.session() as session:
        account = session.get(Account, ACCOUNT)
    assert account is not None and account.last_reconciled_at is None


def test_finish_run_refuses_unknown_runs_statuses_and_counts(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="start_run"):
        ledger.finish_run(ACCOUNT, "never-started", "succeeded")
    ledger.start_run(ACCOUNT, "r1")
    with pytest.raises(ValueError, match="status"):
        ledger.finish_run(ACCOUNT, "r1", "done")
    with pytest.raises(ValueError, match="fills_nw"):
        ledger.finish_run(ACCOUNT, "r1", "succeeded", {"fills_nw": 1})


def test_upsert_accounts_from_account_infos(ledger: Ledger) -> None:
    infos = [
        AccountInfo(account_id="DUO873728", is_paper=True, currency="EUR", title="Paper EUR", raw={}),
        AccountInfo(account_id="U7654321", is_paper=False, currency="USD", raw={}),
    ]
    assert ledger.upsert_accounts(infos) == 2
    assert ledger.upsert_accounts(["DUO873728"]) == 1  # a bare id does not erase what is known
    with ledger.session() as session:
        rows = {a.account_id: (a.is_paper, a.base_currency, a.description) for a in session.query(Account)}
    assert rows == {"DUO873728": (True, "EUR", "Paper EUR"), "U7654321": (False, "USD", None)}


def test_fills_for_a_date_range(ledger: Ledger) -> None:
    fills = [make_fill(n=i, trade_time=T0 + timedelta(days=i)) for i in range(5)]  # Nov 2..6
    ledger.ingest(ACCOUNT, fills, "r1")
    got = ledger.fills_for(ACCOUNT, date(2026, 11, 3), date(2026, 11, 5))
    assert [f.trade_time.day for f in got] == [3, 4]
    assert len(ledger.fills_for(ACCOUNT, start=T0 + timedelta(days=3))) == 2
    assert ledger.fills_for("DU7777777") == []


def test_commission_totals_per_currency(ledger: Ledger) -> None:
    ledger.ingest(
        ACCOUNT,
        [
            make_fill(n=1, commission="1.25"),
            make_fill(n=2, commission="0.75"),
            make_fill(n=3, commission="2", commission_currency="EUR"),
            make_fill(n=4, commission=None),
        ],
        "r1",
    )
    assert ledger.commission_totals(ACCOUNT) == {"USD": Decimal("2.00"), "EUR": Decimal(2)}
    assert ledger.pending_commissions(ACCOUNT) == 1


def test_order_intent_then_answer_then_prompts(ledger: Ledger) -> None:
    request = {
        "conid": 265598,
        "side": "BUY",
        "quantity": Decimal("10"),
        "orderType": "LMT",
        "price": Decimal("187.5"),
    }
    intent = ledger.record_order(ACCOUNT, "rb-20261102-0001", request, run_id="rebalance-1")
    assert (intent.status, intent.order_id, intent.prompts) == ("intent", None, [])
    assert intent.request["quantity"] == "10"  # Decimal kept exact as text

    ledger.update_order(
        ACCOUNT,
        "rb-20261102-0001",
        prompts=[{"id": "o163", "text": "price exceeds the limit", "answer": True}],
    )
    ledger.update_order(
        ACCOUNT,
        "rb-20261102-0001",
        order_id="1234567890",
        status="Submitted",
        prompts=[{"id": "o354", "text": "mandatory cap", "answer": True}],
    )
    found = ledger.find_order(ACCOUNT, "rb-20261102-0001")
    assert found is not None
    # IBKR's word is translated into this project's vocabulary and kept as said.
    assert (found.order_id, found.status, found.ibkr_status, found.run_id) == (
        "1234567890",
        "submitted",
        "Submitted",
        "rebalance-1",
    )
    done = ledger.update_order(ACCOUNT, "rb-20261102-0001", status="Filled")
    assert (done.status, done.ibkr_status) == ("filled", "Filled")
    asked = ledger.update_order(ACCOUNT, "rb-20261102-0001", status="cancel_requested")
    assert (asked.status, asked.ibkr_status) == ("cancel_requested", "Filled")  # IBKR's last word stays
    assert [p["id"] for p in found.prompts] == ["o163", "o354"]
    assert found.updated_at >= found.created_at
    assert ledger.find_order(ACCOUNT, "unknown") is None


def test_recording_a_coid_twice(ledger: Ledger) -> None:
    ledger.record_order(ACCOUNT, "c1", {"conid": 1, "quantity": "1"})
    again = ledger.record_order(ACCOUNT, "c1", {"conid": 1, "quantity": "1"})  # a retried task
    assert again.status == "intent"
    with pytest.raises(LedgerError, match="different request"):
        ledger.record_order(ACCOUNT, "c1", {"conid": 1, "quantity": "2"})
    with pytest.raises(LedgerError, match="record_order"):
        ledger.update_order(ACCOUNT, "never-recorded", status="Submitted")


def test_store_quotes_keeps_snapshots_with_data(ledger: Ledger) -> None:
    preflight = parse_snapshot({"conid": 265598, "conidEx": "265598", "_updated": 1793629800000})
    quote = parse_snapshot(
        {
            "conid": 265598,
            "31": "187.25",
            "84": "187.20",
            "86": "187.30",
            "55": "AAPL",
            "_updated": 1793629805000,
        }
    )
    assert ledger.store_quotes([preflight, quote], run_id="md-1") == 1
    with ledger.session() as session:
        (row,) = session.query(QuoteRow).all()
    assert (row.conid, row.last, row.bid, row.ask, row.run_id) == (
        265598,
        Decimal("187.25"),
        Decimal("187.2"),
        Decimal("187.3"),
        "md-1",
    )
    assert row.raw["31"] == "187.25"


def test_the_run_count_columns_are_the_run_counts() -> None:
    """One definition: every count column of reconciliation_runs is a RunCounts count, and back."""
    counts = [c.name for c in ReconciliationRunRow.__table__.c if isinstance(c.type, Integer)]
    assert counts == list(RUN_COUNTS)

"""Booking IBKR statements into the ledger (SQLite and PostgreSQL), and ``ibkr-tasks flex import``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import FLEX_STATEMENTS
from sqlalchemy import text

from ibkr_tasks.cli import main as cli
from ibkr_tasks.flex.models import FlexExecution
from ibkr_tasks.flex.parse import parse_flex
from ibkr_tasks.flex.times import EASTERN
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.flex import STATEMENT_SOURCE, end_of_statement_day
from ibkr_tasks.models import Fill
from ibkr_tasks.sim import create_app
from ibkr_tasks.sim.flex import statement_xml
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.testing import FakeTime

FIXTURES = FLEX_STATEMENTS
TABLES = (
    "accounts",
    "fills",
    "commissions",
    "commission_history",
    "cash_transactions",
    "statement_positions",
    "position_snapshots",
    "breaks",
    "quarantine",
)


def dump(ledger: Ledger) -> dict[str, list[Any]]:
    with ledger.engine.connect() as conn:
        queries = {t: text(f"select * from {t} order by 1, 2") for t in TABLES}  # noqa: S608
        return {t: [tuple(r) for r in conn.execute(q)] for t, q in queries.items()}


@pytest.fixture(scope="module")
def sim_statement() -> tuple[bytes, date, date]:
    """A five-week Activity statement of a small simulated FA login, with corrections (cancel +
    correct pairs), option expiries, dividends, fees and open positions."""
    scenario = Scenario(
        seed=7,
        accounts=2,
        fa=True,
        positions_per_account=10,
        fills_per_account_per_day=8,
        history_days=3,
        quirks=Quirks(corrections=0.3, option_expiries=True),
    )
    app = create_app(scenario, **FakeTime().kwargs())
    now = app.sim.clock.now()
    end = now.astimezone(EASTERN).date()
    start = end - timedelta(days=35)
    book = app.sim.book
    book.finalise_all()  # the end-of-day state: every correction published
    return statement_xml(book, now, from_date=start, to_date=end), start, end


def client_portal_fill(row: FlexExecution, **changes: Any) -> Fill:
    """The Client Portal's view of a statement execution (same execution id)."""
    assert row.execution_id and row.execution_family and row.revision is not None and row.trade_time
    fields: dict[str, Any] = {
        "execution_id": row.execution_id,
        "execution_family": row.execution_family,
        "revision": row.revision,
        "account_id": row.account_id,
        "conid": row.conid,
        "symbol": row.symbol,
        "sec_type": row.sec_type,
        "side": row.side,
        "quantity": row.quantity,
        "price": row.price,
        "multiplier": row.multiplier,
        "currency": row.currency,
        "commission": row.commission,
        "commission_currency": row.commission_currency,
        "trade_time": row.trade_time,
        "raw": {"execution_id": row.execution_id},
    }
    fields.update(changes)
    return Fill(**fields)


def test_a_statement_books_idempotently_and_agrees_with_itself(
    ledger: Ledger, sim_statement: tuple[bytes, date, date]
) -> None:
    xml, _, end = sim_statement
    first = ledger.book_statement(xml, "r1")
    response = parse_flex(xml)
    assert set(first) == {s.account_id for s in response.statements}
    for statement in response.statements:
        result = first[statement.account_id or ""]
        assert result.fills_added == len(statement.executions) and result.breaks == 0
        assert result.fills_cancelled == len(statement.cancellations) > 0
        assert result.cash_transactions == len(statement.cash_transactions) > 0
        assert result.opening_from_statement  # no broker snapshot yet: the statement opens the books
    before = dump(ledger)
    second = ledger.book_statement(xml, "r2")
    assert dump(ledger) == before
    for result in second.values():
        assert result.breaks == 0 and result.positions_compared > 0
        assert (result.fills_added, result.fills_confirmed, result.cash_transactions) == (0, 0, 0)
    # cancelled originals leave positions: the ledger's positions are the statement's
    for statement in response.statements:
        account = statement.account_id or ""
        wanted = {c: q for (_, c), q in statement.position_quantities().items() if q != 0}
        assert ledger.positions_at(account, end_of_statement_day(end)) == wanted


def test_client_portal_fills_are_confirmed_finalised_and_their_differences_are_breaks(
    ledger: Ledger, sim_statement: tuple[bytes, date, date]
) -> None:
    xml, start, _ = sim_statement
    statement = parse_flex(xml).statements[0]
    account = statement.account_id or ""
    plain = [
        r
        for r in statement.executions
        if r.execution_id and r.trade_time and r.commission and not r.cancelled
    ]
    same, pending, changed = plain[0], plain[1], plain[2]
    extra_time = datetime.combine(start + timedelta(days=1), datetime.min.time(), tzinfo=EASTERN).astimezone(
        UTC
    )
    extra = client_portal_fill(
        same,
        execution_id="ffff0000.00000001.01.01",
        execution_family="ffff0000.00000001.01",
        revision=1,
        trade_time=extra_time + timedelta(hours=15),
    )
    fills = [
        client_portal_fill(same),
        client_portal_fill(pending, commission=None, commission_currency=None),
        client_portal_fill(changed, commission=changed.commission + Decimal("0.37")),
        extra,
    ]
    ledger.ingest(account, fills, "nightly")
    result = ledger.book_statement(xml, "morning")[account]
    assert result.fills_confirmed == 3 and result.fills_added == len(statement.executions) - 3
    assert result.commissions_finalised == 2 and result.commissions_changed == 1
    kinds = {(b.kind, b.subject) for b in result.break_list}
    assert ("statement_commission", f"execution:{changed.execution_id}") in kinds
    assert ("statement_missing", f"execution:{extra.execution_id}") in kinds
    commission = next(b for b in result.break_list if b.kind == "statement_commission")
    assert (commission.expected, commission.actual) == (
        changed.commission + Decimal("0.37"),
        changed.commission,
    )
    with ledger.engine.connect() as conn:
        rows = {
            r.execution_id: r
            for r in conn.execute(
                text("select execution_id, amount, status, source from commissions where account_id = :a"),
                {"a": account},
            )
        }
        history = conn.execute(
            text("select previous_amount, amount from commission_history where execution_id = :e"),
            {"e": changed.execution_id},
        ).one()
        open_breaks = conn.execute(
            text("select count(*) from breaks where account_id = :a and status = 'open'"), {"a": account}
        ).scalar_one()
    for row in (same, pending, changed):
        assert Decimal(rows[row.execution_id].amount) == row.commission
        assert (rows[row.execution_id].status, rows[row.execution_id].source) == ("final", STATEMENT_SOURCE)
    assert (Decimal(history.previous_amount), Decimal(history.amount)) == (
        changed.commission + Decimal("0.37"),
        changed.commission,
    )
    # Booking it again reports the fill still missing, but writes no second break.
    again = ledger.book_statement(xml, "morning-2")[account]
    assert [b.kind for b in again.break_list] == ["statement_missing"]
    with ledger.engine.connect() as conn:
        assert (
            conn.execute(
                text("select count(*) from breaks where account_id = :a and status = 'open'"), {"a": account}
            ).scalar_one()
            == open_breaks
        )


def test_statement_positions_and_cancellations_that_differ_are_breaks(
    ledger: Ledger, sim_statement: tuple[bytes, date, date]
) -> None:
    xml, _, end = sim_statement
    ledger.book_statement(xml, "r1")  # opens the books at the statement's positions
    statement = parse_flex(xml).statements[0]
    account = statement.account_id or ""
    position = statement.open_positions[0]
    text_xml = xml.decode()
    tampered = text_xml.replace(
        f'conid="{position.conid}" multiplier="{position.raw["multiplier"]}" reportDate="{position.raw["reportDate"]}" '
        f'position="{position.raw["position"]}"',
        f'conid="{position.conid}" multiplier="{position.raw["multiplier"]}" reportDate="{position.raw["reportDate"]}" '
        f'position="{position.quantity + 5}"',
        1,
    )
    assert tampered != text_xml
    tampered = re.sub(r'origTradeID="(\d+)"', 'origTradeID="999999999"', tampered, count=1)
    result = ledger.book_statement(tampered.encode(), "r2")[account]
    kinds = sorted(b.kind for b in result.break_list)
    assert kinds == ["statement_cancel", "statement_position"]
    moved = next(b for b in result.break_list if b.kind == "statement_position")
    assert (moved.conid, moved.expected, moved.actual) == (
        position.conid,
        position.quantity,
        position.quantity + 5,
    )
    assert moved.subject == f"conid:{position.conid}@{end.isoformat()}"
    # The true statement again: the position break is resolved.
    ledger.book_statement(xml, "r3")
    assert [b.kind for b in ledger.open_breaks(account)] == ["statement_cancel"]


def test_a_cancellation_in_a_later_statement_cancels_the_booked_fill(ledger: Ledger) -> None:
    account = "DU7654321"
    header = '<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="1">'
    trade = (
        f'<Trade accountId="{account}" currency="USD" assetCategory="STK" symbol="AAPL" conid="265598" multiplier="1" '
        'tradeDate="20250303" dateTime="20250303;101500" quantity="10" tradePrice="200" tradeMoney="2000" '
        'ibCommission="-1" ibCommissionCurrency="USD" buySell="BUY" ibExecID="0000e0d5.6576fd38.01.01" '
        'tradeID="555" transactionID="777" transactionType="ExchTrade" levelOfDetail="EXECUTION" />'
    )
    day1 = (
        f'{header}<FlexStatement accountId="{account}" fromDate="20250303" toDate="20250303"><Trades>{trade}</Trades>'
        '<OpenPositions><OpenPosition accountId="DU7654321" conid="265598" symbol="AAPL" multiplier="1" '
        'reportDate="20250303" position="10" levelOfDetail="SUMMARY" /></OpenPositions>'
        "</FlexStatement></FlexStatements></FlexQueryResponse>"
    )
    cancel = (
        f'<Trade accountId="{account}" currency="USD" assetCategory="STK" symbol="AAPL" conid="265598" multiplier="1" '
        'tradeDate="20250304" dateTime="20250304;093000" quantity="-10" tradePrice="200" ibCommission="1" '
        'buySell="SELL (Ca.)" ibExecID="" tradeID="" origTradeID="555" transactionID="778" '
        'transactionType="TradeCancel" levelOfDetail="EXECUTION" />'
    )
    day2 = (
        f'{header}<FlexStatement accountId="{account}" fromDate="20250304" toDate="20250304"><Trades>{cancel}</Trades>'
        '<OpenPositions><OpenPosition accountId="DU7654321" conid="265598" symbol="AAPL" multiplier="1" '
        'reportDate="20250304" position="0" levelOfDetail="SUMMARY" /></OpenPositions>'
        "</FlexStatement></FlexStatements></FlexQueryResponse>"
    )
    ledger.book_statement(day1.encode(), "d1")
    result = ledger.book_statement(day2.encode(), "d2")[account]
    assert result.fills_cancelled == 1 and result.breaks == 0
    (fill,) = ledger.fills_for(account)
    assert fill.cancelled and fill.execution_id == "0000e0d5.6576fd38.01.01"
    assert ledger.positions_at(account, end_of_statement_day(date(2025, 3, 4))) == {}
    # before the cancellation (day 1's close, where the statement opened the books) it was held
    assert ledger.positions_at(account, end_of_statement_day(date(2025, 3, 3))) == {265598: Decimal(10)}
    assert ledger.positions_at(account, datetime(2025, 3, 3, 14, 0, tzinfo=UTC)) == {}  # before it was traded


# ----------------------------------------------------------------------------------- the command
def _good_files() -> list[Path]:
    return [
        FIXTURES / "pp26_multi_account_two_statements.xml",
        FIXTURES / "gabbersepp_tradeconfirms.xml",
        FIXTURES / "pp12_cashtx_dividends_wht_fees.xml",
    ]


def test_cli_imports_statement_files_idempotently(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(p) for p in _good_files()]
    assert cli(["flex", "import", *files, "--ledger", sqlite_url]) == 0
    out = capsys.readouterr().out
    for path in files:
        assert path in out
    ledger = Ledger(sqlite_url)
    try:
        before = dump(ledger)
        assert before["fills"] and before["cash_transactions"]
        assert cli(["flex", "import", *files, "--ledger", sqlite_url]) == 0
        assert dump(ledger) == before
    finally:
        ledger.dispose()


def test_cli_reports_a_broken_file_and_writes_nothing_of_it(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = FIXTURES / "pp12_cashtx_dividends_wht_fees.xml"
    whole = (FIXTURES / "pp26_multi_account_two_statements.xml").read_bytes()
    broken = tmp_path / "broken.xml"
    broken.write_bytes(whole[: int(len(whole) * 0.8)])  # cut off: the first statement is complete
    assert cli(["flex", "import", str(broken), str(good), "--ledger", sqlite_url]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "line" in err and "nothing from this file was booked" in err
    alone = tmp_path / "alone.db"
    assert cli(["flex", "import", str(good), "--ledger", f"sqlite:///{alone}"]) == 0
    written, expected = Ledger(sqlite_url), Ledger(f"sqlite:///{alone}")
    try:
        keep = ("fills", "commissions", "cash_transactions", "statement_positions", "quarantine")
        a, b = dump(written), dump(expected)
        for table in keep:
            assert len(a[table]) == len(b[table]), table
        assert [r[1:6] for r in a["cash_transactions"]] == [r[1:6] for r in b["cash_transactions"]]
    finally:
        written.dispose()
        expected.dispose()


def test_cli_names_a_missing_file(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["flex", "import", "/nonexistent/statement.xml", "--ledger", sqlite_url]) == 1
    assert "/nonexistent/statement.xml" in capsys.readouterr().err


def test_a_later_client_portal_answer_never_overwrites_a_statement_commission(
    ledger: Ledger, sim_statement: tuple[bytes, date, date]
) -> None:
    """The statement is the book of record: a nightly run after it that sees another commission reports
    the disagreement once, and the ledger keeps the statement's amount."""
    xml, _, _ = sim_statement
    statement = parse_flex(xml).statements[0]
    account = statement.account_id or ""
    row = next(
        r
        for r in statement.executions
        if r.execution_id and r.trade_time and r.commission and not r.cancelled
    )
    ledger.ingest(account, [client_portal_fill(row)], "nightly-1")
    ledger.book_statement(xml, "morning")
    late = client_portal_fill(row, commission=row.commission + Decimal("1.25"))

    first = ledger.ingest(account, [late], "nightly-2")
    second = ledger.ingest(account, [late], "nightly-3")

    assert [(b.expected, b.actual) for b in first.commission_breaks] == [
        (row.commission, row.commission + Decimal("1.25"))
    ]
    assert second.commission_breaks == [] and second.commissions_changed == 0
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            text("select amount, status, source from commissions where execution_id = :e"),
            {"e": row.execution_id},
        ).one()
        breaks = conn.execute(
            text("select kind, status from breaks where execution_id = :e"), {"e": row.execution_id}
        ).all()
    assert (Decimal(stored.amount), stored.status, stored.source) == (
        row.commission,
        "final",
        STATEMENT_SOURCE,
    )
    assert [(b.kind, b.status) for b in breaks] == [("statement_commission", "open")]

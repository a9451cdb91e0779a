"""Schema and migrations: round trip on both dialects, models == migrations, auto-create, CLI, column types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from ibkr_tasks.errors import LedgerError
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger import engine as engine_mod
from ibkr_tasks.ledger.cli import main as db_main
from ibkr_tasks.ledger.schema import Base, FillRow
from ibkr_tasks.ledger.testing import make_fill
from ibkr_tasks.ledger.types import Amount

LEDGER_TABLES = {
    "accounts",
    "fills",
    "commissions",
    "commission_history",
    "position_snapshots",
    "reconciliation_runs",
    "breaks",
    "orders",
    "quarantine",
}


def _diff(ledger: Ledger) -> list[object]:
    with ledger.engine.connect() as conn:
        return list(
            compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        )


def test_upgrade_downgrade_upgrade_and_models_match_migrations(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade()
        assert LEDGER_TABLES <= set(inspect(ledger.engine).get_table_names())
        assert _diff(ledger) == []

        engine_mod.downgrade(ledger.engine)
        assert set(inspect(ledger.engine).get_table_names()) <= {"alembic_version"}
        assert engine_mod.current_revision(ledger.engine) is None

        ledger.upgrade()
        assert engine_mod.current_revision(ledger.engine) == engine_mod.head_revision()
        assert _diff(ledger) == []
        # The schema works after the round trip.
        assert ledger.ingest("DU1234567", [make_fill()], "r1").fills_new == 1
    finally:
        ledger.dispose()


def test_empty_sqlite_file_is_created_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    ledger = Ledger(f"sqlite:///{path}")
    try:
        assert ledger.current_positions("DU1234567") == []
        assert path.exists()
        assert engine_mod.current_revision(ledger.engine) == engine_mod.head_revision()
    finally:
        ledger.dispose()


def test_empty_postgresql_is_not_created_silently(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    try:
        with pytest.raises(LedgerError, match="db upgrade"):
            ledger.current_positions("DU1234567")
    finally:
        ledger.dispose()


def test_outdated_schema_asks_for_an_upgrade(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    try:
        ledger.upgrade()
        with ledger.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'an_older_one'"))
        with pytest.raises(LedgerError, match="ibkr-tasks db upgrade"):
            Ledger(engine=ledger.engine).open_breaks()
    finally:
        ledger.dispose()


def test_cli_db_upgrade_with_url_and_from_env(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert db_main(["upgrade", db_url]) == 0
    assert "upgraded from an empty database" in capsys.readouterr().out
    assert db_main(["upgrade", db_url]) == 0
    assert "already at revision" in capsys.readouterr().out

    env_db = tmp_path / "from_env.db"
    monkeypatch.setenv("IBKR_LEDGER_URL", f"sqlite:///{env_db}")
    assert db_main(["upgrade"]) == 0
    ledger = Ledger()
    try:
        assert ledger.url.database == str(env_db)
        assert LEDGER_TABLES <= set(inspect(ledger.engine).get_table_names())
    finally:
        ledger.dispose()


def test_cli_db_upgrade_reports_a_bad_url_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert db_main(["upgrade", "postgresql://nobody:secret@127.0.0.1:1/none"]) == 1
    err = capsys.readouterr().err
    assert "upgrade of" in err
    assert "secret" not in err


def test_default_url_is_the_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IBKR_LEDGER_URL", raising=False)
    assert str(engine_mod.resolve_url()) == "sqlite:///ibkr_ledger.db"
    assert engine_mod.resolve_url("postgresql://u@h/db").drivername == "postgresql+psycopg"


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_busy_timeout(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    try:
        with ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        ledger.dispose()


def test_amounts_are_exact_decimals_and_times_aware_utc(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade()
        paris = timezone(timedelta(hours=1))
        fill = make_fill(
            price=Decimal("12345678901234567.1234567891"),
            quantity=Decimal("0.0000000001"),
            trade_time=datetime(2026, 11, 3, 10, 0, 0, 123456, tzinfo=paris),
        )
        ledger.ingest("DU1234567", [fill], "r1")
        with ledger.session() as session:
            row = session.scalars(select(FillRow)).one()
        assert row.price == Decimal("12345678901234567.1234567891")
        assert isinstance(row.quantity, Decimal)
        assert row.quantity == Decimal("1E-10")
        assert row.trade_time == datetime(2026, 11, 3, 9, 0, 0, 123456, tzinfo=UTC)
        assert row.trade_time.tzinfo is UTC
    finally:
        ledger.dispose()


def test_naive_datetimes_and_floats_are_refused(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    try:
        with pytest.raises(ValueError, match="naive"):
            ledger.fills_for("DU1234567", datetime(2026, 1, 1))
        for dialect in (ledger.engine.dialect, postgresql.dialect()):
            with pytest.raises(TypeError, match="Decimal"):
                Amount().process_bind_param(1.5, dialect)
    finally:
        ledger.dispose()


def test_sqlite_keeps_readable_text_for_amounts_and_times(sqlite_url: str) -> None:
    """What a user sees with the sqlite3 shell: exact decimal text, UTC times in SQLAlchemy's format."""
    ledger = Ledger(sqlite_url)
    try:
        ledger.ingest(
            "DU1234567",
            [make_fill(price="187.2500", trade_time=datetime(2026, 11, 3, 9, 0, tzinfo=UTC))],
            "r1",
        )
        with ledger.engine.connect() as conn:
            price, when = conn.exec_driver_sql("SELECT price, trade_time FROM fills").one()
        assert (price, when) == ("187.25", "2026-11-03 09:00:00.000000")
    finally:
        ledger.dispose()


def test_sqlite_writers_begin_immediate_and_readers_do_not(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    try:
        ledger.ensure_schema()
        begins: list[str] = []

        def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
            if statement.startswith("BEGIN"):
                begins.append(statement)

        event.listen(ledger.engine, "before_cursor_execute", seen)
        with ledger.write("DU1234567") as session:
            session.execute(text("SELECT 1"))
        with ledger.session() as session:
            session.execute(text("SELECT 1"))
        assert begins == ["BEGIN IMMEDIATE", "BEGIN"]
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE orders SET status = :bad", {"bad": "Filled"}),  # IBKR's word, not ours
        ("UPDATE reconciliation_runs SET status = :bad", {"bad": "cancelled"}),  # never written: gone
        ("UPDATE commissions SET status = :bad", {"bad": "provisional"}),  # never written: gone
        ("UPDATE commission_history SET previous_status = :bad", {"bad": "later"}),
        ("UPDATE breaks SET status = :bad", {"bad": "closed"}),
        ("UPDATE fill_history SET change = :bad", {"bad": "fixed"}),
    ],
)
def test_the_database_refuses_a_status_outside_its_vocabulary(
    db_url: str, statement: str, params: dict[str, str]
) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade()
        ledger.ingest("DU1234567", [make_fill(commission=None)], "r1")
        ledger.ingest("DU1234567", [make_fill(commission="1.5")], "r2")  # commission_history row
        ledger.ingest("DU1234567", [make_fill(price="190", commission="2")], "r3")  # fill_history, break
        ledger.start_run("DU1234567", "r3")
        ledger.record_order("DU1234567", "c1", {"side": "BUY"})
        with ledger.engine.connect() as conn:
            for name in (
                "orders",
                "reconciliation_runs",
                "commissions",
                "commission_history",
                "breaks",
                "fill_history",
            ):
                assert conn.scalar(select(func.count()).select_from(Base.metadata.tables[name])), name
        with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        ledger.dispose()


def test_0008_translates_stored_ibkr_order_words_and_back(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade("0007_flex")
        with ledger.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (account_id, is_paper, created_at) "
                    "VALUES ('DU1234567', true, '2026-11-25 00:00:00')"
                )
            )
            for n, status in enumerate(["intent", "PreSubmitted", "Filled", "cancel_requested", "Weird"]):
                conn.execute(
                    text(
                        "INSERT INTO orders (account_id, coid, request, prompts, status, created_at, updated_at) "
                        "VALUES ('DU1234567', :coid, '{}', '[]', :status, '2026-11-25 00:00:00', "
                        "'2026-11-25 00:00:00')"
                    ),
                    {"coid": f"c{n}", "status": status},
                )
        ledger.upgrade()
        query = text("SELECT status, ibkr_status FROM orders ORDER BY coid")
        with ledger.engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(query)] == [
                ("intent", None),
                ("submitted", "PreSubmitted"),
                ("filled", "Filled"),
                ("cancel_requested", None),
                ("unknown", "Weird"),
            ]
        engine_mod.downgrade(ledger.engine, "0007_flex")
        with ledger.engine.connect() as conn:
            assert [r[0] for r in conn.execute(text("SELECT status FROM orders ORDER BY coid"))] == [
                "intent",
                "PreSubmitted",
                "Filled",
                "cancel_requested",
                "Weird",
            ]
    finally:
        ledger.dispose()

"""The bulk upsert the ledger's hot writes use: same values as a plain insert, one statement per batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, Column, MetaData, String, Table, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ibkr_tasks.ledger.bulk import upsert
from ibkr_tasks.ledger.engine import create_ledger_engine
from ibkr_tasks.ledger.types import Amount, JSONDoc, UTCDateTime

metadata = MetaData()
things = Table(
    "bulk_things",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("thing_id", String(64), primary_key=True),
    Column("conid", BigInteger),
    Column("amount", Amount),
    Column("note", String(64)),
    Column("at", UTCDateTime),
    Column("flag", Boolean),
    Column("raw", JSONDoc),
)
NOW = datetime(2026, 11, 25, 17, 0, 0, 123456, tzinfo=UTC)
TRICKY_TEXT = 'a "quoted", {braced} \\ back\\slashed, NULL, ünïcødé'


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(db_url)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def _rows(n: int, **overrides: Any) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row = {
            "account_id": "DU1",
            "thing_id": f"{i:08d}.01.01",
            "conid": 10**12 + i,  # beyond 32 bits
            "amount": Decimal("-12345678.5") + Decimal(i) / 10**10,
            "note": TRICKY_TEXT if i % 2 else None,
            "at": NOW,
            "flag": i % 3 == 0,
            "raw": {"i": i, "text": TRICKY_TEXT, "nested": {"list": [1, "2", None]}},
        }
        row.update(overrides)
        rows.append(row)
    return rows


def _read(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.thing_id: r._asdict() for r in conn.execute(select(things))}


def _write(engine: Engine, rows: list[dict[str, Any]], **kwargs: Any) -> None:
    with Session(engine) as session, session.begin():
        upsert(session, things, rows, conflict=("account_id", "thing_id"), **kwargs)


def test_values_round_trip_exactly(engine: Engine) -> None:
    rows = _rows(50)
    rows[0]["at"] = datetime(2026, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=-5)))  # 17:00 UTC
    rows[1]["amount"] = None
    rows[1]["raw"] = None
    _write(engine, rows)
    stored = _read(engine)
    assert len(stored) == 50
    for row in rows[2:]:
        assert stored[row["thing_id"]] == row
    assert stored[rows[0]["thing_id"]]["at"] == datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    assert stored[rows[1]["thing_id"]]["amount"] is None
    assert stored[rows[1]["thing_id"]]["raw"] is None


def test_columns_that_are_all_null(engine: Engine) -> None:
    _write(engine, _rows(5, amount=None, note=None, raw=None))
    assert {(r["amount"], r["note"], r["raw"]) for r in _read(engine).values()} == {(None, None, None)}


def test_conflict_updates_only_the_named_columns(engine: Engine) -> None:
    _write(engine, _rows(10))
    changed = _rows(12, amount=Decimal("1.25"), note="changed", flag=True)
    _write(engine, changed, update=("amount", "note"))
    stored = _read(engine)
    assert len(stored) == 12
    assert all(r["amount"] == Decimal("1.25") and r["note"] == "changed" for r in stored.values())
    # ``flag`` was not in ``update``: the stored rows keep theirs, the two new rows have the new one.
    assert [stored[f"{i:08d}.01.01"]["flag"] for i in range(12)] == [i % 3 == 0 for i in range(10)] + [
        True,
        True,
    ]


def test_conflict_without_update_keeps_the_stored_row(engine: Engine) -> None:
    _write(engine, _rows(3))
    _write(engine, _rows(4, note="other"))
    stored = _read(engine)
    assert [stored[f"{i:08d}.01.01"]["note"] for i in range(4)] == [None, TRICKY_TEXT, None, "other"]


def test_one_statement_per_batch(engine: Engine) -> None:
    """PostgreSQL gets a single statement for the whole batch (no per-row executemany); SQLite one
    executemany of the compiled statement."""
    calls: list[bool] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if "bulk_things" in statement:
            calls.append(executemany)

    event.listen(engine, "before_cursor_execute", record)
    try:
        _write(engine, _rows(500))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert calls == ([False] if engine.dialect.name == "postgresql" else [True])
    assert len(_read(engine)) == 500


def test_rows_must_have_the_same_columns(engine: Engine) -> None:
    rows = _rows(3)
    del rows[2]["note"]
    with pytest.raises(ValueError, match="same columns"):
        _write(engine, rows)
    assert _read(engine) == {}


def test_two_rows_with_the_same_key_are_refused_on_both_databases(engine: Engine) -> None:
    rows = _rows(3)
    rows[2]["thing_id"] = rows[0]["thing_id"]
    with pytest.raises(ValueError, match="same account_id, thing_id"):
        _write(engine, rows)
    assert _read(engine) == {}

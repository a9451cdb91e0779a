"""The quarantine keeps a rejected row exactly as received, on SQLite and PostgreSQL; unsupported
ledger URLs get a typed error naming what is supported."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, text

from ibkr_tasks.errors import ConfigurationError, LedgerError, UnsupportedDatabase
from ibkr_tasks.ledger import Ledger, QuarantineRow
from ibkr_tasks.ledger import engine as engine_mod
from ibkr_tasks.ledger.cli import main as db_main
from ibkr_tasks.models import RejectedRow

NAN, INF = float("nan"), float("inf")
RAWS: dict[str, Any] = {
    "bare integer": 5,
    "integer beyond 64 bits": 123456789012345678901234567890,
    "bare float": 1.0,
    "float 0.1": 0.1,
    "number as text": "5",
    "NaN": NAN,
    "Infinity": INF,
    "NaN inside a row": {"size": NAN, "price": -INF, "ok": [1, 2.5, None, True]},
    "NUL in a string": "x\x00y",
    "NUL in a key": {"k\x00": 1},
    "unpaired surrogate": "a\ud800b",
    "unicode": {"symbol": "日本株 — ünïcödé 🚀"},
    "list": [1, "2", {"3": [4.0]}],
    "empty object": {},
}


def _exactly(value: Any) -> str:
    """The value as JSON text that tells 5 from 5.0 and keeps NaN (NaN != NaN in Python)."""
    return json.dumps(value)


def test_a_rejected_row_reads_back_exactly_what_was_received(ledger: Ledger) -> None:
    rejected = [RejectedRow(kind="fill", key=name, reason="bad", raw=raw) for name, raw in RAWS.items()]
    assert ledger.quarantine(rejected, "run-1") == len(RAWS)
    with ledger.session() as session:
        stored = {row.key: row.raw for row in session.scalars(select(QuarantineRow))}
    for name, raw in RAWS.items():
        assert _exactly(stored[name]) == _exactly(raw), name


def test_the_stored_text_is_the_row_in_the_order_received(ledger: Ledger) -> None:
    raw = {"z": 1, "a": [1.5, "x"], "m": None}
    ledger.quarantine([RejectedRow(kind="fill", reason="bad", raw=raw)], "run-1")
    with ledger.engine.connect() as conn:
        assert (
            conn.execute(text("select raw from quarantine")).scalar_one() == '{"z":1,"a":[1.5,"x"],"m":null}'
        )


def test_a_key_or_reason_the_columns_cannot_hold_is_stored(ledger: Ledger) -> None:
    row = RejectedRow(kind="fill", key="k\x00" * 100, reason="side 'Q\x00\ud800' is bad", raw={})
    ledger.quarantine([row], "run-1")
    with ledger.session() as session:
        stored = session.scalars(select(QuarantineRow)).one()
    assert stored.key.startswith("k\\u0000k") and len(stored.key) == 128
    assert stored.reason == "side 'Q\\u0000\\ud800' is bad"


def test_quarantined_rows_survive_the_upgrade_to_text(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        ledger.upgrade("0004_contracts")
        with ledger.engine.begin() as conn:
            conn.execute(
                text(
                    "insert into quarantine (row_hash, kind, reason, raw, first_seen_at) "
                    "values ('h1', 'fill', 'bad', :raw, '2026-01-01 00:00:00')"
                ),
                {"raw": '{"execution_id": "x.1", "size": 12345678901234567890, "n": [1.5]}'},
            )
        ledger.upgrade()
        with ledger.session() as session:
            raw = session.scalars(select(QuarantineRow.raw)).one()
        assert raw == {"execution_id": "x.1", "size": 12345678901234567890, "n": [1.5]}
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:secret@db.example/ledger",
        "mssql+pyodbc://user:secret@dsn",
        "oracle://user:secret@db/x",
        "sqlite+pysqlcipher://:secret@/ledger.db",
        "postgresql+asyncpg://user:secret@db/ledger",
        "not a url at all secret",
    ],
)
def test_an_unsupported_ledger_url_gets_a_typed_error_naming_the_supported_ones(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UnsupportedDatabase) as caught:
        Ledger(url)
    message = str(caught.value)
    assert "SQLite" in message and "PostgreSQL" in message and "secret" not in message
    assert isinstance(caught.value, LedgerError) and isinstance(caught.value, ConfigurationError)
    monkeypatch.setenv("IBKR_LEDGER_URL", url)
    with pytest.raises(UnsupportedDatabase):
        engine_mod.create_ledger_engine()

    assert db_main(["upgrade", url]) == 1
    err = capsys.readouterr().err
    assert "supports SQLite" in err and "secret" not in err


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///x.db", "sqlite+pysqlite:///x.db", "postgres://h/db", "postgresql+psycopg://h/d"],
)
def test_supported_urls_are_accepted(url: str) -> None:
    assert engine_mod.resolve_url(url).get_backend_name() in {"sqlite", "postgresql"}

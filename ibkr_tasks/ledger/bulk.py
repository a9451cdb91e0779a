"""One bulk ``INSERT ... ON CONFLICT`` per batch of rows, without a round trip or a dict walk per row.

``session.execute(insert(table), rows)`` is correct but slow for the ledger's batches: SQLAlchemy
builds and type-processes a parameter dict per row, and on PostgreSQL psycopg then sends one
statement per row (pipelined). The ledger's hot writes (fills and commissions) go through
:func:`upsert` instead, which writes the same rows with the same column types:

- **PostgreSQL**: a single statement per batch,
  ``INSERT INTO t (cols) SELECT * FROM unnest(CAST(:c1 AS type[]), ...) AS u(cols) ON CONFLICT ...``:
  each column travels as one typed array, so the server parses, plans and runs one statement for
  the whole batch;
- **SQLite**: the statement SQLAlchemy compiles for the table, run with the driver's ``executemany``
  on ready-made tuples; each column's bind processor (the ledger's Decimal and UTC timestamp
  conversions) runs per value, and only once for a value that repeats in the column (the run id,
  the run's timestamp, the account).

Both stay inside the caller's transaction and run ``ON CONFLICT`` exactly as
``insert(...).on_conflict_do_update(...)`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _on_conflict(stmt: Any, conflict: Sequence[str], update: Sequence[str] | None) -> Any:
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(conflict))
    return stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update}
    )


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str],
    update: Sequence[str] | None = None,
) -> None:
    """Insert ``rows`` into ``table``; a row whose ``conflict`` key exists updates ``update`` (or is
    skipped when ``update`` is empty). Every row must have the same keys, and no two rows the same
    ``conflict`` key (one statement cannot touch a row twice; PostgreSQL refuses it). One statement
    on PostgreSQL, one ``executemany`` on SQLite."""
    if not rows:
        return
    columns = list(rows[0])
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        raise ValueError(
            f"bulk upsert into {table.name}: every row must have the same columns {sorted(keys)}"
        )
    if len({tuple(row[c] for c in conflict) for row in rows}) != len(rows):
        raise ValueError(f"bulk upsert into {table.name}: two rows have the same {', '.join(conflict)}")
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        _upsert_postgresql(session, table, columns, rows, conflict, update)
    elif dialect.name == "sqlite":
        _upsert_sqlite(session, table, columns, rows, conflict, update)
    else:  # pragma: no cover - the engine module refuses other databases first
        raise NotImplementedError(f"the ledger supports SQLite and PostgreSQL, not {dialect.name}")


def _upsert_postgresql(
    session: Session,
    table: Table,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    update: Sequence[str] | None,
) -> None:
    dialect = session.get_bind().dialect
    arrays = [
        cast(
            bindparam(name, type_=postgresql.ARRAY(table.c[name].type)), postgresql.ARRAY(table.c[name].type)
        )
        for name in columns
    ]
    unnested = func.unnest(*arrays).table_valued(*[column(name) for name in columns]).render_derived()
    stmt = postgresql.insert(table).from_select(columns, select(*[unnested.c[name] for name in columns]))
    sql = _on_conflict(stmt, conflict, update).compile(dialect=dialect).string
    # Binary parameters (``%(name)b``): psycopg then sends each array without quoting every element
    # (JSON payloads are full of quotes), which is most of the cost in the text format.
    for name in columns:
        placeholder = f"%({name})s"
        if sql.count(placeholder) != 1:  # pragma: no cover - a column name SQLAlchemy renamed
            raise ValueError(f"cannot find the parameter of column {name} in {sql}")
        sql = sql.replace(placeholder, f"%({name})b")
    params = {name: _processed(table, dialect, name, rows) for name in columns}
    session.connection().exec_driver_sql(sql, params)


def _upsert_sqlite(
    session: Session,
    table: Table,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    update: Sequence[str] | None,
) -> None:
    dialect = session.get_bind().dialect
    compiled = _on_conflict(sqlite.insert(table), conflict, update).compile(
        dialect=dialect, column_keys=columns
    )
    order = list(compiled.positiontup or ())
    if sorted(order) != sorted(columns):  # pragma: no cover - a statement with other parameters
        raise ValueError(f"unexpected parameters {order} for columns {columns}")
    processed = [_processed(table, dialect, name, rows) for name in order]
    session.connection().exec_driver_sql(compiled.string, list(zip(*processed, strict=True)))


def _processed(table: Table, dialect: Any, name: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Column ``name`` of ``rows`` as the driver takes it (the column type's bind processing)."""
    values = [row[name] for row in rows]
    process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
    return values if process is None else _process(values, process)


_UNSET: Any = object()


def _process(values: list[Any], process: Any) -> list[Any]:
    """``[process(v) for v in values]``, reusing the result while the same object repeats."""
    out: list[Any] = []
    append = out.append
    last: Any = _UNSET
    last_out: Any = None
    for value in values:
        if value is not last:
            last, last_out = value, process(value)
        append(last_out)
    return out

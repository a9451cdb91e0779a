"""Connecting to the ledger database and bringing its schema up to date.

``IBKR_LEDGER_URL`` selects the database (any SQLAlchemy URL; ``postgresql://`` means psycopg 3);
the default is ``sqlite:///ibkr_ledger.db`` in the working directory.

SQLite is set up for a ledger that a nightly flow writes while people read it: WAL journal (readers
do not block the writer), a busy timeout (a second writer waits instead of failing), foreign keys on,
and write transactions that start with ``BEGIN IMMEDIATE`` so two writers are serialised up front
instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

import ibkr_tasks
from ibkr_tasks.errors import LedgerError, UnsupportedDatabase
from ibkr_tasks.ledger.jsonable import json_default

DEFAULT_URL = "sqlite:///ibkr_ledger.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "ibkr_ledger_write"


def _migrations_dir() -> Path:
    """The Alembic folder: ``ibkr_tasks/_migrations`` in an installed wheel, ``migrations/`` at the
    root of a checkout (editable install); the wheel carries the same files under the first name."""
    package = Path(ibkr_tasks.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    return package.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()


SUPPORTED_DATABASES = (
    "SQLite (sqlite:///path/to/ledger.db) and PostgreSQL through psycopg 3 "
    "(postgresql://user@host/database or postgresql+psycopg://...)"
)
# backend -> the drivers the ledger works with (None: the backend's default driver)
_DRIVERS: dict[str, set[str | None]] = {"sqlite": {None, "pysqlite"}, "postgresql": {"psycopg"}}


def resolve_url(url: str | URL | None = None) -> URL:
    """The database URL to use: ``url``, else ``IBKR_LEDGER_URL``, else the SQLite default.

    ``postgresql://`` and ``postgres://`` are read as ``postgresql+psycopg://`` (psycopg 3 is the
    driver this package installs). Any other database or driver raises
    :class:`~ibkr_tasks.errors.UnsupportedDatabase` naming the supported ones.
    """
    raw = url if url is not None else (os.environ.get("IBKR_LEDGER_URL") or DEFAULT_URL)
    try:
        parsed = make_url(raw) if isinstance(raw, str) else raw
    except ArgumentError:
        # (The text is not repeated: it may hold a password.)
        raise UnsupportedDatabase(
            f"the ledger URL is not a database URL; the ledger supports {SUPPORTED_DATABASES}"
        ) from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend, _, driver = parsed.drivername.partition("+")
    if (driver or None) not in _DRIVERS.get(backend, set()):
        raise UnsupportedDatabase(
            f"the ledger does not support {parsed.drivername!r} URLs; it supports {SUPPORTED_DATABASES}"
        )
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:"))


def create_ledger_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An engine for the ledger with the SQLite settings described in the module docstring."""
    parsed = resolve_url(url)
    # JSON columns hold payloads; a stray Decimal or datetime in one is stored as text, not refused.
    kwargs.setdefault("json_serializer", _json_serializer)
    if parsed.get_backend_name() == "sqlite":
        if is_memory_sqlite(parsed):
            # One shared connection, or every new connection would see a new empty database.
            kwargs.setdefault("poolclass", StaticPool)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _json_serializer(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (the pysqlite driver would
        # otherwise start transactions lazily and never as IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def sqlite_variable_limit(engine: Engine) -> int:
    """How many bound parameters one SQLite statement may have (999 on old builds)."""
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        getlimit = getattr(dbapi, "getlimit", None)
        if getlimit is None:  # pragma: no cover - Python < 3.11
            return 999
        import sqlite3

        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


# --- migrations -----------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None, url: URL | None = None) -> Any:
    """An Alembic ``Config`` for ``migrations/``, bound to ``connection`` when given."""
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise LedgerError(
            f"the ledger migrations are missing at {MIGRATIONS_DIR}; reinstall ibkr-tasks (a wheel carries "
            "them as ibkr_tasks/_migrations, a checkout as migrations/ next to the ibkr_tasks package)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise LedgerError(f"no migration found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest), in one transaction where possible."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (default: an empty database). Drops ledger data."""
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def is_empty(engine: Engine) -> bool:
    """True when the database has no tables at all."""
    return not inspect(engine).get_table_names()

"""Shared fixtures.

- ``sqlite_url`` / ``pg_url``: a clean, empty database per test. PostgreSQL is
  127.0.0.1:5432 as user postgres unless ``IBKR_TEST_PG_URL`` says otherwise. With ``CI=true`` an
  unreachable PostgreSQL is a test failure; elsewhere the PostgreSQL tests skip with the reason.
- ``db_url``: parametrised over both, for ledger tests that must hold on each dialect.
- ``prefect_harness``: one ``prefect_test_harness`` per test session (it takes ~9 s to start), only
  for tests that ask for it.
- ``payload(name)``: a real IBKR capture from ``tests/fixtures/ibkr`` (provenance in its PROVENANCE.md).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Isolate Prefect from the user's ~/.prefect before anything imports prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ibkr-tasks-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault(
    "PREFECT_LOGGING_LEVEL", "INFO"
)  # run logs must reach the API (secret checks read them)
# Tests must never pick up a real token or account from the developer's shell.
for _name in list(os.environ):
    if _name.startswith("IBKR_") and _name not in {"IBKR_TEST_PG_URL", "IBKR_FUZZ_EXAMPLES"}:
        del os.environ[_name]
# No test waits on wall time for a retry: Prefect's retry delays of the reads and the Flex fetch, and the
# transport's backoff after a 5xx, a timeout or a 429 without Retry-After, are all 0. (Tests of the
# backoff itself run on a FakeClock and pass their delays explicitly.)
os.environ["IBKR_TASK_RETRY_DELAYS"] = "0"
os.environ["IBKR_TASK_FLEX_RETRY_DELAY"] = "0"
os.environ["IBKR_RETRY_BACKOFF"] = "0"
os.environ["IBKR_RATE_LIMIT_BACKOFF"] = "0"
# Processes of one test session share the pacing of IBKR's slow endpoints through this directory
# (as processes of one machine do); other sessions running at the same time get their own.
os.environ["IBKR_PACING_DIR"] = tempfile.mkdtemp(prefix="ibkr-tasks-pacing-")

PG_ADMIN_URL = os.environ.get("IBKR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "ibkr"
"""Real IBKR Client Portal Web API answers, each with a ``.src.txt`` naming where it was captured."""


def payload(name: str) -> Any:
    """The decoded JSON of the real IBKR capture ``name``; a missing capture fails the test, never skips it."""
    path = PAYLOADS / name
    if not path.is_file():
        pytest.fail(f"real IBKR capture {name!r} is missing from {PAYLOADS}", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))


_pg_problem: str | None = None
_pg_checked = False


def _check_postgres() -> str | None:
    """Return None when PostgreSQL answers, else why not (checked once per session)."""
    global _pg_checked, _pg_problem
    if _pg_checked:
        return _pg_problem
    _pg_checked = True
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect is the reason we report
        _pg_problem = f"PostgreSQL at {_redacted(PG_ADMIN_URL)} is not reachable: {type(exc).__name__}: {exc}"
    return _pg_problem


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A freshly created PostgreSQL database, dropped after the test."""
    problem = _check_postgres()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: PostgreSQL tests must run, not skip)")
        pytest.skip(problem)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ibkr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session; heartbeats off so sync flows don't wait 1 s."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        if os.environ.get("PREFECT_API_URL"):
            yield
        else:
            with prefect_test_harness(server_startup_timeout=90):
                yield

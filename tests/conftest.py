"""Shared fixtures.

- ``sqlite_url`` / ``pg_url``: a clean, empty database per test. PostgreSQL is
  127.0.0.1:5432 as user postgres unless ``IBKR_TEST_PG_URL`` says otherwise. With ``CI=true`` an
  unreachable PostgreSQL is a test failure; elsewhere the PostgreSQL tests skip with the reason.
- ``db_url``: parametrised over both, for ledger tests that must hold on each dialect.
- ``prefect_harness``: one ``prefect_test_harness`` per test session (it takes ~9 s to start), only
  for tests that ask for it.
- ``ledger``: a Ledger at head on ``db_url``, copied from one migrated once per session.
- ``clock`` (``clock_start``): virtual time; ``router``: a respx gateway with the pre-flights answered.
- ``payload(name)``: a real IBKR capture from ``tests/fixtures/ibkr`` (provenance in its PROVENANCE.md).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Under pytest-xdist (`make test` runs the suite on several worker processes) each worker is a test
# session of its own: its own Prefect home and test server, pacing directory and databases.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
"""``gw0``, ``gw1``, ... in a pytest-xdist worker; None in a plain pytest run."""

# Isolate Prefect from the user's ~/.prefect before anything imports prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ibkr-tasks-prefect-")
if XDIST_WORKER:  # not the home the controlling process set (and every worker inherited)
    os.environ["PREFECT_HOME"] = _PREFECT_HOME
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
# IBKR's slow limits (1 request per 5 s for trades and /portfolio/accounts, ...) at a fifth of their
# periods, for the client and every simulator the tests start: a flow run waits about 1 s where it waited
# 5 s, and the two still keep the relation they have at IBKR's own limits (docs/pacing.md#pacing-scale).
# Tests about the pacing itself set IBKR_PACING_SCALE=1 (the ``ibkr_pacing`` fixture) or build their
# limiters explicitly.
PACING_SCALE = "0.2"
os.environ["IBKR_PACING_SCALE"] = PACING_SCALE
# Processes of one test session share the pacing of IBKR's slow endpoints through this directory
# (as processes of one machine do); other sessions running at the same time get their own.
os.environ["IBKR_PACING_DIR"] = tempfile.mkdtemp(prefix="ibkr-tasks-pacing-")

PG_ADMIN_URL = os.environ.get("IBKR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "ibkr"
"""Real IBKR Client Portal Web API answers, each with a ``.src.txt`` naming where it was captured."""
FLEX_STATEMENTS = Path(__file__).resolve().parent / "fixtures" / "flex"
"""Flex Web Service statements and answers the Flex tests parse and book."""


def payload(name: str) -> Any:
    """The decoded JSON of the real IBKR capture ``name``; a missing capture fails the test, never skips it."""
    path = PAYLOADS / name
    if not path.is_file():
        pytest.fail(f"real IBKR capture {name!r} is missing from {PAYLOADS}", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist with ``--dist loadgroup`` (``make test``): the tests that share a module- or
    class-scoped fixture (e.g. four nightly runs made once for a module's tests) run on one worker, so
    that fixture is built once; every other test goes to whichever worker is free.

    xdist groups tests by an ``@group`` suffix of their node id. Its own ``xdist_group`` marker sets
    that suffix through an attribute pytest 9 no longer reads, so the suffix is set here.
    """
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers by --dist loadgroup
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = sorted(
            name
            for name, defs in (info.name2fixturedefs.items() if info else ())
            if defs and defs[-1].scope in ("module", "class", "package") and not name.startswith("_")
        )
        if shared:
            _set_nodeid(item, f"{item.nodeid}@{item.path.stem}.{'.'.join(shared)}")


def _set_nodeid(item: pytest.Item, nodeid: str) -> None:
    if hasattr(item, "_id"):  # pytest >= 9 keeps the node id as a parsed NodeId
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(nodeid)
    else:
        item._nodeid = nodeid


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
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A freshly created PostgreSQL database, dropped after the test: empty, or, for a test that asks
    for ``ledger``, a copy of the session's migrated template."""
    problem = _check_postgres()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: PostgreSQL tests must run, not skip)")
        pytest.skip(problem)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ibkr_test_{uuid.uuid4().hex[:12]}"
    template = ""
    if "ledger" in request.fixturenames:
        templates: _LedgerTemplates = request.getfixturevalue("_ledger_templates")
        template = f' TEMPLATE "{templates.pg_template()}"'
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
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


@pytest.fixture
def clock_start() -> float:
    """Where ``clock`` starts (seconds); a module overrides this fixture to start elsewhere."""
    return 1_000.0


@pytest.fixture
def clock(clock_start: float) -> Any:
    """Virtual time (:class:`~ibkr_tasks.client.clock.FakeClock`): pass it as ``clock`` and
    ``clock.sleep`` as ``sleep``; hours of pacing then take milliseconds."""
    from ibkr_tasks.client.clock import FakeClock

    return FakeClock(start=clock_start)


@pytest.fixture
def router() -> Iterator[Any]:
    """respx mocking a gateway at ``test_api_support.BASE`` with the account pre-flights and contract
    info answered (``test_api_support.gateway``); tests add their own routes."""
    from test_api_support import gateway  # a test helper module beside this file

    with gateway() as mock:
        yield mock


class _LedgerTemplates:
    """A ledger migrated to head once per session (per xdist worker) and dialect, that each test's
    ``ledger`` is copied from: a SQLite file copy or ``CREATE DATABASE ... TEMPLATE`` takes a few
    milliseconds, running every migration took 0.3-1 s per test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite: Path | None = None
        self.pg: str | None = None

    def fill(self, url: str) -> None:
        """Make the SQLite database at ``url`` (from ``sqlite_url``) a copy of the template; a PostgreSQL
        database is created from its template by ``pg_url`` already."""
        import shutil

        from sqlalchemy.engine import make_url

        target = make_url(url)
        if target.get_backend_name() != "sqlite":
            return
        path = Path(str(target.database))
        if path.exists():  # something already wrote here: leave it to Ledger.upgrade()
            return
        if self.sqlite is None:
            self.sqlite = self.directory / "template.db"
            self._migrate(f"sqlite:///{self.sqlite}")
        shutil.copyfile(self.sqlite, path)

    def pg_template(self) -> str:
        """The name of the migrated PostgreSQL template database (made on first use)."""
        if self.pg is None:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            name = f"ibkr_template_{uuid.uuid4().hex[:12]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                admin.dispose()
            self.pg = name
            self._migrate(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
        return self.pg

    @staticmethod
    def _migrate(url: str) -> None:
        from ibkr_tasks.ledger import Ledger

        ledger = Ledger(url)
        try:
            ledger.upgrade()
        finally:
            ledger.dispose()  # a template database must have no open connection

    def drop(self) -> None:
        if self.pg is None:
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def _ledger_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LedgerTemplates]:
    templates = _LedgerTemplates(tmp_path_factory.mktemp("ledger-template"))
    try:
        yield templates
    finally:
        templates.drop()


@pytest.fixture
def ledger(db_url: str, _ledger_templates: _LedgerTemplates) -> Iterator[Any]:
    """A :class:`~ibkr_tasks.ledger.Ledger` at the newest migration on ``db_url`` (SQLite and
    PostgreSQL), disposed after the test. Tests of the migrations themselves use ``db_url``."""
    from ibkr_tasks.ledger import Ledger

    _ledger_templates.fill(db_url)
    ledger = Ledger(db_url)
    ledger.upgrade()  # at head already: checks the copy is current
    yield ledger
    ledger.dispose()


@contextmanager
def _fresh_pacing(directory: Path) -> Iterator[None]:
    from ibkr_tasks.client.ratelimit import reset_limiters

    mp = pytest.MonkeyPatch()
    mp.setenv("IBKR_PACING_DIR", str(directory))
    reset_limiters()
    try:
        yield
    finally:
        reset_limiters()
        mp.undo()


@pytest.fixture(autouse=True, scope="module")
def _module_pacing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module-scoped fixtures (a module's shared flow runs) pace from a clean slate too."""
    with _fresh_pacing(tmp_path_factory.mktemp("pacing")):
        yield


@pytest.fixture(autouse=True)
def _own_pacing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test paces IBKR's endpoints from a clean slate: its own ``IBKR_PACING_DIR`` and no
    process-wide limiter left by an earlier test.

    Every test talks to a simulator of its own (a new process, or respx), so the reservations an
    earlier test made against another simulator on 127.0.0.1 say nothing about this one; kept, they
    made each flow test wait up to 5 s for the previous test's trades and /portfolio/accounts slots.
    A test still shares the pacing among its own runs and processes. (So a simulator that enforces
    IBKR's limits must not be shared by several tests.)
    """
    with _fresh_pacing(tmp_path_factory.mktemp("pacing")):
        yield


@pytest.fixture
def ibkr_pacing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """IBKR's own limits (``IBKR_PACING_SCALE=1``) for a test about the pacing itself: its limiters and
    simulators keep the periods IBKR publishes, not the suite's scaled-down ones."""
    from ibkr_tasks.client.ratelimit import reset_limiters

    monkeypatch.setenv("IBKR_PACING_SCALE", "1")
    reset_limiters()
    yield
    reset_limiters()


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

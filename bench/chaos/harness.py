"""What the chaos run stands on: a shared Prefect server, a throwaway PostgreSQL database, a nightly
run in a killable subprocess, and the ledger's figures against the simulator's ground truth."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ibkr_tasks.ledger import Ledger
from ibkr_tasks.testing import SimulatorHandle, free_port
from ibkr_tasks.verify import compare_ledger_with_truth

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("IBKR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME; yields the API URL.

    Every driver process talks to this one server (as workers of one deployment would), so a killed
    run stays behind as a flow run in the server's database, exactly as in production.
    """
    port = free_port()
    env = _prefect_env(home)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}); see {home / 'server.log'}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start in 120 s; see {home / 'server.log'}")
            time.sleep(0.25)
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _prefect_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBKR_", "PREFECT_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    return env


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (CREATE DATABASE) with the ledger schema, as ``ibkr-tasks db upgrade``
    makes it (only an empty SQLite file is set up on first use); dropped afterwards. Yields its URL."""
    name = f"ibkr_chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        ledger = Ledger(url)
        ledger.upgrade()
        ledger.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class RunResult:
    """How one driver process ended."""

    killed: bool = False
    returncode: int | None = None
    state: str = ""
    message: str = ""
    seconds: float = 0.0  # from READY to exit
    accounts: list[dict[str, Any]] = field(default_factory=list)
    tail: str = ""

    @property
    def completed(self) -> bool:
        return not self.killed and self.returncode == 0

    def describe(self) -> str:
        if self.killed:
            return f"killed after {self.seconds:.2f} s"
        why = self.message or self.tail.strip().splitlines()[-1:] or ""
        return f"{self.state or 'exit ' + str(self.returncode)} in {self.seconds:.2f} s: {why}"


class Driver:
    """``python -m bench.chaos.driver`` as a child process whose output is read as it comes."""

    def __init__(self, env: dict[str, str], ledger_url: str, days: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos.driver", "--ledger-url", ledger_url, "--days", str(days)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.ready_at: float | None = None
        self.eof = False  # the child's output ended (its None was taken off the queue)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump(self, timeout: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return ""
        if line is None:
            self.eof = True
        else:
            self.output.append(line)
        return line

    def wait_ready(self, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._pump(deadline - time.monotonic())
            if line is None:
                return False
            if line.strip() == "READY":
                self.ready_at = time.monotonic()
                return True
        return False

    def wait(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout=max(timeout, 0.0))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> RunResult:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return RunResult(killed=True, returncode=self.proc.returncode, seconds=self._elapsed())

    def finish(self, timeout: float) -> RunResult:
        """Wait for the end (killing it after ``timeout`` s, reported as a failure) and read the result."""
        if not self.wait(timeout):
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._drain()
            return RunResult(
                returncode=self.proc.returncode,
                state="timeout",
                message=f"still running after {timeout:.0f} s",
            )
        seconds = self._elapsed()
        self._drain()
        result = RunResult(returncode=self.proc.returncode, seconds=seconds, tail="".join(self.output[-5:]))
        for line in self.output:
            if line.startswith("RESULT "):
                data = json.loads(line[len("RESULT ") :])
                result.state, result.message = data["state"], data.get("message") or ""
                result.accounts = data.get("accounts", [])
        return result

    def _drain(self) -> None:
        while not self.eof and self._pump(5.0) is not None:
            pass

    def _elapsed(self) -> float:
        return time.monotonic() - self.ready_at if self.ready_at else 0.0


@dataclass
class LedgerFigures:
    """The ledger against the simulator's truth, in the chaos table's terms."""

    lost: int  # executions in the truth missing from the ledger
    duplicated: int  # executions booked twice (two current revisions of one execution) + orders placed twice
    truth_ok: bool
    running_rows: int  # reconciliation_runs rows still 'running'
    problems: list[str]


def paper_accounts(sim: SimulatorHandle) -> list[str]:
    response = httpx.get(f"{sim.base_url}/sim/accounts", timeout=30)
    response.raise_for_status()
    return [a["account_id"] for a in response.json() if a["kind"] != "master"]


def ledger_figures(ledger_url: str, sim: SimulatorHandle, accounts: list[str]) -> LedgerFigures:
    report = compare_ledger_with_truth(ledger_url, sim, accounts)
    problems = [f"{a.account_id}: {p}" for a in report.accounts for p in a.problems]
    engine = create_engine(ledger_url)
    lost = duplicated = running = 0
    try:
        with engine.connect() as conn:
            for account_id in accounts:
                truth = sim.truth(account_id)
                booked = {
                    r[0]
                    for r in conn.execute(
                        text("select execution_id from fills where account_id = :a"), {"a": account_id}
                    )
                }
                lost += sum(1 for e in truth["executions"] if e["execution_id"] not in booked)
                cOIDs = [o["cOID"] for o in truth.get("orders", []) if o.get("cOID")]
                duplicated += len(cOIDs) - len(set(cOIDs))
            # one execution booked twice: two current (not superseded) revisions of one execution family
            duplicated += int(
                conn.execute(
                    text(
                        "select coalesce(sum(n - 1), 0) from (select count(*) as n from fills "
                        "where not superseded group by account_id, execution_family having count(*) > 1) t"
                    )
                ).scalar_one()
            )
            running = int(
                conn.execute(
                    text("select count(*) from reconciliation_runs where status = 'running'")
                ).scalar_one()
            )
    finally:
        engine.dispose()
    return LedgerFigures(
        lost=lost, duplicated=duplicated, truth_ok=report.ok, running_rows=running, problems=problems
    )


def sim_counts(sim: SimulatorHandle) -> tuple[int, int, dict[str, int]]:
    """(429 responses, rate-limit violations, violations per endpoint) the simulator counted so far."""
    stats = sim.stats()
    return (
        int(stats.get("responses_429", 0)),
        int(stats.get("rate_limit_violations", 0)),
        dict(stats.get("rate_limit_violations_by_endpoint", {})),
    )


def running_rows(ledger_url: str) -> int:
    """reconciliation_runs rows still 'running' (0 when the ledger has no tables yet)."""
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("select count(*) from reconciliation_runs where status = 'running'")
                ).scalar_one()
            )
    except Exception:  # killed before the migrations made the table
        return 0
    finally:
        engine.dispose()


def prefect_running_flow_runs(api_url: str, started_before: str | None = None) -> int:
    """Flow runs the Prefect server still shows RUNNING (a run killed with -9 stays so unless something
    marks it Crashed); only those started before ``started_before`` (ISO time) when given."""
    runs: dict[str, object] = {"state": {"type": {"any_": ["RUNNING"]}}}
    if started_before is not None:
        runs["start_time"] = {"before_": started_before}
    response = httpx.post(f"{api_url}/flow_runs/count", json={"flow_runs": runs}, timeout=60)
    response.raise_for_status()
    return int(response.json())


# Heartbeats every 30 s (Prefect allows no less) and a 45 s window: production uses 60 s and 600 s;
# the chaos run shortens both so that a killed run is marked Crashed within a minute.
CHAOS_HEARTBEAT_SECONDS = 30
CHAOS_CRASH_AFTER_SECONDS = 45


def install_crash_automation(api_url: str) -> None:
    """The automation ``ibkr-tasks setup`` creates (flow runs whose heartbeats stop become Crashed),
    with the chaos run's short window."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ibkr_tasks.setup import crash_automation

    async def create() -> None:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            async with get_client() as client:
                await client.create_automation(
                    crash_automation(CHAOS_CRASH_AFTER_SECONDS, heartbeat_seconds=CHAOS_HEARTBEAT_SECONDS)
                )

    asyncio.run(create())


def wait_for_crashed(api_url: str, started_before: str, limit: float = 90.0) -> int:
    """Wait until the server shows no flow run started before ``started_before`` RUNNING (the
    automation marks killed ones Crashed); the number still RUNNING when ``limit`` ran out."""
    deadline = time.monotonic() + limit
    running = -1
    while time.monotonic() < deadline:
        try:  # a loaded server may be slow to answer: ask again, do not give up the series
            running = prefect_running_flow_runs(api_url, started_before)
        except httpx.HTTPError:
            running = -1
        if running == 0:
            break
        time.sleep(1.0)
    return running


def wait_out_penalty_box(sim: SimulatorHandle, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while sim.stats()["penalty_box"]["active"] and time.monotonic() < deadline:
        time.sleep(0.5)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))

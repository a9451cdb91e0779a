"""A scheduled deployment on a real Prefect server gets its flow runs.

The UI shows a schedule as active whether or not the server's scheduler can create runs from it (with
SQLAlchemy 2.1 Prefect 3.8's scheduler fails on every loop and creates none), so only a server doing
its scheduling shows that the nightly deployment will ever run. The test harness's server runs no
scheduler; this module starts ``prefect server start`` itself, with its own PREFECT_HOME and SQLite
database in a temporary directory, and the scheduler's loops shortened to one second.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy
import yaml
from packaging.requirements import Requirement

from ibkr_tasks.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
SERVER_START_TIMEOUT = 120.0  # migrations of a fresh database take ~6-10 s on a busy 2-core box
SCHEDULE_TIMEOUT = 30.0  # the scheduler looks at new deployments every second here

pytestmark = [pytest.mark.prefect]


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    api_url: str
    log: Path

    def errors(self) -> str:
        """The server log's error lines (why the scheduler created nothing, when it did not)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(line for line in text.splitlines() if "Error" in line or "ERROR" in line)[-3000:]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1",
        # nothing else is needed here: keep the shared CPU for the scheduler
        PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
        PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false",
        PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED="false",
        PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
        PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED="false",
        PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED="false",
        PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED="false",
    )
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *PREFECT,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--analytics-off",
            ],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited with {process.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
        yield Server(api_url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nightly_schedule() -> dict:
    """The nightly deployment's schedule exactly as prefect.yaml declares it."""
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (nightly,) = [d for d in project["deployments"] if d["name"] == "nightly-reconciliation"]
    (schedule,) = nightly["schedules"]
    return schedule


def test_the_nightly_cron_deployment_gets_scheduled_runs(prefect_server: Server) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import CronSchedule

    declared = nightly_schedule()
    zone = ZoneInfo(declared["timezone"])
    hour, minute = int(declared["cron"].split()[1]), int(declared["cron"].split()[0])

    async def scenario() -> tuple[list, float]:
        async with PrefectClient(api=prefect_server.api_url) as client:
            flow_id = await client.create_flow_from_name("nightly-reconciliation")
            deployment_id = await client.create_deployment(
                flow_id,
                "nightly-reconciliation",
                entrypoint="flows/nightly_reconciliation.py:nightly_reconciliation",
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=declared["cron"], timezone=declared["timezone"]),
                        active=declared.get("active", True),
                        slug=declared["slug"],  # the server keeps the readable slug as declared
                    )
                ],
            )
            started = time.monotonic()
            while True:
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
                if runs or time.monotonic() - started > SCHEDULE_TIMEOUT:
                    return runs, time.monotonic() - started
                await asyncio.sleep(0.5)

    runs, waited = asyncio.run(scenario())
    assert runs, (
        f"the server's scheduler created no run of a deployment scheduled {declared} in {waited:.0f} s; "
        f"SQLAlchemy {sqlalchemy.__version__}; server errors:\n{prefect_server.errors()}"
    )
    assert all(r.state is not None and r.state.is_scheduled() for r in runs)
    assert len(runs) >= 3  # Prefect schedules at least 3 runs ahead (scheduler min_runs)
    for run in runs:
        local: datetime = run.expected_start_time.astimezone(zone)
        assert (local.hour, local.minute) == (hour, minute)
        assert local.weekday() < 5  # Monday to Friday
        assert run.auto_scheduled


def test_the_schedules_zone_is_written_where_users_read_it() -> None:
    """The UI's schedule card shows "At 06:30 PM, Monday through Friday" without a zone, and shows
    times in the browser's zone: the deployment's description and the schedule's slug name it."""
    declared = nightly_schedule()
    minute, hour = declared["cron"].split()[:2]
    said = f"{int(hour):02d}:{int(minute):02d} {declared['timezone']}"
    assert said == "18:30 America/New_York"
    assert said in declared["slug"]
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (nightly,) = [d for d in project["deployments"] if d["name"] == "nightly-reconciliation"]
    assert said in nightly["description"]


def test_installed_sqlalchemy_satisfies_the_pin() -> None:
    """The pin exists because the scheduler test above fails on 2.1: an environment outside it is not supported."""
    project = (ROOT / "pyproject.toml").read_text()
    import tomllib

    deps = tomllib.loads(project)["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in deps if Requirement(d).name == "sqlalchemy"]
    assert pin.specifier.contains(sqlalchemy.__version__), (
        f"SQLAlchemy {sqlalchemy.__version__} is outside the pin {pin.specifier}"
    )

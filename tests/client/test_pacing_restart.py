"""A run started right after another keeps IBKR's 1-per-5-s limits: two real processes, real time.

The simulator runs in its own process with IBKR's limits enforced and counts every violation
(``/sim/stats``). Two client processes run back to back, each starting with slow-endpoint calls
(``/portfolio/accounts``, then the trades of its accounts). Sharing the machine's pacing file, the
second waits for the first one's spacing: 0 violations. A third run right after them with the file
turned off (``IBKR_PACING_DIR=off``) violates at once, which shows the test can tell.

Runs at IBKR's own periods (scale 1 for clients and simulator, whatever the suite's scale), 15-20 s
of real time: the control run must reach the simulator within the window after the second run's last
call, and on a busy machine a 1-s window (scale 0.2) was not always enough for that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ibkr_tasks.client.ratelimit import TRADES, scaled_period
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.testing import running_simulator

# Builds its client, says "ready", waits for "go" on stdin, then makes its first calls.
_RUN = """
import asyncio, sys
from ibkr_tasks.client.api import IBKRClient

async def main() -> None:
    client = IBKRClient.from_settings()
    print("ready", flush=True)
    sys.stdin.readline()
    async with client:
        accounts = await client.list_accounts()
        await client.fills([a.account_id for a in accounts])
    print("done", flush=True)

asyncio.run(main())
"""


SCALE = 1.0
"""Client and simulator both at this pacing scale, set here (not taken from the suite's setting)."""


@pytest.fixture
def sim() -> Iterator[str]:
    """The simulator in its own process, enforcing IBKR's limits (no penalty box, so a run can go on)."""
    quirks = Quirks(rate_limits=True, penalty_box_seconds=0, pacing_scale=SCALE)
    scenario = Scenario(seed=3, accounts=2, quirks=quirks)
    with running_simulator(scenario) as handle:
        yield handle.base_url


def _violations(base: str) -> int:
    return int(httpx.get(f"{base}/sim/stats", timeout=5).json()["rate_limit_violations"])


def _start(base: str, pacing_dir: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IBKR_")}
    env.update(IBKR_API_URL=f"{base}/v1/api", IBKR_PACING_DIR=pacing_dir, IBKR_PACING_SCALE=str(SCALE))
    return subprocess.Popen(
        [sys.executable, "-c", _RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_run_right_after_another_respects_the_slow_endpoints(sim: str, tmp_path: Path) -> None:
    shared = str(tmp_path / "pacing")
    # Two runs sharing the machine's pacing file, and a control run without it; all started and
    # ready before the first one goes, so that each one's calls follow the previous run's at once.
    first, second, control = runs = [_start(sim, shared), _start(sim, shared), _start(sim, "off")]
    try:
        for run in runs:
            assert run.stdout is not None
            assert run.stdout.readline().strip() == "ready", run.communicate(timeout=30)[1]
        started = time.monotonic()
        for run in (first, second):
            out, err = run.communicate("go\n", timeout=120)
            assert run.returncode == 0 and out.strip() == "done", err
        assert _violations(sim) == 0
        # The second run waited for the spacing of the first one's calls (1 request per 5 s).
        assert time.monotonic() - started >= scaled_period(TRADES.per, SCALE)

        # Control: a run without the shared file, right after, trips the simulator's limits at once.
        assert control.stdin is not None
        control.stdin.write("go\n")
        control.stdin.flush()
        deadline = time.monotonic() + 30
        while _violations(sim) == 0 and control.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _violations(sim) > 0
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
            run.communicate(timeout=10)

"""Screenshots of what a user sees in the Prefect UI after nightly and rebalance runs (not a test).

Needs a Prefect server with runs on it (e.g. after ``make demo`` with the server started on its
``.prefect-home``, or a deployment run against ``ibkr-tasks sim --demo``) and Chromium from the
distribution's packages (``apt-get install chromium``)::

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python bench/ui_screenshots.py /tmp/shots

It takes the runs list, the newest nightly run with its artifacts and a reconciliation event, the
newest rebalance runs (dry run and execution) with their tables, and the nightly deployment page,
each at 1600 x 1000, and prints the PNG paths. Look at them; nothing is asserted here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
    "--virtual-time-budget=15000",
]


def shoot(url: str, out: Path) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


async def pages(ui: str) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted: list[tuple[str, str]] = [("runs", f"{ui}/runs")]
    async with get_client() as client:
        from prefect.client.schemas.sorting import FlowRunSort

        newest = await client.read_flow_runs(limit=50, sort=FlowRunSort.START_TIME_DESC)
        runs = [r for r in newest if r.state and r.state.is_final()]
        nightly = next((r for r in runs if r.name.startswith("reconcile-")), None)
        if nightly is not None:
            wanted.append(("nightly-run", f"{ui}/runs/flow-run/{nightly.id}"))
            wanted.append(("nightly-artifacts", f"{ui}/runs/flow-run/{nightly.id}?tab=Artifacts"))
            wanted.append(("nightly-task-runs", f"{ui}/runs/flow-run/{nightly.id}?tab=Task+Runs"))
            if nightly.deployment_id:
                wanted.append(("nightly-deployment", f"{ui}/deployments/deployment/{nightly.deployment_id}"))
        for artifact in await client.read_latest_artifacts(limit=50):
            key = artifact.key or ""
            if key.startswith(("ibkr-reconciliation", "ibkr-breaks-", "rebalance-")):
                wanted.append((f"artifact-{key}", f"{ui}/artifacts/artifact/{artifact.latest_id}"))
        for mode in ("dry-run", "execute"):
            run = next((r for r in runs if r.name.startswith("rebalance-") and r.name.endswith(mode)), None)
            if run is not None:
                wanted.append((f"rebalance-{mode}", f"{ui}/runs/flow-run/{run.id}"))
        page = await client.read_events(
            filter=EventFilter(event=EventNameFilter(name=["ibkr.reconciliation.break"])), limit=1
        )
        events: list[Any] = list(page.events)
        if events:
            event = events[0]
            day = event.occurred.strftime("%Y-%m-%d")
            wanted.append(("event", f"{ui}/events/event/{day}/{event.id}"))
    return wanted


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "ui-screenshots")
    out_dir.mkdir(parents=True, exist_ok=True)
    api = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    ui = api.rstrip("/").removesuffix("/api")
    for name, url in asyncio.run(pages(ui)):
        print(shoot(url, out_dir / f"{name}.png"), url)


if __name__ == "__main__":
    main()

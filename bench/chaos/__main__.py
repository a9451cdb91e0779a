"""``make chaos``: the nightly reconciliation under kill -9, fault storms and fuzzed payloads.

1. **kill -9** (SQLite, then PostgreSQL): nightly runs, each in its own process against one simulator
   (its own process) and one ledger, killed with SIGKILL at a random moment of the run (seeded; the
   seed is printed); now and then the simulator's day moves on (new executions). Then a clean rerun:
   the ledger must equal the simulator's truth and no reconciliation_runs row may still be 'running'.
2. **fault storms** (bench/chaos/storms.py): each storm switched on, new activity generated under it,
   then nightly runs (a rerun when one fails, as a user would) until the ledger equals the truth;
   the client must provoke no 429.
3. **fuzz**: ``IBKR_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz_ingest.py``.

All nightly runs go through one ``prefect server start`` of their own (a temporary PREFECT_HOME).
Prints one table (tried / failed / lost / duplicated per scenario) and exits 1 if anything was lost,
duplicated, failed or did not match the truth.

Run: ``make chaos`` or ``.venv/bin/python -m bench.chaos [--seed N] [--kills 20] [--only storms]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.chaos.harness import (
    CHAOS_HEARTBEAT_SECONDS,
    ROOT,
    Driver,
    RunResult,
    _prefect_env,
    install_crash_automation,
    ledger_figures,
    paper_accounts,
    postgres_database,
    prefect_running_flow_runs,
    prefect_server,
    running_rows,
    sim_counts,
    temp_dir,
    wait_for_crashed,
    wait_out_penalty_box,
)
from bench.chaos.storms import STORMS, Storm
from ibkr_tasks.sim import Scenario
from ibkr_tasks.sim.scenario import Quirks
from ibkr_tasks.testing import SimulatorHandle, running_simulator

DAYS = 7  # every run asks for a week of executions: the simulator's days move on during the chaos
RUN_TIMEOUT = 180.0  # one nightly run of this size takes a few seconds; a hung one is a failure
FUZZ_FILE = "tests/test_fuzz_ingest.py"


def scenario(seed: int, **quirks: object) -> Scenario:
    """A small FA login with IBKR's limits on (a 5 s penalty box, so a violation does not stall the
    whole chaos run) and the late data that makes a nightly run stateful."""
    return Scenario(
        seed=seed,
        accounts=3,
        fa=True,
        positions_per_account=15,
        fills_per_account_per_day=10,
        history_days=2,
        quirks=Quirks(
            rate_limits=True, penalty_box_seconds=5, option_expiries=True, event_netting=True, **quirks
        ),
    )


@dataclass
class Row:
    scenario: str
    tried: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    responses_429: int = 0
    violations: int = 0
    running_rows: int | None = None
    note: str = ""
    strict_429: bool = False  # a 429 here counts against the run (the storms)

    @property
    def bad(self) -> bool:
        return bool(self.failed or self.lost or self.duplicated or (self.strict_429 and self.responses_429))


def log(msg: str) -> None:
    print(msg, flush=True)


class Chaos:
    def __init__(self, api_url: str, prefect_home: Path, seed: int, deadline: float) -> None:
        self.env = _prefect_env(prefect_home) | {
            "PREFECT_API_URL": api_url,
            "IBKR_ACCESS_TOKEN": "chaos-gateway",  # a local gateway takes any placeholder
            # Heartbeats, as the deployments send them: a killed run is then marked Crashed by the
            # automation, and the next run of its accounts closes its ledger rows as abandoned.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(CHAOS_HEARTBEAT_SECONDS),
        }
        self.api_url = api_url
        self.seed = seed
        self.deadline = deadline

    def driver(self, sim: SimulatorHandle, ledger_url: str) -> Driver:
        return Driver(self.env | {"IBKR_API_URL": sim.api_url}, ledger_url, DAYS)

    def run(
        self, sim: SimulatorHandle, ledger_url: str, at: Callable[[float], None] | None = None
    ) -> RunResult:
        d = self.driver(sim, ledger_url)
        if not d.wait_ready():
            return d.finish(10)
        if at is not None:
            at(time.monotonic())
        return d.finish(RUN_TIMEOUT)

    # --- kill -9 ---------------------------------------------------------------------------------

    def kill_series(self, name: str, ledger_url: str, kills: int) -> Row:
        row = Row(f"kill -9, {name}")
        rng = random.Random(f"{self.seed}-{name}")  # one stream per series: they run side by side
        sc = scenario(self.seed)
        notes: list[str] = []
        with running_simulator(sc) as sim:
            accounts = paper_accounts(sim)
            # A first night runs to its end: it measures how long a run takes (the kills then land
            # anywhere in that window, follow-up runs' length included) and gives later runs a ledger
            # to continue, so kills also land in the middle of the ledger's writes.
            first = self.run(sim, ledger_url)
            log(f"  [{name}] first night, not killed: {first.describe()}")
            if not first.completed:
                row.failed += 1
                notes.append(f"first night: {first.describe()}")
            window = max(first.seconds, 1.0)  # seconds from READY in which a kill lands
            attempts = 0
            while row.tried < kills and attempts < 3 * kills and time.monotonic() < self.deadline:
                attempts += 1
                if attempts % 4 == 0:
                    sim.advance(seconds=6 * 3600)  # a new part of the day: new executions, late data settles
                d = self.driver(sim, ledger_url)
                if not d.wait_ready():
                    result = d.finish(10)
                    row.failed += 1
                    notes.append(f"start failed: {result.describe()}")
                    continue
                delay = rng.uniform(0.0, window)
                if d.wait(delay):  # it finished before its kill came
                    result = d.finish(RUN_TIMEOUT)
                    window = 0.5 * window + 0.5 * max(result.seconds, 0.5)
                    if not result.completed:
                        row.failed += 1
                        notes.append(f"unkilled run: {result.describe()}")
                    log(
                        f"  [{name}] run {attempts}: not killed (done in {result.seconds:.2f} s, {result.state})"
                    )
                    continue
                result = d.kill()
                row.tried += 1
                log(
                    f"  [{name}] run {attempts}: kill -9 #{row.tried} at {result.seconds:.2f} s "
                    f"(reconciliation_runs rows 'running': {running_rows(ledger_url)})"
                )
            # The clean rerun: later, as the next night would be (out of the penalty box, trades spacing
            # kept, and the killed runs marked Crashed by the heartbeat automation, as in production).
            last_kill = datetime.now(UTC).isoformat()
            still = wait_for_crashed(self.api_url, last_kill)
            log(f"  [{name}] killed runs still RUNNING on the Prefect server before the rerun: {still}")
            if still:
                notes.append(f"{still} killed flow run(s) not marked Crashed in time")
            time.sleep(5.5)
            wait_out_penalty_box(sim)
            final = self.run(sim, ledger_url)
            log(f"  [{name}] clean rerun: {final.describe()}")
            figures = ledger_figures(ledger_url, sim, accounts)
            row.responses_429, row.violations, by_endpoint = sim_counts(sim)
        if row.violations:
            notes.append(f"{row.violations} limit violation(s) across the restarts: {by_endpoint}")
        if not final.completed:
            row.failed += 1
            notes.append(f"clean rerun: {final.describe()}")
        if not figures.truth_ok:
            row.failed += 1
            notes.append(f"ledger differs from the truth: {'; '.join(figures.problems[:3])}")
        row.lost, row.duplicated, row.running_rows = figures.lost, figures.duplicated, figures.running_rows
        if figures.running_rows:
            row.failed += 1
            notes.append(f"{figures.running_rows} reconciliation_runs row(s) still 'running'")
        if row.tried < kills:
            notes.append(f"only {row.tried} of {kills} kills landed in time")
            row.failed += 1
        row.note = " | ".join(notes)
        return row

    # --- fault storms ----------------------------------------------------------------------------

    def storms(self, ledger_url: str, storms: tuple[Storm, ...]) -> list[Row]:
        rows: list[Row] = []
        sc = scenario(self.seed + 1)
        baseline = sc.quirks.model_dump(mode="json")
        with running_simulator(sc) as sim:
            accounts = paper_accounts(sim)
            calm = self.run(sim, ledger_url)  # a first night without faults: the ledger's starting point
            log(f"  [storms] calm first night: {calm.describe()}")
            for storm in storms:
                if time.monotonic() > self.deadline:
                    rows.append(
                        Row(f"storm: {storm.name}", failed=1, note="not run: out of time", strict_429=True)
                    )
                    continue
                rows.append(self.storm(sim, ledger_url, accounts, storm, baseline))
        return rows

    def storm(
        self, sim: SimulatorHandle, ledger_url: str, accounts: list[str], storm: Storm, baseline: dict
    ) -> Row:
        row = Row(f"storm: {storm.name}", strict_429=True)
        notes: list[str] = []
        sim.faults(quirks=baseline)
        sim.advance(seconds=3 * 3600)  # out of the last storm's pacing windows, with new executions
        wait_out_penalty_box(sim)
        before_429, before_viol, before_by = sim_counts(sim)
        if storm.quirks:
            sim.faults(quirks=storm.quirks)
        sim.advance(seconds=3 * 3600)  # activity generated under the storm
        if storm.before or storm.account_fault:
            sim.faults(**(storm.before | ({"fail_accounts": accounts[:1]} if storm.account_fault else {})))
        figures = None
        for attempt in range(1, 4):

            def inject(started: float, first: bool = attempt == 1) -> None:
                if not first:
                    return
                for at, faults in storm.during:
                    time.sleep(max(0.0, started + at - time.monotonic()))
                    sim.faults(**faults)

            result = self.run(sim, ledger_url, inject)
            row.tried += 1
            figures = ledger_figures(ledger_url, sim, accounts)
            log(
                f"  [storm {storm.name}] run {attempt}: {result.describe()}; truth {'matches' if figures.truth_ok else 'differs'}"
            )
            if result.completed and figures.truth_ok:
                break
            if not result.completed and not storm.may_fail:
                row.failed += 1
                notes.append(f"run {attempt}: {result.describe()}")
            if storm.recover:
                sim.faults(**storm.recover)
        assert figures is not None
        after_429, after_viol, after_by = sim_counts(sim)
        row.responses_429, row.violations = after_429 - before_429, after_viol - before_viol
        by_endpoint = {k: n - before_by.get(k, 0) for k, n in after_by.items() if n - before_by.get(k, 0)}
        row.lost, row.duplicated = figures.lost, figures.duplicated
        if not (result.completed and figures.truth_ok):
            row.failed += 1
            notes.append(f"after {row.tried} run(s): {result.describe()}; {'; '.join(figures.problems[:3])}")
        if row.responses_429:
            notes.append(f"{row.responses_429} 429(s), {row.violations} limit violation(s): {by_endpoint}")
        sim.faults(quirks=baseline, fail_accounts=[], competing=False)
        row.note = " | ".join(notes)
        return row


# --- fuzz ---------------------------------------------------------------------------------------


class Fuzz:
    """``IBKR_FUZZ_EXAMPLES=N pytest tests/test_fuzz_ingest.py``, one process per database, started first
    and run alongside the rest (it needs no simulator and no Prefect server); :meth:`rows` waits for it."""

    DATABASES = ("sqlite", "postgresql")

    def __init__(self, examples: int, timeout: float) -> None:
        self.examples, self.timeout = examples, timeout
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.started = time.monotonic()
        if not (ROOT / FUZZ_FILE).exists():
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBKR_")}
        env["IBKR_FUZZ_EXAMPLES"] = str(examples)
        if "IBKR_TEST_PG_URL" in os.environ:
            env["IBKR_TEST_PG_URL"] = os.environ["IBKR_TEST_PG_URL"]
        for db in self.DATABASES:
            cmd = [sys.executable, "-m", "pytest", FUZZ_FILE, "-q", "-p", "no:cacheprovider", "-k", db]
            log(f"  [fuzz] started alongside: IBKR_FUZZ_EXAMPLES={examples} pytest {FUZZ_FILE} -k {db}")
            self.procs[db] = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )

    def rows(self) -> list[Row]:
        if not self.procs:
            row = Row("fuzz ingest (hypothesis)", tried=self.examples, failed=1)
            row.note = f"{FUZZ_FILE} does not exist in this tree: the fuzz test is not there to run"
            log(f"  [fuzz] {row.note}")
            return [row]
        rows = []
        for db, proc in self.procs.items():
            row = Row(f"fuzz ingest (hypothesis), {db}", tried=self.examples)
            rows.append(row)
            try:
                out, _ = proc.communicate(timeout=max(1.0, self.started + self.timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                row.failed = 1
                row.note = f"{db}: did not finish in {self.timeout:.0f} s"
                continue
            last = (out.strip().splitlines() or ["(no output)"])[-1]
            log(f"  [fuzz] {db}: {last} ({time.monotonic() - self.started:.0f} s)")
            if proc.returncode != 0 or " passed" not in last:
                row.failed = 1
                row.note = f"{db}: pytest exit {proc.returncode}: {last}"
                log(out[-4000:])
        return rows

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- the table ----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = f"{'scenario':<48} {'tried':>6} {'failed':>6} {'lost':>5} {'duplicated':>10} {'429s':>5} {'running':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        running = "-" if r.running_rows is None else str(r.running_rows)
        lines.append(
            f"{r.scenario:<48} {r.tried:>6} {r.failed:>6} {r.lost:>5} {r.duplicated:>10} "
            f"{r.responses_429:>5} {running:>7}"
        )
    storms = [r for r in rows if r.scenario.startswith("storm:")]
    if storms:
        lines.append("-" * len(head))
        lines.append(
            f"{f'storms total ({len(storms)} storms)':<48} {sum(r.tried for r in storms):>6} "
            f"{sum(r.failed for r in storms):>6} {sum(r.lost for r in storms):>5} "
            f"{sum(r.duplicated for r in storms):>10} {sum(r.responses_429 for r in storms):>5} {'-':>7}"
        )
    notes = [f"  {r.scenario}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random)")
    parser.add_argument("--kills", type=int, default=20, help="kill -9s per database")
    parser.add_argument("--fuzz-examples", type=int, default=10_000)
    parser.add_argument("--fuzz-timeout", type=float, default=1500.0, help="seconds, from the start")
    parser.add_argument("--budget", type=float, default=2400.0, help="seconds for the kill and storm parts")
    parser.add_argument(
        "--only",
        action="append",
        choices=["sqlite", "postgresql", "storms", "fuzz"],
        help="run only these parts",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    parts = set(args.only or ["sqlite", "postgresql", "storms", "fuzz"])
    log(
        f"chaos: seed {seed} (rerun with: python -m bench.chaos --seed {seed}); parts: {', '.join(sorted(parts))}"
    )
    started = time.monotonic()
    rows: list[Row] = []
    home = temp_dir("ibkr-chaos-")
    fuzz = Fuzz(args.fuzz_examples, args.fuzz_timeout) if "fuzz" in parts else None
    try:
        if parts & {"sqlite", "postgresql", "storms"}:
            with ExitStack() as stack:
                prefect_home = home / "prefect"
                prefect_home.mkdir()
                log("starting a Prefect server for the runs ...")
                api_url = stack.enter_context(prefect_server(prefect_home))
                install_crash_automation(api_url)
                chaos = Chaos(api_url, prefect_home, seed, started + args.budget)
                # The two kill series run side by side (each its own simulator and ledger).
                series = {}
                if "sqlite" in parts:
                    series["SQLite"] = f"sqlite:///{home / 'kill.db'}"
                if "postgresql" in parts:
                    series["PostgreSQL"] = stack.enter_context(postgres_database())
                if series:
                    log(f"kill -9 x {args.kills} on {' and '.join(series)} ...")
                    with ThreadPoolExecutor(len(series)) as pool:
                        futures = [
                            pool.submit(chaos.kill_series, n, u, args.kills) for n, u in series.items()
                        ]
                        rows += [f.result() for f in futures]
                    try:
                        stuck: int | str = prefect_running_flow_runs(api_url)
                    except httpx.HTTPError as exc:
                        stuck = f"unknown ({type(exc).__name__})"
                    log(f"Prefect flow runs still RUNNING after the kills: {stuck}")
                    prefect_note = f"Prefect flow runs left RUNNING on the server after all kills: {stuck}"
                    rows[-1].note = " | ".join(n for n in (rows[-1].note, prefect_note) if n)
                if "storms" in parts:
                    log(f"{len(STORMS)} fault storms on SQLite ...")
                    rows += chaos.storms(f"sqlite:///{home / 'storms.db'}", STORMS)
        if fuzz is not None:
            log("waiting for the fuzz test ...")
            rows += fuzz.rows()
    finally:
        if fuzz is not None:
            fuzz.stop()
        shutil.rmtree(home, ignore_errors=True)
    log(f"\nchaos: seed {seed}, {time.monotonic() - started:.0f} s\n")
    log(table(rows))
    bad = [r.scenario for r in rows if r.bad]
    log(
        f"\n{'FAILED: ' + ', '.join(bad) if bad else 'OK: nothing lost, nothing duplicated, every ledger equals the truth'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

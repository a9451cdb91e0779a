"""``ibkr-tasks setup``: prepare a Prefect server for this package's deployments, idempotently.

Against the server ``PREFECT_API_URL`` points at, it

1. registers the ``IBKRCredentials`` block type (so the UI can create credentials documents);
2. creates the global concurrency limits that pace IBKR requests (see ``ibkr_tasks.prefect_limits``)
   for the login of the ``IBKR_*`` environment and for every saved ``IBKRCredentials`` block;
3. creates, or updates in place, the automation that marks a flow run of this package ``Crashed``
   when its heartbeats stop: a worker killed with ``-9`` (or a machine that died) otherwise leaves
   the run ``Running`` in the UI for ever.

Running it again changes nothing that is already as wanted, and never makes a second automation.
Flow runs send heartbeats every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds; prefect.yaml sets it
to :data:`HEARTBEAT_SECONDS` for the deployments, and the automation waits
:data:`DEFAULT_CRASH_AFTER_SECONDS` before it acts. Prefect documents the
pattern at https://docs.prefect.io/v3/advanced/detect-zombie-flows.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ibkr_tasks.blocks import IBKRCredentials, aload_credentials
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.errors import ConfigurationError

CRASH_AUTOMATION_NAME = "ibkr-tasks: mark runs without heartbeats Crashed"
FLOW_NAMES = ("nightly-reconciliation", "flex-reconciliation", "rebalance", "market-data")
"""The flows the automation watches (by name); runs of other flows on the same server are left alone."""
HEARTBEAT_SECONDS = 60
"""``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` the deployments in prefect.yaml run with."""
DEFAULT_CRASH_AFTER_SECONDS = 600
"""Ten of our heartbeats, and over three of Prefect's default interval: a run started outside the
deployments (a script, ``make demo``) heartbeats every 180 s and must not be taken for dead."""
TERMINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")


def crash_automation(
    crash_after_seconds: int = DEFAULT_CRASH_AFTER_SECONDS,
    *,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    name: str = CRASH_AUTOMATION_NAME,
) -> Any:
    """The automation: after a heartbeat of one of our flow runs, expect another heartbeat or a
    terminal state within ``crash_after_seconds``; otherwise set the run ``Crashed``."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if crash_after_seconds <= heartbeat_seconds:
        raise ConfigurationError(
            f"crash-after must be longer than the heartbeat interval ({heartbeat_seconds} s), "
            f"or live runs would be marked Crashed; got {crash_after_seconds}"
        )
    return AutomationCore(
        name=name,
        description=(
            f"Marks a run of {', '.join(FLOW_NAMES)} Crashed when no heartbeat and no final state "
            f"arrived for {crash_after_seconds} s after it started running or sent a heartbeat (its process "
            "died, e.g. kill -9). "
            "Created by `ibkr-tasks setup`."
        ),
        enabled=True,
        trigger=EventTrigger(
            # After Running too, not only after a heartbeat: a process killed in its first second has
            # not sent one yet (the server emits the Running event itself, as it makes the transition).
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in TERMINAL_EVENTS)},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": list(FLOW_NAMES)}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,  # the state type's own name, "Crashed"
                force=False,  # Running -> Crashed is an allowed transition; a finished run stays finished
                state=StateType.CRASHED,
                message=f"no heartbeat for {crash_after_seconds} s: the flow run's process is gone",
            )
        ],
    )


def _same(existing: Any, wanted: Any) -> bool:
    return _comparable(existing) == _comparable(wanted)


def _comparable(automation: Any) -> dict[str, Any]:
    keys = {"description", "enabled", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"}
    data: dict[str, Any] = automation.model_dump(mode="json", include=keys)
    trigger = data.get("trigger") or {}
    # The trigger's event names are sets: their JSON lists follow each process's string hashing, so the
    # server's copy and ours can list the same events in another order.
    for name in ("after", "expect", "for_each"):
        if isinstance(trigger.get(name), list):
            trigger[name] = sorted(trigger[name])
    return data


async def ensure_crash_automation(client: Any, crash_after_seconds: int = DEFAULT_CRASH_AFTER_SECONDS) -> str:
    """Create the automation, or update it in place by name; returns what was done."""
    wanted = crash_automation(crash_after_seconds)
    existing = await client.read_automations_by_name(CRASH_AUTOMATION_NAME)
    if not existing:
        await client.create_automation(wanted)
        return "created"
    keep, *extra = existing
    for duplicate in extra:  # e.g. made by hand, or by two setups racing: one is enough
        await client.delete_automation(duplicate.id)
    if _same(keep, wanted) and not extra:
        return "unchanged"
    await client.update_automation(keep.id, wanted)
    return "updated"


@dataclass
class SetupReport:
    """What ``setup`` did, one line per object."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


async def _logins(client: Any, report: SetupReport) -> list[tuple[str, IBKRSettings]]:
    """The IBKR_* environment's login and every saved IBKRCredentials block's."""
    logins: list[tuple[str, IBKRSettings]] = [("IBKR_* environment", IBKRSettings())]
    documents = await client.read_block_documents_by_type(
        IBKRCredentials.get_block_type_slug(), include_secrets=False
    )
    for document in sorted(documents, key=lambda d: d.name or ""):
        if not document.name or document.is_anonymous:
            continue
        try:
            block = await aload_credentials(document.name)
            logins.append((f"block {document.name!r}", block.to_settings()))
        except Exception as exc:  # a block saved by an older version, say: report it, go on
            report.add(f"skipped block {document.name!r}: {type(exc).__name__}: {exc}")
    return logins


async def run_setup(crash_after_seconds: int = DEFAULT_CRASH_AFTER_SECONDS) -> SetupReport:
    """Register the block type, create the pacing limits and the crash-detection automation."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from ibkr_tasks.prefect_limits import create_limits

    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise ConfigurationError(
            "PREFECT_API_URL is not set: point it at the Prefect server to set up, "
            "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    crash_automation(crash_after_seconds)  # refuse a bad interval before touching the server
    report = SetupReport()
    report.add(f"Prefect server: {api_url}")
    async with get_client() as client:
        await IBKRCredentials.aregister_type_and_schema(client=client)
        report.add(f"block type {IBKRCredentials.get_block_type_slug()!r}: registered")

        seen: set[str] = set()
        for source, settings in await _logins(client, report):
            specs = await create_limits(settings)
            names = [s.name for s in specs if s.name not in seen]
            seen.update(names)
            if names:
                report.add(f"pacing limits for the login of the {source}: {', '.join(names)}")

        outcome = await ensure_crash_automation(client, crash_after_seconds)
        report.add(
            f"automation {CRASH_AUTOMATION_NAME!r}: {outcome} (Crashed after {crash_after_seconds} s "
            f"without heartbeats; runs need PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_SECONDS})"
        )
    return report


def main(argv: list[str]) -> int:
    """``ibkr-tasks setup [--crash-after SECONDS]``."""
    parser = argparse.ArgumentParser(
        prog="ibkr-tasks setup",
        description=(
            "Prepare the Prefect server at PREFECT_API_URL: register the IBKRCredentials block type, "
            "create the IBKR pacing limits (IBKR_* environment and every saved block), and create or "
            "update the automation that marks runs Crashed when their heartbeats stop. Idempotent."
        ),
    )
    parser.add_argument(
        "--crash-after",
        type=int,
        default=DEFAULT_CRASH_AFTER_SECONDS,
        metavar="SECONDS",
        help=f"seconds without a heartbeat before a run is marked Crashed (default {DEFAULT_CRASH_AFTER_SECONDS})",
    )
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(run_setup(args.crash_after))
    except ConfigurationError as exc:
        print(f"ibkr-tasks setup: {exc}")
        return 2
    for line in report.lines:
        print(line)
    return 0

"""``ibkr-tasks setup`` against a Prefect server: idempotent, and its automation really crashes silent runs."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import Posture
from prefect.states import Completed, Running

from ibkr_tasks.blocks import IBKRCredentials
from ibkr_tasks.cli import main as cli_main
from ibkr_tasks.client.ratelimit import RateLimiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.prefect_limits import limit_specs
from ibkr_tasks.setup import (
    CRASH_AUTOMATION_NAME,
    DEFAULT_CRASH_AFTER_SECONDS,
    FLOW_NAMES,
    crash_automation,
)

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


async def automations(name: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_automations_by_name(name)


async def limit_names_present(names: list[str]) -> set[str]:
    from prefect.exceptions import ObjectNotFound

    present = set()
    async with get_client() as client:
        for name in names:
            try:
                present.add((await client.read_global_concurrency_limit_by_name(name)).name)
            except ObjectNotFound:
                pass
    return present


def setup(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = cli_main(["setup", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_setup_twice_leaves_one_automation_the_block_type_and_the_limits(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IBKR_USERNAME", "setup-env-login")
    IBKRCredentials(api_url="https://gw.example:5000/v1/api", username="setup-block-login").save(
        "setup-test-login", overwrite=True
    )

    first = setup(capsys)
    second = setup(capsys)
    assert "registered" in first and f"{CRASH_AUTOMATION_NAME!r}: created" in first
    assert f"{CRASH_AUTOMATION_NAME!r}: unchanged" in second

    (automation,) = asyncio.run(automations(CRASH_AUTOMATION_NAME))
    trigger = automation.trigger
    assert automation.enabled
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}
    assert trigger.expect >= {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Crashed",
    }
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within == timedelta(seconds=DEFAULT_CRASH_AFTER_SECONDS)
    assert trigger.match_related.model_dump()["prefect.resource.name"] == list(FLOW_NAMES)
    (action,) = automation.actions
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED

    async def block_type_present() -> bool:
        async with get_client() as client:
            return (await client.read_block_type_by_slug("ibkr-credentials")) is not None

    assert asyncio.run(block_type_present())

    for username in ("setup-env-login", "setup-block-login"):
        settings = IBKRSettings(
            username=username,
            api_url="https://gw.example:5000/v1/api"
            if username == "setup-block-login"
            else IBKRSettings().api_url,
        )
        names = [s.name for s in limit_specs(RateLimiter.for_settings(settings))]
        assert names and asyncio.run(limit_names_present(names)) == set(names), username
        assert all(n in first for n in names)

    # a changed interval updates the one automation in place; a hand-made duplicate is removed
    async def duplicate() -> None:
        async with get_client() as client:
            await client.create_automation(crash_automation(600))

    asyncio.run(duplicate())
    assert f"{CRASH_AUTOMATION_NAME!r}: updated" in setup(capsys, "--crash-after", "300")
    (automation,) = asyncio.run(automations(CRASH_AUTOMATION_NAME))
    assert automation.trigger.within == timedelta(seconds=300)
    assert f"{CRASH_AUTOMATION_NAME!r}: updated" in setup(capsys)
    (automation,) = asyncio.run(automations(CRASH_AUTOMATION_NAME))
    assert automation.trigger.within == timedelta(seconds=DEFAULT_CRASH_AFTER_SECONDS)


def test_setup_refuses_a_crash_window_shorter_than_the_heartbeat(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["setup", "--crash-after", "30"]) == 2
    assert "longer than the heartbeat interval" in capsys.readouterr().out


def test_the_servers_copy_listing_the_events_in_another_order_is_unchanged() -> None:
    """The trigger's event names are sets; the server lists them in its own hashing order. The same
    automation read back in any order is unchanged, a different window is not."""
    from prefect.events.schemas.automations import AutomationCore

    from ibkr_tasks.setup import _same

    wanted = crash_automation()
    data = wanted.model_dump(mode="json")
    for events in (sorted(data["trigger"]["expect"]), sorted(data["trigger"]["expect"], reverse=True)):
        trigger = {
            **data["trigger"],
            "expect": events,
            "after": sorted(data["trigger"]["after"], reverse=True),
        }
        assert _same(AutomationCore.model_validate({**data, "trigger": trigger}), wanted)
    assert not _same(crash_automation(300), wanted)


@pytest.mark.slow  # ~15 s: the server evaluates proactive triggers every 5 s
async def test_the_automation_crashes_a_silent_run_and_spares_a_finished_one() -> None:
    """The automation's rule, at test scale (a 10 s window, the shortest Prefect accepts), on the server's own triggers."""
    from prefect.events.clients import get_events_client
    from prefect.events.schemas.events import Event

    name = "ibkr-tasks test: crash runs without heartbeats"
    async with get_client() as client:
        automation_id = await client.create_automation(crash_automation(10, heartbeat_seconds=5, name=name))
        try:
            flow_id = await client.create_flow_from_name("nightly-reconciliation")
            other_id = await client.create_flow_from_name("someone-elses-flow")

            async def running(flow: UUID) -> UUID:
                """A flow run in state Running, as a worker's process would leave it when killed."""
                created = await client.request(
                    "POST",
                    "/flow_runs/",
                    json={"flow_id": str(flow), "state": {"type": "RUNNING", "name": "Running"}},
                )
                return UUID(created.json()["id"])

            silent, finished, foreign = (
                await running(flow_id),
                await running(flow_id),
                await running(other_id),
            )

            def heartbeat(run_id: UUID, flow: UUID, flow_name: str) -> Event:
                return Event(
                    event="prefect.flow-run.heartbeat",
                    resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
                    related=[
                        {
                            "prefect.resource.id": f"prefect.flow.{flow}",
                            "prefect.resource.role": "flow",
                            "prefect.resource.name": flow_name,
                        }
                    ],
                )

            async with get_events_client() as events:
                for run_id, flow, flow_name in (
                    (silent, flow_id, "nightly-reconciliation"),
                    (finished, flow_id, "nightly-reconciliation"),
                    (foreign, other_id, "someone-elses-flow"),
                ):
                    await events.emit(heartbeat(run_id, flow, flow_name))
            await client.set_flow_run_state(finished, Completed(), force=True)
            # killed in its first second: it became Running and never sent a heartbeat
            created = await client.request(
                "POST", "/flow_runs/", json={"flow_id": str(flow_id), "state": {"type": "PENDING"}}
            )
            never_beat = UUID(created.json()["id"])
            await client.set_flow_run_state(never_beat, Running(), force=True)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                crashed = [(await client.read_flow_run(r)).state for r in (silent, never_beat)]
                if all(s is not None and s.type == StateType.CRASHED for s in crashed):
                    break
                await asyncio.sleep(0.5)
            states = {
                key: (await client.read_flow_run(run)).state
                for key, run in (
                    ("silent", silent),
                    ("never_beat", never_beat),
                    ("finished", finished),
                    ("foreign", foreign),
                )
            }
        finally:
            await client.delete_automation(automation_id)
    assert states["silent"].type == StateType.CRASHED
    assert states["never_beat"].type == StateType.CRASHED
    assert "no heartbeat" in (states["silent"].message or "")
    assert states["finished"].type == StateType.COMPLETED
    assert states["foreign"].type == StateType.RUNNING  # another project's flow is not ours to crash


def test_every_deployment_sends_heartbeats_the_automation_watches() -> None:
    """prefect.yaml's deployments run with the heartbeat interval setup's automation assumes, and
    the automation watches each deployment's flow by name."""
    import importlib
    from pathlib import Path

    import yaml

    from ibkr_tasks.setup import HEARTBEAT_SECONDS

    project = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    assert project["deployments"]
    for deployment in project["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) == HEARTBEAT_SECONDS, deployment["name"]
        path, attribute = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)
        assert flow.name in FLOW_NAMES, deployment["name"]


def test_the_default_window_spares_runs_on_prefects_default_heartbeat() -> None:
    """Runs started outside the deployments heartbeat at Prefect's default interval: the automation
    must wait several of those before it calls a run dead."""
    from prefect.settings.models.flows import FlowsSettings

    from ibkr_tasks.setup import HEARTBEAT_SECONDS

    prefect_default = FlowsSettings.model_fields["heartbeat_frequency"].default
    assert DEFAULT_CRASH_AFTER_SECONDS >= 3 * prefect_default
    assert DEFAULT_CRASH_AFTER_SECONDS >= 3 * HEARTBEAT_SECONDS

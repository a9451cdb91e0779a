"""The rebalance flow's Prefect tasks (ibkr_tasks.tasks.rebalance): options a user relies on."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from ibkr_tasks.errors import NotAuthenticated, ServerError
from ibkr_tasks.tasks.ibkr import retry_transient
from ibkr_tasks.tasks.rebalance import gather_rebalance_inputs, record_rebalance_plan


async def test_input_reads_retry_only_on_transient_errors_with_the_shared_predicate() -> None:
    retry = gather_rebalance_inputs.retry_condition_fn
    assert retry is retry_transient  # the same rule as every other read, not a copy
    assert gather_rebalance_inputs.retries == 2
    assert await retry(gather_rebalance_inputs, None, Failed(data=ServerError("503", status_code=503)))
    assert not await retry(
        gather_rebalance_inputs, None, Failed(data=NotAuthenticated("401", status_code=401))
    )
    assert not await retry(gather_rebalance_inputs, None, Completed(data=1))


def test_tasks_are_named_for_the_run_list_and_never_cached() -> None:
    assert gather_rebalance_inputs.name == "gather-rebalance-inputs"
    assert gather_rebalance_inputs.task_run_name == "gather-rebalance-inputs-{params.account_id}"
    assert record_rebalance_plan.name == "record-plan"
    for task in (gather_rebalance_inputs, record_rebalance_plan):
        assert task.cache_policy is NO_CACHE  # live clients and ledgers as inputs: never cached

"""Pacing on Prefect GCLs: names Prefect accepts, even spacing (capacity 1), every limit covered."""

import pytest

from ibkr_tasks.client.ratelimit import RateLimiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.prefect_limits import LimitSpec, gcl_name, limit_specs

# IBKR's own limits: the suite's scaled-down pacing (IBKR_PACING_SCALE) is off in this module.
pytestmark = pytest.mark.usefixtures("ibkr_pacing")


def decay(spec: LimitSpec) -> float:
    assert spec.slot_decay_per_second is not None, f"{spec.name} is a rate limit: it needs a decay"
    return spec.slot_decay_per_second


def test_gcl_names_are_lowercase_dashes() -> None:
    assert gcl_name("ibkr:api.ibkr.com:Trader1:live_orders") == "ibkr-api-ibkr-com-trader1-live-orders"


def test_specs_space_requests_evenly_within_ibkrs_limits() -> None:
    limiter = RateLimiter.for_settings(
        IBKRSettings(api_url="https://localhost:5000/v1/api", username="trader1")
    )
    specs = {s.name.rsplit("trader1-", 1)[-1]: s for s in limit_specs(limiter)}
    # capacity 1: no burst; decay below the allowed rate (10/s global through a gateway, trades 1 per 5 s)
    assert specs["global"].limit == 1 and 9.0 < decay(specs["global"]) < 10.0
    assert specs["trades"].limit == 1 and decay(specs["trades"]) < 0.2
    assert decay(specs["snapshot"]) < 10.0
    assert specs["history"].limit == 5 and specs["history"].slot_decay_per_second is None
    assert (
        "prefect gcl create" in specs["trades"].cli() and "--slot-decay-per-second" in specs["trades"].cli()
    )


def test_hosted_api_gets_the_50_per_second_budget() -> None:
    limiter = RateLimiter.for_settings(IBKRSettings(api_url="https://api.ibkr.com/v1/api", username="t"))
    glob = next(s for s in limit_specs(limiter) if s.name.endswith("-global"))
    assert 45 < decay(glob) < 50

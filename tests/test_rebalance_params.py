"""The rebalance flow's parameters as Prefect's custom-run form sees them (no Prefect server needed)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from flows.rebalance import rebalance
from ibkr_tasks.rebalance import RebalanceParams
from ibkr_tasks.rebalance.params import as_decimal

NUMBERS = ("limit_offset_bps", "max_order_notional", "max_total_notional", "min_trade_value")


@pytest.fixture(scope="module")
def properties() -> dict[str, Any]:
    schema = parameter_schema(rebalance.fn).model_dump()
    assert schema == rebalance.parameters.model_dump()  # what a deployment registers
    return dict(schema["properties"])


def _types(prop: dict[str, Any]) -> list[str]:
    return [p.get("type") for p in prop.get("anyOf", [prop])]


def test_targets_is_an_object_whose_default_is_an_empty_mapping(properties: dict[str, Any]) -> None:
    targets = properties["targets"]
    assert targets["type"] == "object" and "anyOf" not in targets
    assert targets["default"] == {}  # the form shows {} (not "None") and sends an object


def test_notional_limits_are_numbers_not_a_number_or_string_toggle(properties: dict[str, Any]) -> None:
    for name in NUMBERS:
        types = _types(properties[name])
        assert "string" not in types, (name, properties[name])
        assert types[0] == "number", (name, properties[name])
    assert _types(properties["max_order_notional"]) == ["number", "null"]  # optional: no limit
    assert properties["limit_offset_bps"]["default"] == 10
    assert properties["min_trade_value"]["default"] == 0
    assert properties["max_order_notional"]["anyOf"][0]["minimum"] == 0


def test_allow_prompts_is_a_list_of_strings_defaulting_to_empty(properties: dict[str, Any]) -> None:
    allow = properties["allow_prompts"]
    assert allow["type"] == "array" and allow["items"] == {"type": "string"} and allow["default"] == []


def test_form_numbers_become_the_decimals_they_were_written_as() -> None:
    assert as_decimal(0.1) == Decimal("0.1") and str(as_decimal(0.1)) == "0.1"
    assert str(as_decimal(50000.0)) == "50000" and as_decimal(None) is None
    params = RebalanceParams(
        account_id="DU1234567",
        targets={"265598": 0.3},
        max_order_notional=as_decimal(1234.56),
        limit_offset_bps=as_decimal(12.5),
    )
    assert params.max_order_notional == Decimal("1234.56") and params.limit_offset_bps == Decimal("12.5")


def test_allow_prompts_must_be_prompt_ids() -> None:
    params = RebalanceParams(account_id="DU1234567", targets={"1": 0.1}, allow_prompts=["o451", "o451", "p6"])
    assert params.allow_prompts == ("o451", "p6")
    with pytest.raises(ValueError, match="not a prompt message id"):
        RebalanceParams(account_id="DU1234567", targets={"1": 0.1}, allow_prompts=["all"])

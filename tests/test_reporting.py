"""Reconciliation reports: artifact keys Prefect accepts, break reports users read, event payloads."""

from decimal import Decimal

import pytest

from ibkr_tasks.reporting import (
    AccountOutcome,
    CommissionBreak,
    PositionBreak,
    account_resource,
    artifact_key,
    break_report,
    event_payload,
    summary_table,
)


@pytest.mark.parametrize(
    ("parts", "key"),
    [(("ibkr-breaks", "DUO873728"), "ibkr-breaks-duo873728"), (("Fills_U123", "x y"), "fills-u123-x-y")],
)
def test_artifact_keys_follow_prefects_rule(parts: tuple[str, ...], key: str) -> None:
    from prefect.types.names import ArtifactKey  # the validator Prefect applies client-side
    from pydantic import TypeAdapter

    assert artifact_key(*parts) == key
    assert TypeAdapter(ArtifactKey).validate_python(key) == key


def _outcome() -> AccountOutcome:
    return AccountOutcome(
        account_id="DU111",
        status="breaks",
        fills_new=3,
        position_breaks=[
            PositionBreak(conid=265598, symbol="AAPL", expected=Decimal("10"), actual=Decimal("12"))
        ],
        commission_breaks=[
            CommissionBreak(
                execution_id="0000e0d5.6576fd38.01.01",
                old=Decimal("1.00"),
                new=Decimal("1.25"),
                currency="USD",
            )
        ],
    )


def test_break_report_shows_positions_and_commission_deltas() -> None:
    text = break_report(_outcome(), "run-1")
    assert "| 265598 | AAPL | 10 | 12 | 2 |" in text
    assert "| 0000e0d5.6576fd38.01.01 | 1 | 1.25 | 0.25 | USD |" in text
    assert "No breaks" not in text


def test_break_report_says_so_when_clean() -> None:
    assert "No breaks" in break_report(AccountOutcome(account_id="DU111", status="completed"), "r")


def test_event_payload_is_json_safe_and_names_the_account() -> None:
    import json

    payload = event_payload(_outcome(), "run-1")
    assert json.loads(json.dumps(payload))["position_breaks"][0]["delta"] == "2"
    assert payload["breaks"] == 2
    assert account_resource("DU111")["prefect.resource.id"] == "ibkr.account.DU111"


def test_summary_table_has_one_row_per_account() -> None:
    rows = summary_table([_outcome(), AccountOutcome(account_id="DU222", status="failed", error="boom")])
    assert [r["account"] for r in rows] == ["DU111", "DU222"]
    assert rows[0]["breaks"] == 2 and rows[1]["error"] == "boom"

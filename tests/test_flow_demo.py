"""``make demo`` says why it stopped when a nightly run fails, and exits non-zero."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect import flow

from ibkr_tasks.errors import ConfigurationError

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]


@flow(name="nightly-reconciliation-broken")
async def broken_nightly(days: int, ledger_url: str) -> None:
    raise ConfigurationError("IBKR_API_URL must be an http(s) URL")


def test_a_failed_nightly_run_stops_the_demo_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flows.demo as demo
    import ibkr_tasks.testing

    @contextmanager
    def no_simulator(scenario: Any) -> Iterator[Any]:
        yield SimpleNamespace(api_url="http://127.0.0.1:9/v1/api", base_url="http://127.0.0.1:9")

    async def nightly(days: int, ledger_url: str) -> Any:
        return await broken_nightly(days=days, ledger_url=ledger_url, return_state=True)

    monkeypatch.setattr(ibkr_tasks.testing, "running_simulator", no_simulator)
    monkeypatch.setattr(demo, "_nightly", nightly)
    monkeypatch.setattr(demo, "LEDGER_PATH", tmp_path / "demo_ledger.db")
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", "demo-gateway")
    # demo.main() sets these for its process; registered here so that they are gone after the test
    # (a later test of the same worker read IBKR_API_URL=http://127.0.0.1:9/v1/api).
    for name in ("IBKR_API_URL", "IBKR_FLEX_URL", "IBKR_FLEX_TOKEN", "IBKR_FLEX_QUERY_ID"):
        monkeypatch.setenv(name, "unset-by-test")

    assert demo.main() == 1
    err = capsys.readouterr().err
    assert "demo failed: nightly run 1 ended Failed" in err
    assert "IBKR_API_URL must be an http(s) URL" in err
    assert "TypeError" not in err

"""The nightly reconciliation in OAuth 2.0 mode, end to end through Prefect, against the simulator.

The simulator runs as api.ibkr.com does with OAuth 2.0: it verifies the client assertion with the
registered public key, opens SSO sessions and refuses any API request whose bearer expired. Bearers
live a few seconds here, so the run crosses several renewals; none may cost a failed request, and the
ledger must equal the simulator's truth.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flows.nightly_reconciliation import nightly_reconciliation
from ibkr_tasks.sim import Scenario
from ibkr_tasks.sim.scenario import OAuth2Scenario, Quirks
from ibkr_tasks.testing import running_simulator
from ibkr_tasks.verify import compare_ledger_with_truth

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.prefect]

CLIENT_ID = "FLOWCLIENT"
KEY_ID = "main"
USERNAME = "flowuser1"
# Bearers live 8 s and are renewed 2 s before they expire: a new SSO session every ~6 s, while the run
# talks to the API for ~10 s (30 accounts at IBKR's 10 requests per second).
BEARER_SECONDS = 8


def test_nightly_run_in_oauth2_mode_crosses_bearer_renewals_without_a_failed_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    scenario = Scenario(
        seed=21,
        accounts=30,
        # An FA login: one trades request for all 30. On a multi-account login the 30 per-account trades
        # requests queue 5 s apart, longer than the test's 8 s bearers (IBKR's last hours).
        fa=True,
        positions_per_account=120,
        fills_per_account_per_day=4,
        history_days=2,
        quirks=Quirks(rate_limits=True, penalty_box_seconds=30, late_commissions=0.0),
        oauth2=OAuth2Scenario(
            client_id=CLIENT_ID,
            key_id=KEY_ID,
            public_key_pem=public_pem,
            credential=USERNAME,
            bearer_seconds=BEARER_SECONDS,
        ),
    )
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_simulator(scenario) as sim:
        env = {
            "IBKR_AUTH_MODE": "oauth2",
            "IBKR_API_URL": sim.api_url,
            "IBKR_OAUTH2_CLIENT_ID": CLIENT_ID,
            "IBKR_OAUTH2_KEY_ID": KEY_ID,
            "IBKR_OAUTH2_PRIVATE_KEY": private_pem,
            "IBKR_OAUTH2_CREDENTIAL": USERNAME,
            "IBKR_OAUTH2_TOKEN_URL": f"{sim.base_url}/oauth2/api/v1/token",
            "IBKR_OAUTH2_SSO_URL": f"{sim.base_url}/gw/api/v1/sso-sessions",
            "IBKR_OAUTH2_IP_ECHO_URL": f"{sim.base_url}/sim/ip",  # no IBKR_OAUTH2_IP: discovered
            "IBKR_REFRESH_MARGIN": "2",
            "IBKR_RATE_LIMIT_BACKEND": "local",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("IBKR_ACCESS_TOKEN", raising=False)
        monkeypatch.delenv("IBKR_OAUTH2_IP", raising=False)
        state = asyncio.run(nightly_reconciliation(return_state=True, days=2, ledger_url=ledger_url))
        summary: dict[str, Any] = state.result(raise_on_failure=False)
        stats = sim.stats()
        report = compare_ledger_with_truth(ledger_url, sim)

    assert state.is_completed(), state.message
    assert sum(int(a["fills_new"]) for a in summary["accounts"]) > 0
    oauth = stats["oauth2"]
    assert oauth["renewals"] >= 1, oauth  # the run outlived its first bearer
    # Every SSO session opened its brokerage session as part of the renewal ...
    assert stats["requests"]["POST /iserver/auth/ssodh/init"] == oauth["sso_sessions"]
    # ... so no request failed: no 401 for an expired bearer, no "no bridge", no 429, no refusal.
    assert stats["statuses"] == {"200": stats["requests_total"]}, stats["statuses"]
    assert oauth["refused"] == {}
    assert oauth["tokens_issued"] == oauth["sso_sessions"]
    assert report.ok, report.summary()
    assert len(report.accounts) == scenario.accounts

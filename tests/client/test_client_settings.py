"""IBKRSettings: environment variables, paper vs live from the account id, TLS options, no secrets in reprs."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ibkr_tasks.client.settings import DEFAULT_API_URL, IBKRSettings
from ibkr_tasks.errors import ConfigurationError

TOKEN = "env-token-5f2c9a71"


def test_reads_ibkr_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("IBKR_ACCOUNT_ID", "duo873728")
    monkeypatch.setenv("IBKR_API_URL", "https://localhost:5000/v1/api/")
    monkeypatch.setenv("IBKR_TIMEOUT", "12.5")
    settings = IBKRSettings()
    assert settings.access_token is not None and settings.access_token.get_secret_value() == TOKEN
    assert settings.account_id == "DUO873728"
    assert settings.api_url == "https://localhost:5000/v1/api"
    assert settings.timeout == 12.5
    assert settings.is_ibkr_hosted is False


@pytest.mark.parametrize(
    ("account", "paper"),
    [("DU1234567", True), ("DUO873728", True), ("DUP656969", True), ("U1234567", False), ("F7654321", False)],
)
def test_paper_or_live_comes_from_the_account_id(account: str, paper: bool) -> None:
    assert IBKRSettings(account_id=account).is_paper is paper


def test_no_account_is_not_paper() -> None:
    assert IBKRSettings().is_paper is False


def test_paper_account_does_not_change_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_PAPER", "true")  # not a setting: must not move requests anywhere
    paper = IBKRSettings(account_id="DU1234567")
    live = IBKRSettings(account_id="U1234567")
    assert paper.api_url == live.api_url == DEFAULT_API_URL


def test_tls_is_verified_by_default() -> None:
    assert IBKRSettings().tls_verify() is True


def test_ca_bundle_gives_an_ssl_context(tmp_path: Path) -> None:
    import certifi

    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    verify = IBKRSettings(ca_bundle=bundle).tls_verify()
    assert isinstance(verify, ssl.SSLContext)
    assert verify.verify_mode == ssl.CERT_REQUIRED


def test_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="IBKR_CA_BUNDLE"):
        IBKRSettings(ca_bundle=tmp_path / "nope.pem")


def test_tls_opt_out_turns_verification_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_VERIFY_TLS", "false")
    assert IBKRSettings().tls_verify() is False  # the warning is the transport's (test_tls_warning.py)


def test_repr_and_errors_never_show_secrets() -> None:
    settings = IBKRSettings(
        access_token=TOKEN, oauth2_private_key="-----BEGIN PRIVATE KEY-----abc", sidecar_token=TOKEN
    )
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert "BEGIN PRIVATE KEY" not in repr(settings)
    assert TOKEN not in repr(settings.model_dump())
    with pytest.raises(ConfigurationError) as err:
        IBKRSettings(access_token=TOKEN, account_id="not an account")
    assert TOKEN not in str(err.value)
    assert "account_id" in str(err.value)


def test_invalid_settings_raise_configuration_error_naming_the_variables() -> None:
    with pytest.raises(ConfigurationError, match="IBKR_OAUTH2_CLIENT_ID"):
        IBKRSettings(auth_mode="oauth2", access_token=TOKEN)
    with pytest.raises(ConfigurationError, match="IBKR_SIDECAR_URL"):
        IBKRSettings(auth_mode="sidecar")
    with pytest.raises(ConfigurationError, match="IBKR_API_URL"):
        IBKRSettings(api_url="localhost:5000")


def test_hosted_hosts_are_recognised() -> None:
    assert IBKRSettings(api_url="https://api.ibkr.com/v1/api").is_ibkr_hosted
    assert IBKRSettings(api_url="https://5.api.ibkr.com/v1/api").is_ibkr_hosted
    assert not IBKRSettings(api_url="https://localhost:5000/v1/api").is_ibkr_hosted
    assert not IBKRSettings(api_url="http://sim/v1/api").is_ibkr_hosted


def test_trades_scope_from_the_environment_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from ibkr_tasks.client.api import IBKRClient

    assert IBKRSettings().trades_scope == "auto"
    monkeypatch.setenv("IBKR_TRADES_SCOPE", "account")
    client = IBKRClient.from_settings(IBKRSettings(access_token="placeholder-token-0001"))
    assert client.trades_scope == "account"
    monkeypatch.setenv("IBKR_TRADES_SCOPE", "everything")
    with pytest.raises(ConfigurationError, match="trades_scope"):
        IBKRSettings()

"""The credentials block: secrets stay masked, settings come out right, env is the fallback."""

import pytest

from ibkr_tasks.blocks import IBKRCredentials, resolve_settings

TOKEN = "tok-5ecret-bearer-value"


def test_secrets_are_masked_in_repr_and_dump() -> None:
    block = IBKRCredentials(
        account_id="DUO873728", access_token=TOKEN, api_url="https://localhost:5000/v1/api"
    )
    assert TOKEN not in repr(block)
    assert TOKEN not in str(block.model_dump())
    assert TOKEN not in block.model_dump_json()


def test_block_to_settings() -> None:
    block = IBKRCredentials(
        account_id="duo873728", access_token=TOKEN, api_url="https://localhost:5000/v1/api", verify_tls=False
    )
    settings = block.to_settings()
    assert settings.account_id == "DUO873728" and settings.is_paper
    assert settings.access_token is not None and settings.access_token.get_secret_value() == TOKEN
    assert settings.verify_tls is False
    assert settings.api_url == "https://localhost:5000/v1/api"


def test_environment_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ACCOUNT_ID", "U1234567")
    monkeypatch.setenv("IBKR_ACCESS_TOKEN", TOKEN)
    settings = resolve_settings(None)
    assert settings.account_id == "U1234567" and not settings.is_paper


def test_block_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ACCOUNT_ID", "U1234567")
    settings = resolve_settings(IBKRCredentials(account_id="DU5822420", access_token="x"))
    assert settings.account_id == "DU5822420"

"""The credentials block: secrets stay masked, settings come out right, env is the fallback."""

from typing import Any

import pytest

from ibkr_tasks.blocks import IBKRCredentials, resolve_settings

TOKEN = "tok-5ecret-bearer-value"
PEM_MARKER = "-----BEGIN PRIVATE KEY-----\ns3cret-key-body\n-----END PRIVATE KEY-----\n"


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


def _properties() -> dict[str, dict[str, Any]]:
    properties: dict[str, dict[str, Any]] = IBKRCredentials.model_json_schema()["properties"]
    return properties


def test_every_field_has_a_written_title_and_a_one_line_description() -> None:
    properties = _properties()
    titles = {name: prop["title"] for name, prop in properties.items()}
    assert titles["api_url"] == "API URL"
    assert titles["verify_tls"] == "Verify TLS certificate"
    assert titles["oauth2_ip"] == "OAuth 2.0 client IP"
    assert titles["oauth2_private_key"] == "OAuth 2.0 private key (PEM)"
    for name, prop in properties.items():
        # pydantic's generated label is the field name title-cased ("Api Url", "Oauth2 Ip")
        assert prop["title"] != name.replace("_", " ").title(), name
        description = prop.get("description", "")
        assert description and "\n" not in description, name


def test_private_key_is_a_multi_line_secret_field() -> None:
    schema = IBKRCredentials.model_json_schema()
    key = schema["properties"]["oauth2_private_key"]
    text = next(v for v in key["anyOf"] if v.get("type") == "string")
    # Prefect's UI shows format "password" as a one-line input, which drops a pasted PEM's line
    # breaks; without it the field is a text area. It stays write-only and a secret field of the block.
    assert "format" not in text and text["writeOnly"] is True
    assert "oauth2_private_key" in schema["secret_fields"]
    # the one-line secrets keep their masked input
    token = next(v for v in schema["properties"]["access_token"]["anyOf"] if v.get("type") == "string")
    assert token["format"] == "password"
    assert set(schema["secret_fields"]) == {
        "access_token",
        "oauth2_private_key",
        "sidecar_token",
        "flex_token",
    }


def test_private_key_never_shows() -> None:
    block = IBKRCredentials(auth_mode="oauth2", oauth2_private_key=PEM_MARKER)
    assert "s3cret-key-body" not in repr(block)
    assert "s3cret-key-body" not in block.model_dump_json()


def test_code_example_names_no_saved_block() -> None:
    example = IBKRCredentials.get_code_example()
    assert example is not None
    assert 'IBKRCredentials.load("BLOCK_NAME")' in example
    assert "du1234567" not in example.lower()
    assert example.count("```") == 2  # one fenced block the UI renders as code


def test_a_pem_key_pasted_without_line_breaks_still_loads() -> None:
    """A key pasted into a one-line input (an older UI, a form that strips newlines) still works."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ibkr_tasks.client.auth import _load_private_key

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for pasted in (pem, pem.replace("\n", ""), pem.replace("\n", " ")):
        block = IBKRCredentials(
            auth_mode="oauth2",
            api_url="https://api.ibkr.com/v1/api",
            oauth2_client_id="client",
            oauth2_key_id="main",
            oauth2_credential="user1",
            oauth2_ip="203.0.113.7",
            oauth2_private_key=pasted,
        )
        loaded = _load_private_key(block.to_settings().oauth2_private_key, None)
        assert loaded.private_numbers() == key.private_numbers()

"""Prefect blocks: where a deployment keeps its IBKR connection settings and secrets.

Register the block type once per Prefect server (``ibkr-tasks setup`` does it, with the rest)::

    ibkr-tasks setup        # or: prefect block register -m ibkr_tasks.blocks

then create a document in the UI (Blocks -> IBKR Credentials) or in code::

    IBKRCredentials(account_id="DU1234567", api_url="https://localhost:5000/v1/api",
                    access_token="gateway", verify_tls=False).save("du1234567-paper")

Flows take the block's *name* as a parameter, never a token, so nothing secret is stored in a flow
run's parameters. Without a block, tasks fall back to the ``IBKR_*`` environment variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from ibkr_tasks.client.settings import DEFAULT_API_URL, FlexSettings, IBKRSettings
from ibkr_tasks.errors import ConfigurationError


def _multiline_secret(schema: dict[str, Any]) -> None:
    """JSON-schema hook: a secret the UI edits in a multi-line text area (a PEM key), still secret.

    Prefect's UI turns ``format: "password"`` (what pydantic gives a ``SecretStr``) into a one-line
    password input, and a browser drops the line breaks of text pasted into one, which breaks a PEM
    key. Without that format the UI shows a text area. The field stays a ``SecretStr``: Prefect lists it
    in the block's ``secret_fields``, stores it encrypted and never sends it back to the UI or the API
    unmasked; ``writeOnly`` stays set.
    """
    for variant in [schema, *schema.get("anyOf", [])]:
        if variant.get("format") == "password":
            del variant["format"]
            variant["writeOnly"] = True


class IBKRCredentials(Block):
    """Connection settings and secrets for the IBKR Client Portal Web API.

    Works for a local Client Portal Gateway (any non-empty placeholder token, usually with
    ``verify_tls=False`` for its self-signed certificate), for api.ibkr.com with an OAuth 2.0
    private_key_jwt client, and for a sidecar that mints bearers (OAuth 1.0a).

    Example:
        Flows take the block's name (`credentials="BLOCK_NAME"`). In your own code:
        ```python
        from ibkr_tasks.blocks import IBKRCredentials

        credentials = IBKRCredentials.load("BLOCK_NAME")  # async code: await IBKRCredentials.aload(...)
        settings = credentials.to_settings()
        ```
    """

    _block_type_name = "IBKR Credentials"
    _block_type_slug = "ibkr-credentials"
    _description = (
        "Connection settings and secrets for the IBKR Client Portal Web API (gateway, OAuth 2.0, sidecar)."
    )
    _documentation_url = HttpUrl("https://github.com/ibkr-tasks/ibkr-tasks#configuration")

    auth_mode: Literal["bearer", "oauth2", "sidecar"] = Field(
        default="bearer",
        title="Authentication mode",
        description="bearer: a static token or a gateway login; oauth2: OAuth 2.0 private_key_jwt; "
        "sidecar: a service hands out the bearer.",
    )
    account_id: str | None = Field(
        default=None, title="Account ID", description="Default account; DU... is a paper account."
    )
    api_url: str = Field(
        default=DEFAULT_API_URL,
        title="API URL",
        description="API base URL; a local gateway is https://localhost:5000/v1/api.",
    )
    access_token: SecretStr | None = Field(
        default=None,
        title="Access token",
        description="Static bearer (bearer mode); a gateway takes any placeholder such as 'gateway'.",
    )
    verify_tls: bool = Field(
        default=True,
        title="Verify TLS certificate",
        description="Turn off only for a local gateway with a self-signed certificate.",
    )
    ca_bundle: str | None = Field(
        default=None, title="CA bundle path", description="PEM file of CAs to trust (e.g. the gateway's own)."
    )
    username: str | None = Field(
        default=None, title="IBKR username", description="Keys the rate-limit budget shared with other runs."
    )
    oauth2_client_id: str | None = Field(
        default=None, title="OAuth 2.0 client ID", description="The client id IBKR issued (oauth2 mode)."
    )
    oauth2_key_id: str | None = Field(
        default=None, title="OAuth 2.0 key ID", description="The kid IBKR registered the public key under."
    )
    oauth2_private_key: SecretStr | None = Field(
        default=None,
        title="OAuth 2.0 private key (PEM)",
        description="The unencrypted RSA private key, from -----BEGIN to -----END (paste it whole).",
        json_schema_extra=_multiline_secret,
    )
    oauth2_credential: str | None = Field(
        default=None,
        title="OAuth 2.0 credential",
        description="IBKR username the SSO session is opened for.",
    )
    oauth2_ip: str | None = Field(
        default=None,
        title="OAuth 2.0 client IP",
        description="Public IP declared in the SSO-session request; empty = looked up.",
    )
    oauth2_ip_echo_url: str | None = Field(
        default=None,
        title="OAuth 2.0 IP echo URL",
        description="Where the public IP is looked up when the client IP is empty; 'off' = never.",
    )
    sidecar_url: str | None = Field(
        default=None, title="Sidecar URL", description="URL that returns a bearer (sidecar mode)."
    )
    sidecar_token: SecretStr | None = Field(
        default=None, title="Sidecar token", description="Bearer the sidecar itself requires, if any."
    )
    flex_token: SecretStr | None = Field(
        default=None, title="Flex Web Service token", description="Token for Activity statements (Flex)."
    )
    flex_query_id: str | None = Field(
        default=None, title="Flex Query ID", description="Numeric id of the Activity statement Flex Query."
    )
    flex_url: str | None = Field(
        default=None,
        title="Flex Web Service URL",
        description="Empty = IBKR's service (the simulator's /flex in tests).",
    )

    def to_flex_settings(self) -> FlexSettings:
        """The Flex Web Service settings this block holds (token, query id, URL)."""
        values: dict[str, object] = {"token": self.flex_token, "query_id": self.flex_query_id}
        if self.flex_url:
            values["url"] = self.flex_url
        return FlexSettings(**values)

    def to_settings(self) -> IBKRSettings:
        """The plain client settings this block describes (no Prefect needed past this point)."""
        values: dict[str, object] = {
            "auth_mode": self.auth_mode,
            "api_url": self.api_url,
            "verify_tls": self.verify_tls,
        }
        optional: dict[str, object | None] = {
            "account_id": self.account_id,
            "access_token": self.access_token,
            "ca_bundle": Path(self.ca_bundle) if self.ca_bundle else None,
            "username": self.username,
            "oauth2_client_id": self.oauth2_client_id,
            "oauth2_key_id": self.oauth2_key_id,
            "oauth2_private_key": self.oauth2_private_key,
            "oauth2_credential": self.oauth2_credential,
            "oauth2_ip": self.oauth2_ip,
            "oauth2_ip_echo_url": self.oauth2_ip_echo_url,
            "sidecar_url": self.sidecar_url,
            "sidecar_token": self.sidecar_token,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        # _env_file=None and explicit values: the block wins over the environment.
        return IBKRSettings(**values)


class CredentialsNotFound(ConfigurationError):
    """No saved :class:`IBKRCredentials` block has the name a flow or task was given."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no IBKRCredentials block named {name!r} on the Prefect server: create it in the UI "
            f"(Blocks -> IBKR Credentials) or with IBKRCredentials(...).save({name!r}); "
            "`ibkr-tasks setup` registers the block type"
        )
        self.name = name


def _not_found(exc: ValueError) -> bool:
    """Prefect reports a missing block document as a ValueError raised from ObjectNotFound."""
    from prefect.exceptions import ObjectNotFound

    return isinstance(exc.__cause__, ObjectNotFound)


def load_credentials(name: str) -> IBKRCredentials:
    """The saved block ``name``, from sync code (also when an event loop is running in this thread)."""
    try:
        # _sync=True: Block.load would otherwise hand back a coroutine whenever a loop is running.
        return IBKRCredentials.load(name, _sync=True)  # type: ignore[call-arg,return-value]
    except ValueError as exc:
        if _not_found(exc):
            raise CredentialsNotFound(name) from None
        raise


async def aload_credentials(name: str) -> IBKRCredentials:
    """The saved block ``name``, from async code (flows and tasks of this package are async)."""
    try:
        return await IBKRCredentials.aload(name)
    except ValueError as exc:
        if _not_found(exc):
            raise CredentialsNotFound(name) from None
        raise


def _settings(credentials: IBKRCredentials | None) -> IBKRSettings:
    if credentials is None:
        return IBKRSettings()
    if not isinstance(credentials, IBKRCredentials):
        raise TypeError(
            f"credentials must be an IBKRCredentials block, its saved name or None, not {type(credentials).__name__}"
        )
    return credentials.to_settings()


def resolve_settings(credentials: IBKRCredentials | str | None = None) -> IBKRSettings:
    """Settings from a block (object or saved name), else from the ``IBKR_*`` environment.

    For sync callers. Async code (a flow, a task) uses :func:`aresolve_settings`, which does not
    block the event loop while the block is read from the Prefect server.
    """
    if isinstance(credentials, str):
        return load_credentials(credentials).to_settings()
    return _settings(credentials)


async def aresolve_settings(credentials: IBKRCredentials | str | None = None) -> IBKRSettings:
    """:func:`resolve_settings` for async callers: a block name is loaded with ``await``."""
    if isinstance(credentials, str):
        return (await aload_credentials(credentials)).to_settings()
    return _settings(credentials)

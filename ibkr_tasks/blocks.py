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
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from ibkr_tasks.client.settings import DEFAULT_API_URL, FlexSettings, IBKRSettings
from ibkr_tasks.errors import ConfigurationError


class IBKRCredentials(Block):
    """Connection settings and secrets for the IBKR Client Portal Web API.

    Works for a local Client Portal Gateway (any non-empty placeholder token, usually with
    ``verify_tls=False`` for its self-signed certificate), for api.ibkr.com with an OAuth 2.0
    private_key_jwt client, and for a sidecar that mints bearers (OAuth 1.0a).

    Example:
        ```python
        from ibkr_tasks.blocks import IBKRCredentials
        credentials = IBKRCredentials.load("du1234567-paper")
        settings = credentials.to_settings()
        ```
    """

    _block_type_name = "IBKR Credentials"
    _block_type_slug = "ibkr-credentials"
    _description = (
        "Connection settings and secrets for the IBKR Client Portal Web API (gateway, OAuth 2.0, sidecar)."
    )
    _documentation_url = "https://github.com/ibkr-tasks/ibkr-tasks#configuration"  # type: ignore[assignment]

    auth_mode: Literal["bearer", "oauth2", "sidecar"] = Field(
        default="bearer",
        description="bearer: a static token; oauth2: private_key_jwt; sidecar: fetch the bearer.",
    )
    account_id: str | None = Field(default=None, description="Default account id; DU... is a paper account.")
    api_url: str = Field(
        default=DEFAULT_API_URL, description="API base URL (gateway: https://localhost:5000/v1/api)."
    )
    access_token: SecretStr | None = Field(default=None, description="Static bearer (auth_mode=bearer).")
    verify_tls: bool = Field(
        default=True, description="Verify TLS; turn off only for a local self-signed gateway."
    )
    ca_bundle: str | None = Field(default=None, description="Path to a PEM CA bundle to trust.")
    username: str | None = Field(
        default=None, description="IBKR username: keys the shared rate-limit budget."
    )
    oauth2_client_id: str | None = Field(default=None, description="OAuth 2.0 client id.")
    oauth2_key_id: str | None = Field(default=None, description="OAuth 2.0 key id (kid).")
    oauth2_private_key: SecretStr | None = Field(default=None, description="OAuth 2.0 RSA private key (PEM).")
    oauth2_credential: str | None = Field(default=None, description="IBKR username for the SSO session.")
    oauth2_ip: str | None = Field(
        default=None, description="Public IP to declare in the SSO-session request."
    )
    oauth2_ip_echo_url: str | None = Field(
        default=None,
        description="Where the public IP is looked up when oauth2_ip is empty ('off': never); "
        "empty = the default service.",
    )
    sidecar_url: str | None = Field(
        default=None, description="URL that returns a bearer (auth_mode=sidecar)."
    )
    sidecar_token: SecretStr | None = Field(default=None, description="Bearer the sidecar itself requires.")
    flex_token: SecretStr | None = Field(default=None, description="Flex Web Service token (statements).")
    flex_query_id: str | None = Field(default=None, description="Flex Query id of the Activity statement.")
    flex_url: str | None = Field(
        default=None, description="Flex Web Service URL; empty = IBKR's (the simulator's /flex in tests)."
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

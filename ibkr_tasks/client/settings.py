"""Client configuration from ``IBKR_*`` environment variables (pydantic-settings).

Paper vs live is a property of the account id (``DU...``), never a flag that changes the host: the
Client Portal Web API serves both from the same base URL.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ibkr_tasks.accounts import is_paper_account, validate_account_id
from ibkr_tasks.errors import ConfigurationError

logger = logging.getLogger("ibkr_tasks.client")

DEFAULT_API_URL = "https://api.ibkr.com/v1/api"
GATEWAY_API_URL = "https://localhost:5000/v1/api"
IBKR_HOSTED_SUFFIX = "api.ibkr.com"  # api.ibkr.com and 1.api.ibkr.com ... 7.api.ibkr.com

# OAuth 2.0 endpoints (docs/ibkr-api.md#oauth2; IBKR's OpenAPI spec).
OAUTH2_TOKEN_URL = "https://api.ibkr.com/oauth2/api/v1/token"  # noqa: S105 (a URL, not a password)
OAUTH2_SSO_URL = "https://api.ibkr.com/gw/api/v1/sso-sessions"
# Where the caller's public IP is looked up when IBKR_OAUTH2_IP is not set: an address-echo service
# answering the address it sees, as IBKR's own OAuth 2.0 sample does (plain text, or JSON {"ip": ...}).
OAUTH2_IP_ECHO_URL = "https://api.ipify.org"

AuthMode = Literal["bearer", "oauth2", "sidecar"]
TradesScope = Literal["auto", "login", "account"]


def _problems(exc: ValidationError) -> str:
    """Field names and reasons of a settings error, never the input (which may hold a token)."""
    return "; ".join(
        (".".join(str(p) for p in err["loc"]) or "settings") + ": " + err["msg"]
        for err in exc.errors(include_input=False, include_url=False)
    )


class IBKRSettings(BaseSettings):
    """Everything the client needs to reach the Client Portal Web API.

    Read from the environment with the prefix ``IBKR_`` (``IBKR_ACCESS_TOKEN``, ``IBKR_ACCOUNT_ID``,
    ``IBKR_API_URL``, ...) or passed as keyword arguments. Secrets are ``SecretStr`` and never appear
    in the repr.
    """

    model_config = SettingsConfigDict(env_prefix="IBKR_", extra="ignore", validate_default=True)

    access_token: SecretStr | None = Field(
        default=None,
        description="Static bearer token (auth_mode=bearer). Any non-empty placeholder works for a local gateway.",
    )
    account_id: str | None = Field(default=None, description="Default account id (DU... = paper).")
    api_url: str = Field(
        default=DEFAULT_API_URL,
        description=f"API base URL; the local Client Portal Gateway is {GATEWAY_API_URL}.",
    )
    verify_tls: bool = Field(
        default=True, description="Verify TLS certificates (opt out only for a local gateway)."
    )
    ca_bundle: Path | None = Field(
        default=None, description="PEM CA bundle, e.g. for a gateway's own certificate."
    )
    auth_mode: AuthMode = "bearer"
    timeout: float = Field(default=30.0, gt=0, description="Per-request timeout in seconds.")
    username: str | None = Field(
        default=None,
        description="IBKR username, used to key the shared rate limiter (IBKR's global limit is per username).",
    )

    # OAuth 2.0 private_key_jwt (institutional; docs/ibkr-api.md#oauth2).
    oauth2_client_id: str | None = None
    oauth2_key_id: str | None = Field(default=None, description="'kid' of the registered public key.")
    oauth2_private_key: SecretStr | None = Field(default=None, description="PEM private key (RSA).")
    oauth2_private_key_path: Path | None = Field(default=None, description="Path to the PEM private key.")
    oauth2_credential: str | None = Field(
        default=None, description="The IBKR username the SSO session is for."
    )
    oauth2_ip: str | None = Field(
        default=None,
        description="The caller's public IP, sent as the 'ip' claim of the SSO-session JWT; looked up from "
        "IBKR_OAUTH2_IP_ECHO_URL when unset.",
    )
    oauth2_ip_echo_url: str | None = Field(
        default=OAUTH2_IP_ECHO_URL,
        description="Address-echo service that answers the caller's public IP (plain text or JSON {'ip': ...}); "
        "used when IBKR_OAUTH2_IP is unset. Empty or 'off' turns the lookup off.",
    )
    oauth2_token_url: str = OAUTH2_TOKEN_URL
    oauth2_sso_url: str = OAUTH2_SSO_URL
    oauth2_scope: str = "sso-sessions.write"

    # Sidecar: a separate process (e.g. an OAuth 1.0a signer) hands out the bearer.
    sidecar_url: str | None = None
    sidecar_token: SecretStr | None = Field(default=None, description="Bearer sent to the sidecar itself.")

    rate_margin: float = Field(
        default=0.04,
        ge=0,
        lt=1,
        description="Safety margin of the pacing: requests are spaced this fraction wider than IBKR's limits. "
        "Raise it (e.g. 0.1) when network delays vary a lot; the penalty box costs 10-15 minutes.",
    )
    pacing_dir: str | None = Field(
        default=None,
        description="Directory where the processes of this machine share the pacing of IBKR's slow endpoints "
        "(1 request per second or slower), so a run started right after another keeps their spacing. "
        "Default $XDG_STATE_HOME/ibkr-tasks/pacing (~/.local/state/ibkr-tasks/pacing); 'off' turns it off.",
    )
    pacing_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="For simulators and tests only: every pacing period (windows, spacings) is this fraction "
        "of IBKR's, e.g. 0.1 paces trades at 1 per 0.5 s. IBKR's real limits are the ones at 1 (the default); "
        "anything less against IBKR earns the penalty box. Match it with the simulator's pacing_scale.",
    )
    trades_scope: TradesScope = Field(
        default="auto",
        description="How fills are asked for: 'login' one trades request for the whole login, 'account' one "
        "per account (accountId; IBKR allows 1 per 5 s), 'auto' one where the login is an FA master whose "
        "answer covers its sub-accounts and one per account otherwise (docs/client.md#trades-scope).",
    )
    refresh_margin: float = Field(
        default=120.0, ge=0, description="Refresh OAuth2/sidecar tokens this many seconds before they expire."
    )
    keep_alive_interval: float = Field(
        default=60.0,
        ge=0,
        description="An open client calls /tickle this often (seconds) to keep the session alive; IBKR asks for "
        "about once a minute. 0 turns it off.",
    )
    retry_backoff: float = Field(
        default=0.5,
        ge=0,
        description="First wait (seconds) before a GET is sent again after a 5xx, a timeout or a connection "
        "error; it doubles with every further failure (with jitter), up to IBKR_RETRY_BACKOFF_CAP.",
    )
    retry_backoff_cap: float = Field(
        default=10.0, ge=0, description="Longest wait (seconds) between two tries of one request."
    )
    rate_limit_backoff: float = Field(
        default=2.0,
        ge=0,
        description="First wait (seconds) after a 429 without Retry-After; doubles like IBKR_RETRY_BACKOFF.",
    )

    def __init__(self, **values: Any) -> None:
        # pydantic's ValidationError repeats the raw input (which may hold a token) in its message;
        # re-raise as ConfigurationError listing only field names and reasons.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid IBKR settings: {_problems(exc)}") from None

    @field_validator("account_id")
    @classmethod
    def _check_account(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return validate_account_id(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"IBKR_API_URL must be an http(s) URL such as {GATEWAY_API_URL}, got {value!r}")
        return value.rstrip("/")

    @field_validator("oauth2_ip")
    @classmethod
    def _check_ip(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError("IBKR_OAUTH2_IP must be an IPv4 or IPv6 address, e.g. 203.0.113.7") from None

    @field_validator("oauth2_ip_echo_url")
    @classmethod
    def _check_echo_url(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in {"", "off", "none"}:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"IBKR_OAUTH2_IP_ECHO_URL must be an http(s) URL such as {OAUTH2_IP_ECHO_URL}, or 'off'"
            )
        return value.strip()

    @field_validator("ca_bundle")
    @classmethod
    def _check_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"IBKR_CA_BUNDLE={str(value)!r} is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> IBKRSettings:
        if self.auth_mode == "oauth2":
            missing = [
                "IBKR_" + name.upper()
                for name in ("oauth2_client_id", "oauth2_key_id", "oauth2_credential")
                if not getattr(self, name)
            ]
            if self.oauth2_private_key is None and self.oauth2_private_key_path is None:
                missing.append("IBKR_OAUTH2_PRIVATE_KEY or IBKR_OAUTH2_PRIVATE_KEY_PATH")
            if self.oauth2_ip is None and self.oauth2_ip_echo_url is None:
                # IBKR requires the 'ip' claim in the SSO-session request.
                missing.append(
                    "IBKR_OAUTH2_IP (your public IP) or IBKR_OAUTH2_IP_ECHO_URL (a service that tells it)"
                )
            if missing:
                raise ValueError(f"auth_mode=oauth2 needs {', '.join(missing)}")
        if self.auth_mode == "sidecar" and not self.sidecar_url:
            raise ValueError(
                "auth_mode=sidecar needs IBKR_SIDECAR_URL (the URL that returns the bearer token)"
            )
        return self

    # --- derived values -------------------------------------------------------------------------

    @property
    def is_paper(self) -> bool:
        """True when the configured account is a paper account (``DU...``); False for live or unset."""
        return self.account_id is not None and is_paper_account(self.account_id)

    @property
    def host(self) -> str:
        """The API host name (lower case)."""
        return (urlsplit(self.api_url).hostname or "").lower()

    @property
    def is_ibkr_hosted(self) -> bool:
        """True for ``api.ibkr.com`` (and ``N.api.ibkr.com``); False for a Client Portal Gateway."""
        return self.host == IBKR_HOSTED_SUFFIX or self.host.endswith("." + IBKR_HOSTED_SUFFIX)

    @property
    def limiter_user(self) -> str:
        """Who the shared rate limiter is keyed by (IBKR's global limit counts per username).

        A gateway serves one username, so it is keyed by host alone unless a username is given.
        """
        return self.username or self.oauth2_credential or "*"

    def tls_verify(self) -> ssl.SSLContext | bool:
        """The ``verify=`` value for httpx: a context with the CA bundle, True, or False.

        The transport warns about ``False`` for an https URL, in the run's log when inside a run.
        """
        if not self.verify_tls:
            return False
        if self.ca_bundle is not None:
            return ssl.create_default_context(cafile=str(self.ca_bundle))
        return True


class _PacingScale(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IBKR_PACING_", extra="ignore")

    scale: float = Field(default=1.0, gt=0, le=1)


def pacing_scale_from_env() -> float:
    """``IBKR_PACING_SCALE`` (1 when unset), validated like ``IBKRSettings.pacing_scale`` but read alone,
    so a simulator can follow it without the client's other settings (docs/pacing.md#pacing-scale)."""
    try:
        return _PacingScale().scale
    except ValidationError as exc:
        raise ConfigurationError(f"invalid IBKR settings: pacing_{_problems(exc)}") from None


DEFAULT_TASK_RETRY_DELAYS = (5.0, 20.0)


class TaskSettings(BaseSettings):
    """How the Prefect tasks of ``ibkr_tasks.tasks`` retry, from ``IBKR_TASK_*`` environment variables.

    ``IBKR_TASK_RETRY_DELAYS``: the waits (seconds) before the first, second, ... retry of a read that
    failed for a transient reason, comma-separated (``5,20`` by default; the last one repeats);
    ``IBKR_TASK_FLEX_RETRY_DELAY``: the wait before a failed Flex statement fetch is tried again. Prefect
    takes a task's delays when the task is defined, so the value is read when ``ibkr_tasks.tasks`` is
    imported: set it in the worker's environment.
    """

    model_config = SettingsConfigDict(env_prefix="IBKR_TASK_", extra="ignore", validate_default=True)

    retry_delays: Annotated[list[float], NoDecode] = Field(
        default=list(DEFAULT_TASK_RETRY_DELAYS),
        description="Seconds before each retry of a read (comma-separated); the last one repeats.",
    )

    flex_retry_delay: float = Field(
        default=30.0,
        ge=0,
        description="Seconds before the one retry of a failed Flex statement fetch (IBKR_TASK_FLEX_RETRY_DELAY).",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid task settings: {_problems(exc)}") from None

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            if not any(parts):
                return []
            return parts
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_delays(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("IBKR_TASK_RETRY_DELAYS needs at least one delay, e.g. 5,20 (or 0)")
        if any(d < 0 for d in value):
            raise ValueError("IBKR_TASK_RETRY_DELAYS must not be negative")
        if len(value) > 50:
            raise ValueError("IBKR_TASK_RETRY_DELAYS takes at most 50 delays (Prefect's limit)")
        return value


DEFAULT_FLEX_URL = "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService"
"""IBKR's Flex Web Service v3 (SendRequest lives under it; GetStatement is at the URL SendRequest
returns). https://www.ibkrguides.com/clientportal/performanceandstatements/flex3.htm"""


class FlexSettings(BaseSettings):
    """Flex Web Service settings from ``IBKR_FLEX_*`` environment variables or keyword arguments.

    ``IBKR_FLEX_URL`` (IBKR's service by default; the simulator's ``/flex`` in tests and the demo),
    ``IBKR_FLEX_TOKEN`` (a secret: never logged, never in an error) and ``IBKR_FLEX_QUERY_ID``.
    """

    model_config = SettingsConfigDict(env_prefix="IBKR_FLEX_", extra="ignore", validate_default=True)

    url: str = Field(default=DEFAULT_FLEX_URL, description="Flex Web Service base URL (…/FlexWebService).")
    token: SecretStr | None = Field(default=None, description="Flex Web Service token (Reports > Settings).")
    query_id: str | None = Field(default=None, description="Default Flex Query id.")
    timeout: float = Field(default=60.0, gt=0, description="Per-request timeout in seconds.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid Flex settings: {_problems(exc)}") from None

    @field_validator("url")
    @classmethod
    def _check_flex_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"IBKR_FLEX_URL must be an http(s) URL such as {DEFAULT_FLEX_URL}, got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("query_id")
    @classmethod
    def _check_query_id(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.strip().isdigit():
            raise ValueError("IBKR_FLEX_QUERY_ID must be the numeric Query ID shown in Flex Queries")
        return value.strip()

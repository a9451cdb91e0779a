"""What the simulator simulates: scale, brokerage shape and which IBKR quirks are switched on.

A :class:`Scenario` is plain data (pydantic), loadable from YAML (:meth:`Scenario.from_yaml`), so users
can describe the brokerage their own flows should be tested against. Every quirk is off by default;
:meth:`Scenario.demo` switches on the ones a demo should show without random faults.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


def pacing_scale_from_env() -> float:
    """``IBKR_PACING_SCALE`` (1 when unset or empty), the client's setting, read here so the simulator
    needs nothing of the client; it must be a number in (0, 1] as there."""
    raw = os.environ.get("IBKR_PACING_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"IBKR_PACING_SCALE must be a number in (0, 1], got {raw!r}") from None
    if not 0 < scale <= 1:
        raise ValueError(f"IBKR_PACING_SCALE must be in (0, 1], got {raw!r}")
    return scale


class Quirks(BaseModel):
    """IBKR behaviours the simulator reproduces; each one switchable (see docs/simulator.md)."""

    model_config = ConfigDict(extra="forbid")

    # --- session ------------------------------------------------------------------------------
    session_expiry_requests: int | None = Field(
        default=None,
        ge=1,
        description="the session expires (401) after this many API requests, until ssodh/init",
    )
    session_expiry_seconds: float | None = Field(
        default=None, gt=0, description="the session expires (401) this long after the last ssodh/init"
    )
    require_ssodh_init: bool = Field(
        default=False, description="/iserver/* answers 400 'no bridge' until POST /iserver/auth/ssodh/init"
    )
    require_accounts_preflight: bool = Field(
        default=False,
        description="trades/orders/snapshot answer 'Please query /accounts first' before GET /iserver/accounts "
        "(and /portfolio/{id}/... before GET /portfolio/accounts)",
    )
    competing_session: bool = Field(default=False, description="start with a competing brokerage session")
    orders_preflight: bool = Field(
        default=True,
        description="the first GET /iserver/account/orders per session is {'orders':[],'snapshot':false}",
    )
    snapshot_preflight: bool = Field(
        default=True, description="the first snapshot per conid per session returns only conid/conidEx"
    )
    # --- pacing -------------------------------------------------------------------------------
    rate_limits: bool = Field(
        default=False, description="enforce IBKR's global and per-endpoint limits (429)"
    )
    global_rate_per_second: int = Field(default=10, ge=1, description="global limit (CP Gateway: 10 req/s)")
    penalty_box_seconds: float = Field(
        default=600.0, ge=0, description="after a violation every request answers 429 for this long"
    )
    pacing_scale: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="tests only: windows longer than 1 s are this fraction of IBKR's (no shorter than 1 s), "
        "the penalty box too; None: IBKR_PACING_SCALE of the environment (else 1), as the client does",
    )
    # --- faults -------------------------------------------------------------------------------
    error_rate_5xx: float = Field(
        default=0.0, ge=0, le=1, description="share of API requests answered 500/503"
    )
    slow_ratio: float = Field(default=0.0, ge=0, le=1, description="share of API requests delayed by slow_ms")
    slow_ms: int = Field(default=0, ge=0)
    drop_order_response: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of accepted orders whose response is dropped (client times out)",
    )
    drop_delay_seconds: float = Field(
        default=30.0, ge=0, description="over a real socket: how long a dropped response hangs before a 504"
    )
    # --- fills and commissions ------------------------------------------------------------------
    late_commissions: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of executions whose commission is absent on the first trades call",
    )
    changed_commission: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of executions whose commission changes after it was first shown",
    )
    corrections: float = Field(
        default=0.0, ge=0, le=1, description="share of executions later corrected (.01 then .02, new price)"
    )
    option_expiries: bool = Field(default=False, description="long option positions expire (side X)")
    event_netting: bool = Field(default=False, description="ForecastEx YES/NO holdings net (side N)")
    malformed_ratio: float = Field(
        default=0.0, ge=0, le=1, description="junk rows per fill in the trades payload (never move positions)"
    )
    # --- orders ---------------------------------------------------------------------------------
    prompt_chain_min: int = Field(default=0, ge=0, le=5, description="fewest reply prompts per order")
    prompt_chain_max: int = Field(default=0, ge=0, le=5, description="most reply prompts per order")
    # --- portfolio ------------------------------------------------------------------------------
    positions_cache: bool = Field(
        default=False, description="positions pages stay as first served until POST .../positions/invalidate"
    )

    def effective_pacing_scale(self) -> float:
        """``pacing_scale``, or the client's ``IBKR_PACING_SCALE`` when it is unset (1 when both are)."""
        if self.pacing_scale is not None:
            return self.pacing_scale
        return pacing_scale_from_env()

    @model_validator(mode="after")
    def _chain_bounds(self) -> Quirks:
        if self.prompt_chain_min > self.prompt_chain_max:
            raise ValueError("prompt_chain_min must not exceed prompt_chain_max")
        return self


class OAuth2Scenario(BaseModel):
    """OAuth 2.0 mode (api.ibkr.com without a gateway): the registered client and its token lifetimes.

    With it, the simulator serves ``POST /oauth2/api/v1/token`` and ``POST /gw/api/v1/sso-sessions`` as
    IBKR describes them, and every ``/v1/api`` request needs a valid, unexpired SSO bearer
    (docs/simulator.md#oauth2).
    """

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, description="the client id IBKR assigned at registration")
    key_id: str = Field(min_length=1, description="'kid' of the registered public key")
    public_key_pem: str = Field(
        description="the registered RSA public key (PEM) client assertions verify with"
    )
    credential: str | None = Field(
        default=None, description="the IBKR username SSO sessions may be opened for (None: any)"
    )
    audience: str = Field(default="/token", description="the 'aud' the client assertion must name")
    access_token_seconds: float = Field(default=86_399.0, gt=0, description="lifetime of an access token")
    bearer_seconds: float = Field(default=3_600.0, gt=0, description="lifetime of an SSO bearer")
    leeway_seconds: float = Field(default=30.0, ge=0, description="clock skew tolerated on 'exp'")

    @model_validator(mode="after")
    def _check_key(self) -> OAuth2Scenario:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

        try:
            key = serialization.load_pem_public_key(self.public_key_pem.encode())
        except ValueError:
            raise ValueError("oauth2.public_key_pem is not a PEM public key") from None
        if not isinstance(key, RSAPublicKey):
            raise ValueError("oauth2.public_key_pem must be an RSA key (IBKR verifies RS256)")
        return self


class Scenario(BaseModel):
    """A simulated brokerage login: its accounts, holdings, activity, latency and quirks."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    accounts: int = Field(default=3, ge=1, le=1000, description="paper (DU...) trading accounts on the login")
    fa: bool = Field(
        default=False, description="the login is an FA master (DF...) and the DU accounts its clients"
    )
    live_account: bool = Field(default=False, description="also one live U... account on the login")
    positions_per_account: int = Field(default=20, ge=0, le=5000)
    fills_per_account_per_day: int = Field(default=10, ge=0, le=5000)
    history_days: int = Field(
        default=3, ge=1, le=7, description="calendar days of fills before start, today included"
    )
    latency_ms: int = Field(default=0, ge=0, description="added to every API request")
    opening_cash: Decimal = Field(
        default=Decimal("1000000"), description="cash per account per currency at start"
    )
    order_value_limit: Decimal = Field(
        default=Decimal(1_000_000),
        gt=0,
        description="the accounts' Total Value Limit: an order whose value estimate (quantity x price x "
        "multiplier, in the order's currency) exceeds it is asked o451 when prompts are on",
    )
    order_size_limit: Decimal = Field(
        default=Decimal(500),
        gt=0,
        description="the accounts' Size Limit: an order for more than this quantity is asked o383 when "
        "prompts are on",
    )
    quirks: Quirks = Field(default_factory=Quirks)
    oauth2: OAuth2Scenario | None = Field(
        default=None, description="OAuth 2.0 mode: token and SSO endpoints, bearer-checked API requests"
    )

    @classmethod
    def demo(cls) -> Scenario:
        """A few paper accounts on an FA login with options and event contracts; the bookkeeping quirks
        (late commissions, a correction, expiries, netting, prompts) and rate limits on, no random faults."""
        return cls(
            seed=7,
            accounts=3,
            fa=True,
            positions_per_account=12,
            fills_per_account_per_day=8,
            history_days=3,
            quirks=Quirks(
                rate_limits=True,
                penalty_box_seconds=60.0,
                late_commissions=0.2,
                corrections=0.05,
                option_expiries=True,
                event_netting=True,
                prompt_chain_min=0,
                prompt_chain_max=2,
                orders_preflight=True,
                snapshot_preflight=True,
            ),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Scenario:
        """Load a scenario from a YAML file with the same keys as this model."""
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a scenario file must hold a mapping of scenario keys")
        return cls.model_validate(data)

"""The parameters of a rebalance run, validated before anything talks to IBKR.

``targets`` maps a conid (as a string, the way JSON and the Prefect UI send keys) to either a bare
number (a weight of net liquidation value, or a quantity when ``target_kind="quantity"``) or an
object for the details::

    {"265598": 0.30, "756733": 0.50}                              # weights
    {"265598": {"quantity": 100}, "637533641": {"quantity": 2}}   # quantities
    {"713921696": {"quantity": 40, "side": "Yes"}}                # an event contract: hold 40 YES
    {"713921700": {"weight": 0.01, "side": "No"}}                 # ... or 1% of NLV in NO

An event-contract target names either leg (YES or NO conid) and the outcome to hold; the plan looks
up the pair and never sells a ForecastEx contract (it buys the opposite outcome instead).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.models import OrderRequest, Side, TimeInForce
from ibkr_tasks.models.numbers import parse_decimal

__all__ = ["PricingMode", "RebalanceParams", "TargetSpec", "as_decimal"]

NonNegativeDecimal = Annotated[Decimal, Field(ge=0)]
_PROMPT_ID = re.compile(r"[a-z]\d+")  # IBKR's message ids: o163, o451, p6, o10151


@overload
def as_decimal(value: float) -> Decimal: ...
@overload
def as_decimal(value: None) -> None: ...
def as_decimal(value: float | None) -> Decimal | None:
    """A number from a form or JSON as the Decimal it was written as (``0.1`` -> ``Decimal("0.1")``,
    ``50000.0`` -> ``Decimal("50000")``): the flow takes limits as plain numbers, the plan uses Decimals."""
    if value is None:
        return None
    number = parse_decimal(value)
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number


class PricingMode(StrEnum):
    """How orders are priced: a limit at the snapshot price moved by ``limit_offset_bps``, or market."""

    LIMIT = "limit"
    MARKET = "market"


class TargetSpec(BaseModel):
    """What one conid should be after the rebalance: a weight of NLV or a quantity (exactly one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conid: int = Field(gt=0)
    weight: Decimal | None = Field(default=None, ge=0, le=1)
    quantity: Decimal | None = None
    side: Side = Side.LONG
    lot_size: Decimal = Field(default=Decimal(1), gt=0)
    tick_size: Decimal | None = Field(default=None, gt=0)

    @field_validator("weight", "quantity", "lot_size", "tick_size", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        return None if value is None else parse_decimal(value)

    @model_validator(mode="after")
    def _one_amount(self) -> TargetSpec:
        if (self.weight is None) == (self.quantity is None):
            raise ValueError(f"target {self.conid}: give exactly one of weight or quantity")
        if self.side != Side.LONG and self.quantity is not None and self.quantity < 0:
            raise ValueError(
                f"target {self.conid}: an event-contract holding cannot be negative; to be on the other "
                "outcome, target the other side (Yes/No) instead"
            )
        return self


def _target_from(key: Any, value: Any, kind: str) -> TargetSpec:
    try:
        conid = int(str(key).strip())
    except ValueError:
        raise ValueError(f"target key {key!r} is not a conid (digits)") from None
    if isinstance(value, TargetSpec):
        if value.conid != conid:
            raise ValueError(f"target key {conid} holds a spec for conid {value.conid}")
        return value
    if isinstance(value, Mapping):
        return TargetSpec.model_validate({"conid": conid, **value})
    number = parse_decimal(value)
    return TargetSpec(conid=conid, **{kind: number})


class RebalanceParams(BaseModel):
    """Everything a rebalance run needs to know; every field is a flow parameter of the same name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    target_kind: Literal["weight", "quantity"] = "weight"  # for bare numbers in targets
    targets: dict[int, TargetSpec] = Field(default_factory=dict)
    orders: list[OrderRequest] | None = Field(
        default=None,
        description="explicit orders computed elsewhere (Horizon-style); used instead of targets",
    )
    dry_run: bool = True
    pricing: PricingMode = PricingMode.LIMIT
    limit_offset_bps: NonNegativeDecimal = Decimal(10)
    tif: TimeInForce = TimeInForce.DAY
    max_order_notional: NonNegativeDecimal | None = None
    max_total_notional: NonNegativeDecimal | None = None
    min_trade_value: NonNegativeDecimal = Decimal(0)
    liquidate_unlisted: bool = False
    allow_live: bool = False
    fill_timeout: float = Field(default=60.0, ge=0, le=86400)
    fill_poll_interval: float = Field(default=5.0, gt=0, le=3600)
    price_max_age: float = Field(default=60.0, gt=0)
    allow_prior_close: bool = False
    allow_prompts: tuple[str, ...] = Field(
        default=(),
        description="prompt message ids (e.g. o451) to confirm in this run on top of the prompt policy",
    )

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        return validate_account_id(value)

    @field_validator("allow_prompts", mode="before")
    @classmethod
    def _prompt_ids(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        ids = [str(v).strip() for v in value]
        bad = [i for i in ids if not _PROMPT_ID.fullmatch(i)]
        if bad:
            raise ValueError(
                f"allow_prompts: {', '.join(map(repr, bad))} is not a prompt message id (like o451 or p6)"
            )
        return tuple(dict.fromkeys(ids))

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            value = json.loads(value)
        kind = (info.data or {}).get("target_kind", "weight")
        if isinstance(value, list):
            specs = [v if isinstance(v, TargetSpec) else TargetSpec.model_validate(v) for v in value]
            pairs = [(s.conid, s) for s in specs]
        elif isinstance(value, Mapping):
            pairs = list(value.items())
        else:
            raise ValueError("targets must be a mapping conid -> weight/quantity/object, or a list")
        out: dict[int, TargetSpec] = {}
        for key, item in pairs:
            spec = _target_from(key, item, kind)
            if spec.conid in out:
                raise ValueError(f"conid {spec.conid} is targeted twice")
            out[spec.conid] = spec
        return out

    @model_validator(mode="after")
    def _consistent(self) -> RebalanceParams:
        weights = [t.weight for t in self.targets.values() if t.weight is not None]
        total = sum(weights, Decimal(0))
        if total > 1:
            raise ValueError(f"target weights add up to {total}, more than 1 (100% of net liquidation value)")
        if self.orders and self.targets:
            raise ValueError("give either targets or explicit orders, not both")
        if not self.orders and not self.targets and not self.liquidate_unlisted:
            raise ValueError("nothing to do: give targets, explicit orders, or liquidate_unlisted=true")
        if (
            self.max_order_notional is not None
            and self.max_total_notional is not None
            and self.max_order_notional > self.max_total_notional
        ):
            raise ValueError("max_order_notional must not exceed max_total_notional")
        return self

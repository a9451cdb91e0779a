"""Order models: what we ask for (:class:`OrderRequest`), what happened (:class:`OrderResult`), and the
orders IBKR reports as live (:class:`LiveOrder`).

``OrderRequest`` follows the shape of the Horizon SDK's order (``market_id``, ``order_side``, ``price``,
``size``, ``side``) so strategies written against it map over unchanged:

- ``market_id`` is the IBKR conid as a string;
- ``order_side`` is ``Buy``/``Sell``;
- ``side`` is ``Long`` for stocks, options and futures, and ``Yes``/``No`` for event contracts. IBKR
  models a ForecastEx strike as an option pair: YES is the call conid, NO is the put conid
  (docs/ibkr-api.md#event-contracts), so a ``Yes``/``No`` order needs the pair (:class:`EventContractPair`) to pick
  the conid that is actually sent.

:meth:`OrderRequest.to_ibkr_order` builds the body element for ``POST /iserver/account/{id}/orders``:
``conid`` (int), ``side`` ``BUY``/``SELL``, ``price``, ``quantity``, ``acctId`` (always, so an FA or
multi-account login can never route it to the selected account instead), ``cOID``, ``orderType``, ``tif``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.models.numbers import parse_decimal

__all__ = [
    "CancelResult",
    "EventContractPair",
    "LiveOrder",
    "OrderRequest",
    "OrderResult",
    "OrderSide",
    "OrderType",
    "PromptRecord",
    "Side",
    "TimeInForce",
]


class OrderSide(StrEnum):
    """Direction of the order (Horizon SDK spelling)."""

    BUY = "Buy"
    SELL = "Sell"


class Side(StrEnum):
    """What is traded: ``Long`` for ordinary contracts, ``Yes``/``No`` for event contracts."""

    LONG = "Long"
    YES = "Yes"
    NO = "No"


class OrderType(StrEnum):
    """IBKR ``orderType`` values this client sends."""

    LIMIT = "LMT"
    MARKET = "MKT"
    STOP = "STP"
    STOP_LIMIT = "STP_LIMIT"


class TimeInForce(StrEnum):
    """IBKR ``tif`` values."""

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    OPG = "OPG"


class EventContractPair(BaseModel):
    """The YES (call) and NO (put) conids of one event-contract strike."""

    model_config = ConfigDict(frozen=True)

    yes_conid: int
    no_conid: int


class OrderRequest(BaseModel):
    """One order to place. Prices and sizes are Decimal; the conid travels as ``market_id`` (a string)."""

    model_config = ConfigDict(frozen=True)

    market_id: str
    order_side: OrderSide
    size: Decimal = Field(gt=0)
    price: Decimal | None = None
    side: Side = Side.LONG
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    aux_price: Decimal | None = None
    outside_rth: bool = False
    # IBKR requires manualIndicator on US futures / futures-options orders (True only when a human
    # originated the order). None = not sent; IBKRClient.place_order sets False for FUT/FOP contracts.
    manual_indicator: bool | None = None

    @field_validator("market_id", mode="before")
    @classmethod
    def _conid_text(cls, value: Any) -> str:
        text = str(value).strip()
        if not text.isdigit():
            raise ValueError(f"market_id must be an IBKR conid (digits), got {value!r}")
        return text

    @field_validator("size", "price", "aux_price", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        return None if value is None else parse_decimal(value)

    @model_validator(mode="after")
    def _prices_fit_type(self) -> OrderRequest:
        needs_price = self.order_type in {OrderType.LIMIT, OrderType.STOP_LIMIT}
        if needs_price and self.price is None:
            raise ValueError(f"a {self.order_type.value} order needs a price")
        if self.order_type == OrderType.MARKET and self.price is not None:
            raise ValueError("a MKT order must not carry a price")
        if self.order_type in {OrderType.STOP, OrderType.STOP_LIMIT} and self.aux_price is None:
            raise ValueError(f"a {self.order_type.value} order needs aux_price (the stop price)")
        return self

    @property
    def conid(self) -> int:
        """The conid in ``market_id`` as an int."""
        return int(self.market_id)

    def resolve_conid(self, pair: EventContractPair | None = None) -> int:
        """The conid to send: ``market_id`` for ``Long``; the YES/NO leg of ``pair`` for event contracts."""
        if self.side == Side.LONG:
            return self.conid
        if pair is None:
            raise ConfigurationError(
                f"a {self.side.value} order needs the event contract's YES/NO conids: pass an "
                "EventContractPair (see IBKRClient.event_contract_pair)"
            )
        if self.conid not in {pair.yes_conid, pair.no_conid}:
            raise ConfigurationError(
                f"market_id {self.market_id} is neither the YES ({pair.yes_conid}) nor the NO "
                f"({pair.no_conid}) conid of this event contract"
            )
        return pair.yes_conid if self.side == Side.YES else pair.no_conid

    def to_ibkr_order(
        self, account_id: str, coid: str, pair: EventContractPair | None = None
    ) -> dict[str, Any]:
        """The order object for ``POST /iserver/account/{account_id}/orders`` (wrap in ``{"orders": [..]}``)."""
        if not coid:
            raise ConfigurationError("every order needs a cOID: it is how a lost response is found again")
        body: dict[str, Any] = {
            "acctId": account_id,
            "conid": self.resolve_conid(pair),
            "cOID": coid,
            "orderType": self.order_type.value,
            "side": "BUY" if self.order_side == OrderSide.BUY else "SELL",
            "quantity": _json_number(self.size),
            "tif": self.tif.value,
        }
        if self.price is not None:
            body["price"] = _json_number(self.price)
        if self.aux_price is not None:
            body["auxPrice"] = _json_number(self.aux_price)
        if self.outside_rth:
            body["outsideRTH"] = True
        if self.manual_indicator is not None:
            body["manualIndicator"] = self.manual_indicator
        return body


def _json_number(value: Decimal) -> int | float:
    """Decimal -> the JSON number IBKR expects (exact for integers; shortest float otherwise)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


class PromptRecord(BaseModel):
    """One confirmation question IBKR asked while placing an order, and how it was answered."""

    model_config = ConfigDict(frozen=True)

    reply_id: str
    message_ids: list[str]
    messages: list[str]
    confirmed: bool
    allowed_by_policy: bool
    answered_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class OrderResult(BaseModel):
    """What placing an order produced.

    ``order_id`` is IBKR's order id (never a reply id). ``existing`` is True when the order was found
    already placed (duplicate cOID, or a lost response resolved by looking the cOID up) instead of
    being acknowledged by this call. ``prompts`` lists every question asked and its answer.
    """

    account_id: str
    coid: str
    order_id: str | None
    status: str | None = None
    existing: bool = False
    prompts: list[PromptRecord] = Field(default_factory=list)
    request: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None


class LiveOrder(BaseModel):
    """One order from ``GET /iserver/account/orders``."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    account_id: str
    conid: int | None = None
    symbol: str | None = None
    side: str | None = None
    status: str | None = None
    order_ref: str | None = None
    order_type: str | None = None
    total_size: Decimal | None = None
    filled_quantity: Decimal | None = None
    remaining_quantity: Decimal | None = None
    price: Decimal | None = None
    tif: str | None = None
    raw: dict[str, Any]

    @property
    def is_active(self) -> bool:
        """True while the order can still trade (not filled, cancelled or inactive)."""
        return (self.status or "") not in {"Filled", "Cancelled", "Inactive", "PreCancelled", "ApiCancelled"}


class CancelResult(BaseModel):
    """IBKR's answer to ``DELETE /iserver/account/{id}/order/{orderId}``.

    ``accepted`` means the cancel *request* was accepted ("Request was submitted"), not that the order
    is cancelled: an execution can still arrive while the cancel is pending (docs/ibkr-api.md#live-orders).
    """

    model_config = ConfigDict(frozen=True)

    account_id: str
    order_id: str
    accepted: bool
    message: str | None = None
    raw: Any = None

"""OrderRequest (Horizon SDK shape) and its mapping to the IBKR order body."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.models import EventContractPair, LiveOrder, OrderRequest, OrderSide, OrderType, Side
from ibkr_tasks.models.statuses import OrderStatus, order_status


def test_limit_order_maps_to_ibkr_body_with_acct_id_and_coid() -> None:
    order = OrderRequest(market_id="265598", order_side=OrderSide.BUY, price="165.5", size=10)
    body = order.to_ibkr_order("DU1234567", "run1-aapl")
    assert body == {
        "acctId": "DU1234567",
        "conid": 265598,
        "cOID": "run1-aapl",
        "orderType": "LMT",
        "side": "BUY",
        "quantity": 10,
        "price": 165.5,
        "tif": "DAY",
    }
    assert isinstance(body["conid"], int)


def test_sell_market_order_has_no_price() -> None:
    order = OrderRequest(
        market_id=265598, order_side="Sell", size=Decimal("0.5"), order_type=OrderType.MARKET
    )
    body = order.to_ibkr_order("DU1", "c1")
    assert body["side"] == "SELL"
    assert body["quantity"] == 0.5
    assert "price" not in body
    assert order.market_id == "265598"


def test_limit_order_without_price_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a price"):
        OrderRequest(market_id="1", order_side=OrderSide.BUY, size=1)


def test_zero_size_and_bad_market_id_refused() -> None:
    with pytest.raises(ValueError):
        OrderRequest(market_id="1", order_side=OrderSide.BUY, size=0, price=1)
    with pytest.raises(ValueError, match="conid"):
        OrderRequest(market_id="AAPL", order_side=OrderSide.BUY, size=1, price=1)


def test_order_without_coid_refused() -> None:
    order = OrderRequest(market_id="1", order_side=OrderSide.BUY, size=1, price=1)
    with pytest.raises(ConfigurationError):
        order.to_ibkr_order("DU1", "")


def test_forecastex_yes_is_call_and_no_is_put_conid() -> None:
    pair = EventContractPair(yes_conid=722489372, no_conid=722489376)
    yes = OrderRequest(market_id="722489372", order_side="Buy", side=Side.YES, size=10, price="0.45")
    no = OrderRequest(market_id="722489372", order_side="Buy", side=Side.NO, size=10, price="0.55")
    assert yes.to_ibkr_order("DU1", "c1", pair)["conid"] == 722489372
    assert no.to_ibkr_order("DU1", "c2", pair)["conid"] == 722489376


def test_yes_no_order_without_pair_or_with_foreign_pair_refused() -> None:
    order = OrderRequest(market_id="5", order_side="Buy", side=Side.NO, size=1, price="0.5")
    with pytest.raises(ConfigurationError, match="YES/NO"):
        order.to_ibkr_order("DU1", "c1")
    with pytest.raises(ConfigurationError, match="neither"):
        order.to_ibkr_order("DU1", "c1", EventContractPair(yes_conid=1, no_conid=2))


def test_live_order_activity() -> None:
    assert LiveOrder(order_id="1", account_id="DU1", status="Submitted", raw={}).is_active
    assert not LiveOrder(order_id="1", account_id="DU1", status="Filled", raw={}).is_active


@pytest.mark.parametrize(
    ("word", "ours", "kept"),
    [
        ("PreSubmitted", "submitted", "PreSubmitted"),
        ("Submitted", "submitted", "Submitted"),
        ("PendingCancel", "cancel_requested", "PendingCancel"),
        ("ApiCancelled", "cancelled", "ApiCancelled"),
        ("Filled", "filled", "Filled"),
        ("Inactive", "inactive", "Inactive"),
        ("cancel_requested", "cancel_requested", None),
        ("intent", "intent", None),
        ("SomethingNew", "unknown", "SomethingNew"),
    ],
)
def test_ibkr_order_status_words_map_into_this_projects_vocabulary(
    word: str, ours: str, kept: str | None
) -> None:
    status, ibkr_word = order_status(word)
    assert (status, ibkr_word) == (OrderStatus(ours), kept)

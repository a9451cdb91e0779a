"""Order placement, confirmation prompts, duplicates, lost responses, live orders and cancels."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import respx
from test_api_support import ACCT, OTHER, body, make_client, payload, requests_to

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.orders import FoundOrder, may_have_reached_ibkr, resolve_failed_placement
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.errors import OrderError, OrderRejected, OrderStateUnknown, RequestFailed, UnknownPrompt
from ibkr_tasks.models import OrderRequest, OrderSide

ORDERS = f"/iserver/account/{ACCT}/orders"
AAPL = OrderRequest(market_id="265598", order_side=OrderSide.BUY, price="165.00", size=10)


def question(reply_id: str, *message_ids: str, text: str = "Are you sure?") -> list[dict[str, Any]]:
    return [{"id": reply_id, "message": [text], "isSuppressed": False, "messageIds": list(message_ids)}]


def live(order_id: int, account: str, *, ref: str | None = None, status: str = "Submitted") -> dict[str, Any]:
    return {
        "acct": account,
        "orderId": order_id,
        "conid": 265598,
        "ticker": "AAPL",
        "side": "BUY",
        "status": status,
        "order_ref": ref,
        "totalSize": 10.0,
        "remainingQuantity": 10.0,
        "filledQuantity": 0.0,
        "price": "165.00",
        "timeInForce": "CLOSE",
        "origOrderType": "LIMIT",
    }


async def test_acknowledged_order_returns_order_id_and_sends_one_ticket_with_acct_id(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(
        200, json=payload("iserver_account_orders_POST_success_tax-loss-direct-indexing.json")
    )
    client = make_client(clock)
    result = await client.place_order(ACCT, AAPL, coid="run1-aapl")
    assert result.order_id == "1483841810"
    assert result.status == "Filled"
    assert not result.existing and result.prompts == []
    (sent,) = requests_to(router, "POST", ORDERS)
    tickets = body(sent)["orders"]
    assert len(tickets) == 1
    assert tickets[0]["acctId"] == ACCT
    assert tickets[0]["cOID"] == "run1-aapl"
    assert tickets[0]["conid"] == 265598 and tickets[0]["side"] == "BUY"


async def test_two_hop_confirmation_chain_returns_real_order_id(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    first = payload("iserver_account_orders_POST_reply-question_tax-loss-direct-indexing.json")
    first_id = first[0]["id"]
    router.post(ORDERS).respond(200, json=first)
    router.post(f"/iserver/reply/{first_id}").respond(200, json=question("reply-2", "o163"))
    router.post("/iserver/reply/reply-2").respond(
        200, json=[{"order_id": "1370093239", "order_status": "PreSubmitted", "encrypt_message": "1"}]
    )
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-2hop")
    assert result.order_id == "1370093239"
    assert result.order_id not in {first_id, "reply-2"}
    assert [p.message_ids for p in result.prompts] == [["o354"], ["o163"]]
    assert all(p.confirmed and p.allowed_by_policy for p in result.prompts)
    assert "without market data" in result.prompts[0].messages[0]
    assert body(requests_to(router, "POST", f"/iserver/reply/{first_id}")[0]) == {"confirmed": True}
    assert body(requests_to(router, "POST", "/iserver/reply/reply-2")[0]) == {"confirmed": True}
    assert len(requests_to(router, "POST", ORDERS)) == 1


async def test_unknown_prompt_is_refused_and_order_discarded(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(200, json=question("r1", "o99999", text="Something new\nand scary"))
    decline = router.post("/iserver/reply/r1").respond(200, json={"error": "Order discarded"})
    with pytest.raises(UnknownPrompt) as caught:
        await make_client(clock).place_order(ACCT, AAPL, coid="c-unknown")
    assert caught.value.message_ids == ["o99999"]
    assert caught.value.text == "Something new\nand scary"  # IBKR's text as asked
    message = str(caught.value)
    assert "unknown to the prompt policy" in message
    # the text once, readable on one line, and the client's own parameter to allow it
    assert message.count("Something new and scary") == 1 and "\\n" not in message and "\n" not in message
    assert 'policy=PromptPolicy.default().with_allowed("o99999")' in message
    assert decline.call_count == 1
    assert body(decline.calls[0].request) == {"confirmed": False}
    (record,) = caught.value.prompts
    assert not record.confirmed and not record.allowed_by_policy


async def test_known_but_disallowed_prompt_p6_is_refused(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDERS).respond(200, json=question("r1", "p6", text="distributed over multiple accounts"))
    router.post("/iserver/reply/r1").respond(200, json=[])
    with pytest.raises(UnknownPrompt, match="not allowed"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-p6")
    assert body(requests_to(router, "POST", "/iserver/reply/r1")[0]) == {"confirmed": False}


async def test_prompt_with_one_unknown_id_among_known_is_refused(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(200, json=question("r1", "o163", "o77777"))
    router.post("/iserver/reply/r1").respond(200, json=[])
    with pytest.raises(UnknownPrompt):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-mixed")


async def test_custom_policy_allows_a_prompt(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDERS).respond(200, json=question("r1", "o99999"))
    router.post("/iserver/reply/r1").respond(200, json=[{"order_id": "55", "order_status": "Submitted"}])
    policy = PromptPolicy.allowing(["o99999"])
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-custom", policy=policy)
    assert result.order_id == "55"


async def test_reply_chain_stops_after_five_hops(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDERS).respond(200, json=question("r0", "o163"))
    for hop in range(6):
        router.post(f"/iserver/reply/r{hop}").respond(200, json=question(f"r{hop + 1}", "o163"))
    with pytest.raises(OrderRejected, match="more than 5"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-loop")
    confirmations = [
        body(c.request) for c in router.calls if c.request.url.path.startswith("/v1/api/iserver/reply/")
    ]
    assert confirmations == [{"confirmed": True}] * 5 + [{"confirmed": False}]


async def test_error_body_with_http_200_is_order_rejected(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDERS).respond(
        200, json={"error": "We cannot accept an order at the limit price you selected."}
    )
    with pytest.raises(OrderRejected, match="limit price you selected"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-rej")


async def test_http_500_is_order_rejected_and_never_retried(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.post(ORDERS).respond(500, json={"error": "Internal"})
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": True})
    router.get("/iserver/account/trades").respond(200, json=[])
    with pytest.raises(OrderRejected, match="not in live orders"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-500")
    assert route.call_count == 1


async def test_http_4xx_is_order_rejected(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.post(ORDERS).respond(400, json={"error": "Bad Request: accountId is not valid: DU1234567"})
    with pytest.raises(OrderRejected, match="accountId is not valid"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-400")
    assert route.call_count == 1


async def test_gateway_timeout_504_after_acceptance_resolves_by_coid(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    post = router.post(ORDERS).respond(504, json={"error": "Gateway Timeout", "statusCode": 504})
    router.get("/iserver/account/orders").respond(
        200, json={"orders": [live(444, ACCT, ref="c-504")], "snapshot": True}
    )
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-504")
    assert result.existing and result.order_id == "444"
    assert post.call_count == 1


async def test_gateway_timeout_504_not_found_is_state_unknown(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(504, json={"error": "Gateway Timeout", "statusCode": 504})
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": True})
    router.get("/iserver/account/trades").respond(200, json=[])
    with pytest.raises(OrderStateUnknown):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-504b")


async def test_reply_timed_out_503_is_rejected_when_not_found(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(200, json=question("r1", "o163"))
    router.post("/iserver/reply/r1").respond(503, json={"error": "reply id not found: r1 (it timed out)"})
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": True})
    router.get("/iserver/account/trades").respond(200, json=[])
    with pytest.raises(OrderRejected, match="timed out") as caught:
        await make_client(clock).place_order(ACCT, AAPL, coid="c-503")
    assert [p.confirmed for p in caught.value.prompts] == [True]


async def test_duplicate_coid_resolves_to_existing_order(router: respx.MockRouter, clock: FakeClock) -> None:
    post = router.post(ORDERS).respond(
        200, json={"error": "Order couldn't be submitted: Local order ID=c-dup is already registered."}
    )
    router.get("/iserver/account/orders").respond(
        200, json={"orders": [live(111, ACCT, ref="other"), live(222, ACCT, ref="c-dup")], "snapshot": True}
    )
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-dup")
    assert result.existing
    assert result.order_id == "222"
    assert result.status == "Submitted"
    assert post.call_count == 1  # never resubmitted


async def test_duplicate_coid_as_http_400_found_in_trades(router: respx.MockRouter, clock: FakeClock) -> None:
    router.post(ORDERS).respond(400, json={"error": "Local order ID=c-done is already registered."})
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": True})
    trade = dict(payload("iserver_account_trades_tax-loss-direct-indexing.json")[0])
    trade.update(account=ACCT, accountCode=ACCT, order_ref="c-done", order_id=4242)
    router.get("/iserver/account/trades").respond(200, json=[trade])
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-done")
    assert result.existing and result.order_id == "4242" and result.status == "Filled"


async def test_timeout_after_sending_looks_up_by_coid_instead_of_resending(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    post = router.post(ORDERS).mock(side_effect=httpx.ReadTimeout("read timed out"))
    router.get("/iserver/account/orders").respond(
        200, json={"orders": [live(333, ACCT, ref="c-lost")], "snapshot": True}
    )
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-lost")
    assert result.existing and result.order_id == "333"
    assert post.call_count == 1


async def test_timeout_after_sending_and_not_found_is_state_unknown(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    post = router.post(ORDERS).mock(side_effect=httpx.ReadTimeout("read timed out"))
    router.get("/iserver/account/orders").respond(200, json={"orders": [], "snapshot": True})
    router.get("/iserver/account/trades").respond(200, json=[])
    with pytest.raises(OrderStateUnknown, match="Do NOT resend") as caught:
        await make_client(clock).place_order(ACCT, AAPL, coid="c-void")
    assert post.call_count == 1
    assert caught.value.coid == "c-void"


async def test_connect_error_means_not_sent(router: respx.MockRouter, clock: FakeClock) -> None:
    post = router.post(ORDERS).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RequestFailed) as caught:
        await make_client(clock).place_order(ACCT, AAPL, coid="c-conn")
    assert caught.value.maybe_sent is False
    assert post.call_count == 1


async def test_orders_of_one_account_are_serialised(router: respx.MockRouter, clock: FakeClock) -> None:
    def place(request: httpx.Request) -> httpx.Response:
        coid = body(request)["orders"][0]["cOID"]
        return httpx.Response(200, json=question(f"q-{coid}", "o163"))

    def reply(request: httpx.Request, reply_id: str) -> httpx.Response:
        return httpx.Response(200, json=[{"order_id": f"id-{reply_id}", "order_status": "Submitted"}])

    router.post(ORDERS).mock(side_effect=place)
    router.post(url__regex=r".*/iserver/reply/(?P<reply_id>[^/]+)$").mock(side_effect=reply)
    client = make_client(clock)
    results = await asyncio.gather(
        client.place_order(ACCT, AAPL, coid="a"), client.place_order(ACCT, AAPL, coid="b")
    )
    assert [r.order_id for r in results] == ["id-q-a", "id-q-b"]
    sequence = [
        c.request.url.path.removeprefix("/v1/api") for c in router.calls if c.request.method == "POST"
    ]
    assert sequence == [ORDERS, "/iserver/reply/q-a", ORDERS, "/iserver/reply/q-b"]


async def test_live_orders_preflight_is_called_again_and_other_accounts_dropped(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get("/iserver/account/orders")
    route.side_effect = [
        httpx.Response(200, json={"orders": [], "snapshot": False}),
        httpx.Response(
            200, json={"orders": [live(1, ACCT), live(2, OTHER), {"orderId": 3}], "snapshot": True}
        ),
    ]
    orders = await make_client(clock).live_orders(ACCT)
    assert [o.order_id for o in orders] == ["1"]
    assert orders[0].price is not None and str(orders[0].price) == "165.00"
    assert route.call_count == 2
    assert all(c.request.url.params["accountId"] == ACCT for c in route.calls)


async def test_cancel_all_on_account_a_leaves_account_b_alone(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/orders").respond(
        200,
        json={
            "orders": [
                live(10, ACCT),
                live(11, OTHER),
                live(12, ACCT, status="Filled"),
                live(13, ACCT, status="PreSubmitted"),
            ],
            "snapshot": True,
        },
    )
    cancel = router.delete(url__regex=rf".*/iserver/account/{ACCT}/order/\d+$").respond(
        200, json={"msg": "Request was submitted", "order_id": 0, "conid": -1, "account": None}
    )
    foreign = router.delete(url__regex=rf".*/iserver/account/{OTHER}/order/.*").respond(200, json={})
    results = await make_client(clock).cancel_all(ACCT)
    assert sorted(r.order_id for r in results) == ["10", "13"]
    assert all(r.accepted for r in results)
    cancelled = sorted(c.request.url.path.rsplit("/", 1)[-1] for c in cancel.calls)
    assert cancelled == ["10", "13"]
    assert foreign.call_count == 0
    assert "-1" not in cancelled


async def test_cancel_refused_raises_and_minus_one_is_never_sent(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.delete(f"/iserver/account/{ACCT}/order/1").respond(200, json={"error": "OrderID 1 doesn't exist"})
    client = make_client(clock)
    with pytest.raises(OrderError, match="doesn't exist"):
        await client.cancel_order(ACCT, 1)
    with pytest.raises(Exception, match="never sent"):
        await client.cancel_order(ACCT, "-1")


async def test_reply_chains_of_different_accounts_never_interleave(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """A pending prompt dies if any other request reaches the session first (docs/ibkr-api.md#prompts)."""

    def place(request: httpx.Request) -> httpx.Response:
        coid = body(request)["orders"][0]["cOID"]
        return httpx.Response(200, json=question(f"q-{coid}", "o163"))

    def reply(request: httpx.Request, reply_id: str) -> httpx.Response:
        return httpx.Response(200, json=[{"order_id": f"id-{reply_id}", "order_status": "Submitted"}])

    router.post(url__regex=r".*/iserver/account/[^/]+/orders$").mock(side_effect=place)
    router.post(url__regex=r".*/iserver/reply/(?P<reply_id>[^/]+)$").mock(side_effect=reply)
    client = make_client(clock)
    await asyncio.gather(client.place_order(ACCT, AAPL, coid="a"), client.place_order(OTHER, AAPL, coid="b"))
    sequence = [
        c.request.url.path.removeprefix("/v1/api") for c in router.calls if c.request.method == "POST"
    ]
    assert sequence == [
        ORDERS,
        "/iserver/reply/q-a",
        f"/iserver/account/{OTHER}/orders",
        "/iserver/reply/q-b",
    ]


async def test_future_order_is_marked_automated_with_manual_indicator_false(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router["contract_info"].respond(
        200, json={"con_id": 495512563, "instrument_type": "FUT", "multiplier": "50"}
    )
    post = router.post(ORDERS).respond(200, json=[{"order_id": "9", "order_status": "Submitted"}])
    es = OrderRequest(market_id="495512563", order_side=OrderSide.SELL, price="5000.25", size=1)
    await make_client(clock).place_order(ACCT, es, coid="fut-1")
    assert body(post.calls[0].request)["orders"][0]["manualIndicator"] is False


async def test_stock_order_carries_no_manual_indicator(router: respx.MockRouter, clock: FakeClock) -> None:
    post = router.post(ORDERS).respond(200, json=[{"order_id": "9", "order_status": "Submitted"}])
    await make_client(clock).place_order(ACCT, AAPL, coid="stk-1")
    assert "manualIndicator" not in body(post.calls[0].request)["orders"][0]


async def test_lookup_failure_after_lost_response_is_state_unknown(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    post = router.post(ORDERS).mock(side_effect=httpx.ReadTimeout("read timed out"))
    router.get("/iserver/account/orders").respond(400, json={"error": "Bad Request"})
    with pytest.raises(OrderStateUnknown, match="looking it up by cOID failed"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-blind")
    assert post.call_count == 1


async def test_prompt_style_reject_object_is_order_rejected(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """Shape 4 of the OpenAPI spec's oneOf: a single object with text/messageId, not a list."""
    router.post(ORDERS).respond(
        200,
        json={
            "orderId": 0,
            "reqId": "12",
            "dismissable": [],
            "text": "Order rejected - reason: no trading permissions",
            "options": [],
            "type": "msgbox",
            "messageId": "o1234",
            "prompt": False,
        },
    )
    with pytest.raises(OrderRejected, match="no trading permissions"):
        await make_client(clock).place_order(ACCT, AAPL, coid="c-shape4")


async def test_unrecognised_answer_is_looked_up_not_trusted(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.post(ORDERS).respond(200, json=[{"weird": True}])
    router.get("/iserver/account/orders").respond(
        200, json={"orders": [live(5, ACCT, ref="c-odd")], "snapshot": True}
    )
    result = await make_client(clock).place_order(ACCT, AAPL, coid="c-odd")
    assert result.existing and result.order_id == "5"


class Lookup:
    """A CoidLookup that answers from a dict (or raises), counting the questions."""

    def __init__(self, orders: dict[str, FoundOrder] | None = None, error: Exception | None = None) -> None:
        self.orders, self.error, self.asked = orders or {}, error, []

    async def find_by_coid(self, account_id: str, coid: str) -> FoundOrder | None:
        self.asked.append((account_id, coid))
        if self.error is not None:
            raise self.error
        return self.orders.get(coid)


NOT_SENT = [
    UnknownPrompt("declined", message_ids=["o451"], text="Total Value Limit"),
    OrderRejected("IBKR rejected order c1: no permission"),
    RequestFailed("POST /orders: could not connect", method="POST", path="/orders", maybe_sent=False),
]
MAYBE_SENT = [
    OrderStateUnknown("no answer and not in live orders yet"),
    RequestFailed("POST /orders: read timeout", method="POST", path="/orders", maybe_sent=True),
    OrderError("some other order problem"),
    KeyError("order_status"),  # an answer that fails to parse after IBKR accepted the order
    RuntimeError("the task runner lost the result"),
]


def test_only_typed_not_sent_errors_say_the_order_cannot_be_at_ibkr() -> None:
    assert [may_have_reached_ibkr(e) for e in NOT_SENT] == [False] * len(NOT_SENT)
    assert [may_have_reached_ibkr(e) for e in MAYBE_SENT] == [True] * len(MAYBE_SENT)
    # the class decides, not the wording: "already registered" in a refusal is still a refusal
    assert not may_have_reached_ibkr(OrderRejected("Local order ID=c1 is already registered"))


@pytest.mark.parametrize("error", MAYBE_SENT, ids=lambda e: type(e).__name__)
async def test_failed_placement_that_may_have_been_sent_is_found_by_coid(error: Exception) -> None:
    lookup = Lookup({"c1": FoundOrder("987", "Filled", "trades")})
    found = await resolve_failed_placement(lookup, ACCT, "c1", error)
    assert found == FoundOrder("987", "Filled", "trades")
    assert lookup.asked == [(ACCT, "c1")]
    assert await resolve_failed_placement(lookup, ACCT, "c2", error) is None  # not there (yet)


@pytest.mark.parametrize("error", NOT_SENT, ids=lambda e: type(e).__name__)
async def test_failed_placement_that_was_not_sent_is_not_looked_up(error: Exception) -> None:
    lookup = Lookup({"c1": FoundOrder("987", "Submitted", "live orders")})
    assert await resolve_failed_placement(lookup, ACCT, "c1", error) is None
    assert lookup.asked == []


async def test_failed_lookup_after_a_failed_placement_answers_not_found() -> None:
    lookup = Lookup(error=RequestFailed("GET /orders", method="GET", path="/orders", maybe_sent=True))
    assert await resolve_failed_placement(lookup, ACCT, "c1", OrderStateUnknown("lost")) is None
    assert lookup.asked == [(ACCT, "c1")]


async def test_order_desk_finds_its_orders_by_coid_for_the_resolution(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get("/iserver/account/orders").respond(
        200, json={"orders": [live(555, OTHER, ref="c1"), live(777, ACCT, ref="c1", status="Filled")]}
    )
    client = make_client(clock)
    found = await resolve_failed_placement(client.orders, ACCT, "c1", RuntimeError("lost"))
    assert found == FoundOrder("777", "Filled", "live orders")  # never the other account's order
    assert requests_to(router, "POST", ORDERS) == []  # looked up, never sent

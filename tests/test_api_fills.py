"""Fills from /iserver/account/trades, per trades scope, grouped by account, over the real Transport."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from test_api_support import (
    ACCT,
    OTHER,
    body,
    gateway,
    make_client,
    payload,
    requests_to,
    secdef_conids,
    secdef_row,
)

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.errors import ConfigurationError

TRADES = "/iserver/account/trades"


def trade(account: str, execution_id: str, **extra: Any) -> dict[str, Any]:
    row = dict(payload("iserver_account_trades_tax-loss-direct-indexing.json")[0])
    row.update(account=account, accountCode=account, execution_id=execution_id, **extra)
    return row


async def test_real_trades_payload_for_its_account(clock: FakeClock) -> None:
    with gateway(accounts=("DU5822420",)) as router:
        router.get(TRADES).respond(200, json=payload("iserver_account_trades_tax-loss-direct-indexing.json"))
        fills = await make_client(clock).fills(["DU5822420"], days=2)
        assert (requests_to(router, "GET", TRADES)[0]).url.params["days"] == "2"
    result = fills["DU5822420"]
    assert [f.symbol for f in result.items] == ["INTU", "MRK"]
    assert result.items[0].commission == Decimal("1.0")


async def test_fills_of_another_account_are_excluded(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get(TRADES).respond(
        200, json=[trade(ACCT, "a.01.01"), trade(OTHER, "b.01.01"), trade("DU999", "c.01.01")]
    )
    fills = await make_client(clock).fills([ACCT], days=1)
    assert list(fills) == [ACCT]
    assert [f.execution_id for f in fills[ACCT].items] == ["a.01.01"]
    assert all(f.account_id == ACCT for f in fills[ACCT].items)
    assert fills.other_accounts == {OTHER: 1, "DU999": 1}


async def test_login_scope_makes_one_call_for_every_requested_account(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    route = router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01"), trade(OTHER, "b.01.01")])
    fills = await make_client(clock).fills([ACCT, OTHER, "DU5555555"], days=7, scope="login")
    assert route.call_count == 1
    assert "accountId" not in route.calls[0].request.url.params
    assert [f.execution_id for f in fills[OTHER].items] == ["b.01.01"]
    assert fills["DU5555555"].items == []
    assert fills.login_wide == {ACCT, OTHER, "DU5555555"}


def answer_for_account_id(request: httpx.Request) -> httpx.Response:
    """A multi-account login: each request answers only the account it names."""
    account = request.url.params.get("accountId", ACCT)  # ACCT is the selected account
    return httpx.Response(200, json=[trade(account, f"{account}.01.01")])


@pytest.mark.usefixtures("ibkr_pacing")  # virtual time, asserting IBKR's own 1-per-5-s trades limit
async def test_multi_account_login_gets_one_paced_call_per_account(
    router: respx.MockRouter, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an FA master: ``auto`` asks for each account by ``accountId``, at IBKR's 1 per 5 s."""
    route = router.get(TRADES).mock(side_effect=answer_for_account_id)
    started = clock()
    with caplog.at_level("INFO", logger="ibkr_tasks.client.api"):
        fills = await make_client(clock).fills([ACCT, OTHER], days=1)
    assert [c.request.url.params.get("accountId") for c in route.calls] == [ACCT, OTHER]
    assert [f.execution_id for f in fills[ACCT].items] == [f"{ACCT}.01.01"]
    assert [f.execution_id for f in fills[OTHER].items] == [f"{OTHER}.01.01"]
    assert fills.login_wide == set()
    assert clock() - started >= 5.0  # the second trades request waited for IBKR's pacing
    assert "trades 2/2" in caplog.text  # progress is logged


async def test_account_scope_never_makes_a_login_wide_call(clock: FakeClock) -> None:
    with fa_gateway() as router:
        route = router.get(TRADES).mock(side_effect=answer_for_account_id)
        await make_client(clock, trades_scope="account").fills([ACCT, OTHER])
    assert [c.request.url.params.get("accountId") for c in route.calls] == [ACCT, OTHER]


MASTER = "DF1234567"


@contextmanager
def fa_gateway(selected: str = MASTER) -> Iterator[respx.MockRouter]:
    """An FA master login: ``hasChildAccounts`` on the master, its clients name it as ``parent``."""
    with gateway() as router:
        accounts = [MASTER, ACCT, OTHER]
        router.get("/iserver/accounts").respond(
            200,
            json={
                "accounts": accounts,
                "selectedAccount": selected,
                "acctProps": {a: {"hasChildAccounts": a == MASTER} for a in accounts},
            },
        )
        router.get("/portfolio/accounts").respond(
            200,
            json=[
                {"id": a, "accountId": a, "faclient": a != MASTER, "parent": {"accountId": MASTER}}
                for a in accounts
            ],
        )
        yield router


async def test_fa_master_login_gets_one_call_for_its_sub_accounts(clock: FakeClock) -> None:
    with fa_gateway() as router:
        route = router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01"), trade(OTHER, "b.01.01")])
        switch = router.post("/iserver/account").respond(200, json={"set": True})
        fills = await make_client(clock).fills([ACCT, OTHER])
    assert route.call_count == 1 and "accountId" not in route.calls[0].request.url.params
    assert switch.call_count == 0  # the master is already selected
    assert [f.execution_id for f in fills[OTHER].items] == ["b.01.01"]
    assert fills.login_wide == {ACCT, OTHER}


async def test_fa_master_is_selected_before_the_one_call(clock: FakeClock) -> None:
    """A sub-account selected (by an earlier ``accountId``, or by the user): the master is selected
    again first, or the one call would answer for that sub-account only."""
    with fa_gateway(selected=ACCT) as router:
        router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01"), trade(OTHER, "b.01.01")])
        switch = router.post("/iserver/account").respond(200, json={"set": True, "acctId": MASTER})
        await make_client(clock).fills([ACCT, OTHER])
    assert [body(c.request) for c in switch.calls] == [{"acctId": MASTER}]


async def test_rows_without_account_go_to_unattributed(router: respx.MockRouter, clock: FakeClock) -> None:
    orphan = trade(ACCT, "o.01.01")
    del orphan["account"], orphan["accountCode"]
    broken = trade(ACCT, "x.01.01", size="lots")
    router.get(TRADES).respond(200, json=[orphan, broken, trade(ACCT, "ok.01.01")])
    fills = await make_client(clock).fills([ACCT])
    assert [f.execution_id for f in fills[ACCT].items] == ["ok.01.01"]
    assert [r.key for r in fills[ACCT].rejected] == ["x.01.01"]
    assert [r.key for r in fills.unattributed] == ["o.01.01"]
    assert fills.unattributed[0].raw == orphan


@pytest.mark.parametrize("days", [0, 8, -1, True, 1.5, "3"])
async def test_days_must_be_1_to_7(router: respx.MockRouter, clock: FakeClock, days: Any) -> None:
    with pytest.raises(ConfigurationError, match="1 to 7"):
        await make_client(clock).fills([ACCT], days=days)
    assert requests_to(router, "GET", TRADES) == []


async def test_days_always_sent_explicitly(router: respx.MockRouter, clock: FakeClock) -> None:
    route = router.get(TRADES).respond(200, json=[])
    await make_client(clock).fills(ACCT)
    assert route.calls[0].request.url.params["days"] == "1"


async def test_future_multiplier_comes_from_bulk_contract_info(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    fut = trade(ACCT, "f.01.01", sec_type="FUT", conid=495512563, net_amount=None, price="5000.25", size=1)
    router.get(TRADES).respond(200, json=[fut])
    secdef = router["secdef"].respond(
        200, json={"secdef": [secdef_row(495512563, ticker="ES", assetClass="FUT", multiplier=50.0)]}
    )
    client = make_client(clock)
    fills = await client.fills([ACCT])
    assert fills[ACCT].items[0].multiplier == Decimal(50)
    await client.fills([ACCT])
    assert secdef.call_count == 1  # contract info is cached (conids are permanent)
    assert router["contract_info"].call_count == 0


async def test_opt_fill_has_multiplier_100_without_contract_lookup(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    router.get(TRADES).respond(
        200, json=[trade(ACCT, "o.01.01", sec_type="OPT", price="5.5", net_amount=550.0)]
    )
    fills = await make_client(clock).fills([ACCT], resolve_contracts=False)
    assert fills[ACCT].items[0].multiplier == Decimal(100)
    assert not any(
        "/contract/" in str(c.request.url) or "/trsrv/" in str(c.request.url) for c in router.calls
    )


async def test_currency_comes_from_one_bulk_request(router: respx.MockRouter, clock: FakeClock) -> None:
    rows = [
        trade(ACCT, "a.01.01"),
        trade(ACCT, "a.02.01", commission="0.5"),
        trade(ACCT, "m.01.01", conid=70101545),
    ]
    router.get(TRADES).respond(200, json=rows)
    router["secdef"].respond(
        200, json={"secdef": [secdef_row(270662, currency="CAD"), secdef_row(70101545, currency="USD")]}
    )
    fills = await make_client(clock).fills([ACCT])
    assert [(f.currency, f.commission_currency) for f in fills[ACCT].items] == [
        ("CAD", "CAD"),
        ("CAD", "CAD"),
        ("USD", "USD"),
    ]
    (request,) = requests_to(router, "GET", "/trsrv/secdef")
    assert sorted(secdef_conids(request)) == [270662, 70101545]  # each distinct conid once
    assert router["contract_info"].call_count == 0


async def test_unknown_conids_cost_one_bulk_request_per_200(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    rows = [trade(ACCT, f"e{i}.01.01", conid=100 + i) for i in range(450)]
    router.get(TRADES).respond(200, json=rows)
    fills = await make_client(clock).fills([ACCT])
    asked = [secdef_conids(r) for r in requests_to(router, "GET", "/trsrv/secdef")]
    assert [len(a) for a in asked] == [200, 200, 50]
    assert sorted(c for a in asked for c in a) == list(range(100, 550))
    assert router["contract_info"].call_count == 0
    assert {f.currency for f in fills[ACCT].items} == {"USD"} and len(fills[ACCT].items) == 450


async def test_conids_secdef_omits_or_answers_incompletely_are_asked_one_by_one(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    fut = trade(ACCT, "f.01.01", sec_type="FUT", conid=495512563, net_amount=None, price="5000.25", size=1)
    rows = [trade(ACCT, "a.01.01"), trade(ACCT, "b.01.01", conid=14204), fut]
    router.get(TRADES).respond(200, json=rows)
    # 14204 is left out; the future comes without its multiplier (never guessed: asked again)
    router["secdef"].respond(
        200,
        json={
            "secdef": [
                secdef_row(270662, currency="CAD"),
                secdef_row(495512563, assetClass="FUT", multiplier=None),
                secdef_row(999, currency="JPY"),  # a conid nobody asked about is ignored
            ]
        },
    )

    def info(request: httpx.Request, conid: str) -> httpx.Response:
        answers = {
            "14204": {"con_id": 14204, "instrument_type": "STK", "currency": "EUR", "multiplier": None},
            "495512563": {
                "con_id": 495512563,
                "instrument_type": "FUT",
                "currency": "USD",
                "multiplier": "50",
            },
        }
        return httpx.Response(200, json=answers[conid])

    router["contract_info"].mock(side_effect=info)
    client = make_client(clock)
    fills = await client.fills([ACCT])
    got = {f.conid: (f.currency, f.multiplier) for f in fills[ACCT].items}
    assert got == {270662: ("CAD", Decimal(1)), 14204: ("EUR", Decimal(1)), 495512563: ("USD", Decimal(50))}
    asked = sorted(r.url.path.rsplit("/", 2)[-2] for r in requests_to_info(router))
    assert asked == ["14204", "495512563"]
    assert 999 not in client.contracts.cached()


def requests_to_info(router: respx.MockRouter) -> list[httpx.Request]:
    return [c.request for c in router["contract_info"].calls]


async def test_bulk_answer_kept_by_the_ledger_parses_back_the_same(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """What the nightly flow stores (``info.raw``) and parses again next night is the same info."""
    from ibkr_tasks.models import parse_contract_info

    router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01"), trade(ACCT, "y.01.01", conid=713921696)])
    event = secdef_row(
        713921696,
        ticker="FF",
        assetClass="OPT",
        listingExchange="FORECASTX",
        multiplier=1.0,
        putOrCall="C",
        strike="3.125",
        expiry="20991231",
        undConid=658663572,
        isEventContract=True,
    )
    router["secdef"].respond(200, json={"secdef": [secdef_row(270662, currency="CAD"), event]})
    client = make_client(clock)
    await client.fills([ACCT])
    for info in client.contracts.cached().values():
        assert parse_contract_info(info.raw) == info
    ff = client.contracts.cached()[713921696]
    assert (ff.symbol, ff.sec_type, ff.multiplier, ff.is_event_contract) == ("FF", "OPT", Decimal(1), True)
    assert (ff.right, ff.strike, ff.underlying_conid) == ("C", Decimal("3.125"), 658663572)
    assert ff.raw["secdef"] == event  # the answer itself is kept


async def test_remembered_contract_info_is_not_looked_up_again(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """Contract info a caller remembers (the nightly flow: from the ledger) is used as looked up."""
    from ibkr_tasks.models import parse_contract_info

    router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01")])
    client = make_client(clock)
    client.contracts.remember(
        [parse_contract_info({"con_id": 270662, "instrument_type": "STK", "currency": "CAD"})]
    )
    fills = await client.fills([ACCT])
    assert fills[ACCT].items[0].currency == "CAD"
    assert router["secdef"].call_count == 0 and router["contract_info"].call_count == 0
    assert set(client.contracts.cached()) == {270662}


async def test_contract_info_failure_does_not_lose_fills(router: respx.MockRouter, clock: FakeClock) -> None:
    router.get(TRADES).respond(200, json=[trade(ACCT, "a.01.01")])
    router["secdef"].respond(500, json={"error": "Internal Server Error"})
    router["contract_info"].respond(400, json={"error": "Bad Request"})
    fills = await make_client(clock).fills([ACCT])
    (fill,) = fills[ACCT].items
    assert fill.currency is None and fill.commission == Decimal("1.0")
    assert router["contract_info"].call_count == 1  # the bulk failure fell back to the one conid


async def test_one_by_one_lookups_run_concurrently_and_a_timeout_loses_nothing(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    rows = [trade(ACCT, f"e{i}.01.01", conid=100 + i) for i in range(20)]
    router.get(TRADES).respond(200, json=rows)
    router["secdef"].respond(200, json={"secdef": []})  # bulk answers nothing: all one by one

    def info(request: httpx.Request, conid: str) -> httpx.Response:
        if conid == "105":
            raise httpx.ConnectError("down")
        return httpx.Response(200, json={"con_id": int(conid), "instrument_type": "STK", "currency": "USD"})

    router["contract_info"].mock(side_effect=info)
    fills = await make_client(clock).fills([ACCT])
    assert len(fills[ACCT].items) == 20
    by_conid = {f.conid: f.currency for f in fills[ACCT].items}
    assert by_conid[105] is None and by_conid[104] == "USD"

"""The simulator's Flex Web Service: the statement it serves parses with our parser and equals the
simulator's ground truth; polling, throttling, token errors and formats are switchable."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import httpx
import pytest

from ibkr_tasks.client.settings import FlexSettings
from ibkr_tasks.flex import FlexServiceError, FlexTokenError
from ibkr_tasks.flex.parse import parse_flex
from ibkr_tasks.flex.service import FlexPolling, FlexWebService
from ibkr_tasks.flex.times import EASTERN
from ibkr_tasks.sim import create_app
from ibkr_tasks.sim.asgi import SimApp
from ibkr_tasks.sim.entities import Execution
from ibkr_tasks.sim.flex import cash_transactions, default_period, end_of_day, positions_at
from ibkr_tasks.sim.scenario import Scenario
from ibkr_tasks.sim.testing import FakeTime

TOKEN = "sim-flex-token-0001"


def flex_client(app: SimApp, ft: FakeTime, **polling: float) -> FlexWebService:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
    values = {"first_delay": 0.0, "retry_delay": 1.0, "throttle_delay": 10.0, "max_attempts": 6, **polling}
    return FlexWebService(
        FlexSettings(url="http://sim/flex", token=TOKEN, query_id="1234"),
        polling=FlexPolling(**values),  # type: ignore[arg-type]
        sleep=ft.sleep,
        http=http,
    )


async def knobs(app: SimApp, **values: object) -> dict[str, object]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        response = await http.post("/sim/flex", json=values)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def sim() -> tuple[SimApp, FakeTime]:
    ft = FakeTime()
    return create_app(Scenario.demo(), **ft.kwargs()), ft


async def test_statement_equals_the_simulators_ground_truth(sim: tuple[SimApp, FakeTime]) -> None:
    app, ft = sim
    await knobs(app, in_progress_polls=2)
    async with flex_client(app, ft) as flex:
        xml = await flex.fetch()
    assert ft.slept == [0.0, 1.0, 1.5]  # two "generation in progress" answers, then the statement
    book = app.sim.book
    start, end = default_period(app.sim.clock.now())
    response = parse_flex(xml)
    assert [s.account_id for s in response.statements] == [a.account_id for a in book.trading_accounts()]
    cancelled_total = 0
    for statement in response.statements:
        assert not statement.rejected
        acct = book.accounts[statement.account_id or ""]
        truth = [
            e
            for e in acct.entries
            if isinstance(e, Execution) and start <= e.trade_time.astimezone(EASTERN).date() <= end
        ]
        assert truth, "the demo trades every day"
        live = {e.execution_id: e for e in truth if not e.superseded and e.correction is None}
        for e in truth:
            if e.correction is not None:
                live[e.correction.execution_id] = e.correction
        counted = {f.execution_id: f for f in statement.executions if not f.cancelled}
        assert counted.keys() == live.keys()
        for execution_id, fill in counted.items():
            ex = live[execution_id]
            assert fill.signed_quantity == ex.signed_size
            assert fill.price == ex.price and fill.multiplier == ex.inst.multiplier
            assert fill.commission == ex.commission_stages[-1]  # the final commission, as a cost
            assert fill.trade_time == ex.trade_time and fill.conid == ex.inst.conid
        corrected = [f for f in statement.executions if f.cancelled]
        cancelled_total += len(corrected)
        assert {c.cancelled_execution_id for c in statement.cancellations} == {
            f.execution_id for f in corrected
        }
        for fill in corrected:
            fix = next(
                f
                for f in statement.executions
                if f.execution_family == fill.execution_family and f.revision == 2
            )
            assert fix.is_correction and fix.quantity == fill.quantity
        expected_cash = cash_transactions(book, acct, start, end)
        assert [
            (c.transaction_id, c.type, c.amount, c.currency, c.datetime) for c in statement.cash_transactions
        ] == [
            (c["transaction_id"], c["type"], c["amount"], c["currency"], c["datetime"]) for c in expected_cash
        ]
        held = positions_at(book, acct, end_of_day(end))
        assert statement.position_quantities() == {
            (acct.account_id, conid): qty for conid, qty in held.items()
        }
    assert cancelled_total >= 1  # the demo scenario corrects some executions


async def test_cash_transactions_cover_dividends_tax_fees_interest_and_deposits(
    sim: tuple[SimApp, FakeTime],
) -> None:
    app, _ = sim
    book = app.sim.book
    types: set[str] = set()
    for acct in book.trading_accounts():
        rows = cash_transactions(book, acct, date(2026, 9, 1), date(2026, 11, 24))
        types |= {r["type"] for r in rows}
        dividends = [r for r in rows if r["type"] == "Dividends"]
        taxes = [r for r in rows if r["type"] == "Withholding Tax"]
        assert [-(d["amount"] * Decimal("0.15")).quantize(Decimal("0.01")) for d in dividends] == [
            t["amount"] for t in taxes
        ]
        assert len({r["transaction_id"] for r in rows}) == len(rows)
    assert types == {
        "Dividends",
        "Withholding Tax",
        "Other Fees",
        "Broker Interest Received",
        "Deposits/Withdrawals",
    }


async def test_polling_too_fast_gets_1018(sim: tuple[SimApp, FakeTime]) -> None:
    app, ft = sim
    await knobs(app, in_progress_polls=1, min_poll_seconds=5)
    async with flex_client(app, ft) as flex:
        xml = await flex.fetch()
    assert ft.slept == [0.0, 1.0, 10.0]  # 1019, then 1018 (polled after 1 s < 5 s), then the statement
    assert parse_flex(xml).statements


@pytest.mark.parametrize(
    ("code", "error"), [("1012", FlexTokenError), ("1013", FlexTokenError), ("1014", FlexServiceError)]
)
async def test_token_errors_are_switchable(
    sim: tuple[SimApp, FakeTime], code: str, error: type[Exception]
) -> None:
    app, ft = sim
    await knobs(app, token_error=code)
    async with flex_client(app, ft) as flex:
        with pytest.raises(error) as caught:
            await flex.fetch()
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert TOKEN not in str(caught.value)


async def test_wrong_token_is_1015(sim: tuple[SimApp, FakeTime]) -> None:
    app, ft = sim
    await knobs(app, token="another-token-9999")
    async with flex_client(app, ft) as flex:
        with pytest.raises(FlexTokenError, match="1015"):
            await flex.fetch()


async def test_configurable_formats_give_the_same_statement(sim: tuple[SimApp, FakeTime]) -> None:
    app, ft = sim
    await knobs(app, in_progress_polls=0)
    async with flex_client(app, ft) as flex:
        plain = parse_flex(await flex.fetch())
        await knobs(app, date_format="dd/MM/yy", time_format="HH:mm:ss TimeZone", separator=" ")
        other_xml = await flex.fetch()
    assert b" EST" in other_xml
    other = parse_flex(other_xml, date_format="dd/MM/yy")
    for a, b in zip(plain.statements, other.statements, strict=True):
        assert [(f.execution_id, f.trade_time, f.trade_date, f.commission) for f in a.executions] == [
            (f.execution_id, f.trade_time, f.trade_date, f.commission) for f in b.executions
        ]
        assert [(c.key, c.date, c.datetime) for c in a.cash_transactions] == [
            (c.key, c.date, c.datetime) for c in b.cash_transactions
        ]


async def test_date_range_override_and_limit(sim: tuple[SimApp, FakeTime]) -> None:
    app, ft = sim
    await knobs(app, in_progress_polls=0)
    async with flex_client(app, ft) as flex:
        xml = await flex.fetch(from_date=date(2026, 11, 18), to_date=date(2026, 11, 24))
    statement = parse_flex(xml).statements[0]
    assert (statement.from_date, statement.to_date) == (date(2026, 11, 18), date(2026, 11, 24))
    assert {f.trade_date for f in statement.executions} > {date(2026, 11, 24)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        answer = await http.get(
            "/flex/SendRequest", params={"t": TOKEN, "q": "1", "v": "3", "fd": "20250101", "td": "20260101"}
        )
    assert b"<ErrorCode>1003</ErrorCode>" in answer.content

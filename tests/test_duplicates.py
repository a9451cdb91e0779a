"""One execution id (or one conid) twice in one answer: an exact copy is counted once, differing
versions are all quarantined and reported; nothing is dropped without a trace."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from test_api_support import ACCT, OTHER, gateway, make_client
from test_poison_rows import positions_row, trades_row

from ibkr_tasks.client.api import POSITIONS_PAGE_SIZE
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.ledger import Ledger, QuarantineRow
from ibkr_tasks.ledger.testing import make_fill
from ibkr_tasks.models import parse_fills, parse_positions

ACCOUNT = "DU1234567"


def _quarantined(ledger: Ledger) -> list[QuarantineRow]:
    with ledger.session() as session:
        return list(session.scalars(select(QuarantineRow).order_by(QuarantineRow.id)))


def test_an_exact_copy_of_a_trades_row_is_counted_and_booked_once() -> None:
    rows = [trades_row(1), trades_row(2), trades_row(1), trades_row(1)]
    result = parse_fills(rows)
    assert [f.execution_id for f in result.items] == [rows[0]["execution_id"], rows[1]["execution_id"]]
    assert (result.duplicates, result.conflicting, result.rejected) == (2, 0, [])


def test_differing_trades_rows_with_one_execution_id_are_all_quarantined(ledger: Ledger) -> None:
    first, second = trades_row(1, size="10"), trades_row(1, size="12")
    result = parse_fills([first, trades_row(2), second, first])
    assert [f.execution_id for f in result.items] == [trades_row(2)["execution_id"]]
    assert [r.raw for r in result.rejected] == [first, second]
    assert (result.conflicting, result.duplicates) == (2, 1)
    assert all("different contents" in r.reason for r in result.rejected)
    assert {r.key for r in result.rejected} == {first["execution_id"]}

    ingested = ledger.ingest(ACCOUNT, result.items, "run-1", rejected=result.rejected)
    assert (ingested.fills_new, ingested.quarantined) == (1, 2)
    assert [q.raw for q in _quarantined(ledger)] in ([first, second], [second, first])


def test_a_number_and_its_text_are_different_contents() -> None:
    """JSON ``10`` and ``"10"`` (or ``10`` and ``10.0``) are not the same payload: not an exact copy."""
    result = parse_fills([trades_row(1, size=10), trades_row(1, size=10.0)])
    assert (result.items, result.conflicting) == ([], 2)


def test_a_conid_twice_in_the_positions_is_counted_once_or_quarantined(ledger: Ledger) -> None:
    same = parse_positions([positions_row(265598), positions_row(8314), positions_row(265598)], ACCOUNT)
    assert [p.conid for p in same.items] == [265598, 8314]
    assert (same.duplicates, same.conflicting, same.rejected) == (1, 0, [])

    a, b = positions_row(265598, position=10.0), positions_row(265598, position=11.0)
    differing = parse_positions([a, positions_row(8314), b], ACCOUNT)
    assert [p.conid for p in differing.items] == [8314]
    assert [r.raw for r in differing.rejected] == [a, b]
    assert differing.conflicting == 2
    ledger.ingest(ACCOUNT, [], "run-1", rejected=differing.rejected)
    assert len(_quarantined(ledger)) == 2


def test_ingest_books_a_repeated_fill_once_and_quarantines_differing_versions(ledger: Ledger) -> None:
    """Fills handed to the ledger directly (not through the parser) get the same treatment."""
    fills = [make_fill(n=1), make_fill(n=2), make_fill(n=1), make_fill(n=3, price="10"), make_fill(n=3)]
    result = ledger.ingest(ACCOUNT, fills, "run-1")
    assert (result.fills_new, result.duplicates, result.conflicting, result.quarantined) == (2, 1, 2, 2)
    assert {f.execution_id for f in ledger.fills_for(ACCOUNT)} == {
        make_fill(n=1).execution_id,
        make_fill(n=2).execution_id,
    }
    prices = sorted(q.raw["price"] for q in _quarantined(ledger))
    assert prices == ["10", "187.25"]


TRADES = "/iserver/account/trades"


async def test_client_reports_duplicates_per_account() -> None:
    def trade(account: str, n: int, **changes: Any) -> dict[str, Any]:
        return trades_row(n, account=account, accountCode=account, **changes)

    answer = [trade(ACCT, 1), trade(ACCT, 1), trade(OTHER, 2), trade(OTHER, 2, size="3"), trade(OTHER, 3)]
    with gateway() as router:
        router.get(TRADES).respond(200, json=answer)
        fills = await make_client(FakeClock()).fills([ACCT, OTHER])
    assert (len(fills[ACCT].items), fills[ACCT].duplicates, fills[ACCT].conflicting) == (1, 1, 0)
    assert (len(fills[OTHER].items), fills[OTHER].duplicates, fills[OTHER].conflicting) == (1, 0, 2)
    assert [r.raw for r in fills[OTHER].rejected] == [answer[2], answer[3]]


async def test_a_position_repeated_across_pages_is_counted_once() -> None:
    """A row shifting from one page to the next while the positions are walked arrives twice."""
    first = [positions_row(1000 + i, acctId=ACCT) for i in range(POSITIONS_PAGE_SIZE)]
    second = [first[-1], positions_row(5000, acctId=ACCT)]
    with gateway() as router:
        router.get(f"/portfolio/{ACCT}/positions/0").respond(200, json=first)
        router.get(f"/portfolio/{ACCT}/positions/1").respond(200, json=second)
        router.get(url__regex=rf".*/portfolio/{ACCT}/positions/\d+$").mock(
            side_effect=lambda request: httpx.Response(200, json=[])
        )
        result = await make_client(FakeClock()).positions(ACCT)
    assert len(result.items) == POSITIONS_PAGE_SIZE + 1
    assert (result.duplicates, result.rejected) == (1, [])

"""Property-based fuzzing of the trades and positions path: payload -> client parsing -> ledger.

Generated trades answers and positions pages (wrong types, missing keys, huge and non-finite
numbers, unicode, NUL characters and unpaired surrogates, duplicates, rows of other accounts) go
through :class:`IBKRClient` (on an in-memory gateway) and the ledger's ingest, quarantine and
reconcile, on SQLite and PostgreSQL. Properties:

- nothing raises but the refusals the flow expects (``AccountMismatch`` for positions that name
  another account);
- every row received is counted exactly once: booked, rejected (then quarantined), an exact
  duplicate, or a row of an account that was not asked for;
- the ledger then holds exactly the booked fills and positions, and the quarantine exactly the
  distinct rejected rows, each reading back as received; a second ingest changes nothing.

``IBKR_FUZZ_EXAMPLES`` sets the number of examples per database (default 50; ``make chaos`` runs
10,000).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.errors import AccountMismatch
from ibkr_tasks.ledger import FillRow, Ledger, QuarantineRow
from ibkr_tasks.ledger.jsonable import digest
from ibkr_tasks.ledger.schema import Base, PositionSnapshotRow
from ibkr_tasks.models import RejectedRow

ACCOUNT = "DU1234567"
OTHER = "DU7654321"  # asked for too
FOREIGN = "DU5555555"  # another account of the login, not asked for
T_MS = 1_762_093_800_000
EXAMPLES = int(os.environ.get("IBKR_FUZZ_EXAMPLES", "50"))


class Gateway:
    """The part of the Transport the client uses, answering from generated payloads."""

    def __init__(self, trades: Any, positions: Any) -> None:
        self.trades, self.positions = trades, positions

    async def ensure_session(self, allow_competing: bool = False) -> Any:
        return {}

    async def ensure_iserver_accounts(self) -> dict[str, Any]:
        return {"accounts": [ACCOUNT, OTHER, FOREIGN]}

    async def ensure_portfolio_accounts(self) -> list[dict[str, Any]]:
        return [{"id": a, "accountId": a} for a in (ACCOUNT, OTHER, FOREIGN)]

    async def request(self, method: str, path: str, params: Any = None, **_: Any) -> Any:
        if path == "/iserver/account/trades":
            return self.trades
        if path == f"/portfolio/{ACCOUNT}/positions/0":
            return self.positions
        if path.startswith(f"/portfolio/{ACCOUNT}/positions/"):
            return []
        if path == "/trsrv/secdef":  # bulk contract info; every third conid is left to the per-conid lookup
            conids = [int(c) for c in str(params["conids"]).split(",")]
            return {
                "secdef": [
                    {
                        "conid": c,
                        "currency": "USD",
                        "assetClass": ("STK", "FUT", "OPT")[c % 3],
                        "multiplier": "50",
                    }
                    for c in conids
                    if c % 7
                ]
            }
        match = re.fullmatch(r"/iserver/contract/(-?\d+)/info", path)
        if match:
            conid = int(match.group(1))
            kind = ("STK", "FUT", "OPT")[conid % 3]
            return {"con_id": conid, "instrument_type": kind, "currency": "USD", "multiplier": "50"}
        raise AssertionError(f"unexpected request {method} {path}")


# --- strategies -----------------------------------------------------------------------------------

ODD_TEXT = [
    "",
    " ",
    "NaN",
    "Infinity",
    "-1e400",
    "1e999999999",
    "1,000",
    "C1.5",
    "1.2K",
    "a\x00b",
    "\ud800",
    "\uff11\uff12",  # full-width digits
]
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70).map(lambda n: n * (1 if n % 2 else -1)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_TEXT),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
plain_amount = st.decimals(min_value=-(10**6), max_value=10**6, allow_nan=False, places=4).map(str)
edge_amount = st.one_of(
    st.decimals(min_value=-(10**18), max_value=10**18, allow_nan=False, places=3).map(str),
    st.sampled_from(["99999999999999999.9999999999", "100000000000000000", "0.00000000001", "0", "1e-7"]),
    st.floats(min_value=-1e19, max_value=1e19),
)
amount = st.one_of(plain_amount, plain_amount, plain_amount, edge_amount)
conid = st.sampled_from([265598, 8314, 76792991, 495512572, "8314"] * 4 + [2**63 - 1, 2**63, -(2**63) - 1, 0])
account = st.sampled_from([ACCOUNT] * 6 + [OTHER] * 3 + [FOREIGN, "du1234567", "x"])


TRADE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "execution_id": st.one_of(
        st.sampled_from([f"0000{n:04x}.6576fd38.01.0{r}" for n in range(4) for r in (1, 2)]),
        st.text(min_size=1, max_size=70),
    ),
    "account": account,
    "conid": conid,
    "side": st.sampled_from(["B", "S"] * 4 + ["BOT", "SLD", "X", "N", "Q"]),
    "size": amount,
    "price": amount,
    "net_amount": amount,
    "commission": st.one_of(amount, st.sampled_from(["", "NA", "1.00 USD"])),
    "trade_time_r": st.integers(T_MS - 10**9, T_MS + 10**9),
    "trade_time": st.sampled_from(["20251102-14:30:00", "00000000-99:99:99"]),
    "sec_type": st.sampled_from(["STK", "STK", "OPT", "FUT", "CASH", "WAR"]),
    "symbol": st.one_of(st.text(max_size=10), st.text(min_size=60, max_size=70)),
    "exchange": st.text(max_size=40),
    "order_ref": st.one_of(st.none(), st.text(max_size=70)),
    "order_id": st.integers(min_value=0, max_value=10**80),
}
POSITION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "acctId": st.sampled_from([ACCOUNT] * 12 + ["", "not-an-account", OTHER]),
    "conid": st.one_of(st.integers(1, 2**40), st.integers(1, 2**40), conid),  # repeats now and then
    "position": amount,
    "mktPrice": amount,
    "mktValue": amount,
    "avgCost": amount,
    "avgPrice": amount,
    "currency": st.one_of(st.sampled_from(["USD", "EUR", "JPY"]), st.text(max_size=10)),
    "assetClass": st.sampled_from(["STK", "OPT", "FUT", "CASH", "WAR"]),
    "contractDesc": st.one_of(st.text(max_size=20), st.text(min_size=120, max_size=140)),
    "multiplier": st.one_of(st.sampled_from([0.0, None, 1, 100, 50.0]), amount),
}


@st.composite
def payload_row(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> Any:
    if draw(st.integers(0, 29)) == 0:  # not an object at all
        return draw(junk)
    row = {key: draw(strategy) for key, strategy in fields.items()}
    if "account" in row:  # accountCode says the same, now and then something else
        row["accountCode"] = row["account"] if draw(st.integers(0, 9)) else draw(account)
    keys = st.sampled_from(sorted(fields))
    for key in draw(st.sets(keys, max_size=2)):  # values of the wrong kind
        row[key] = draw(junk)
    for key in draw(st.sets(keys, max_size=2)):  # missing keys
        del row[key]
    if draw(st.booleans()):
        row[draw(st.text(max_size=8))] = draw(junk)
    return row


@st.composite
def answer(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> list[Any]:
    rows = draw(st.lists(payload_row(fields), max_size=12))
    if rows:  # exact copies of some rows, anywhere in the answer
        for index in draw(st.lists(st.integers(0, len(rows) - 1), max_size=3)):
            rows.insert(draw(st.integers(0, len(rows))), copy.deepcopy(rows[index]))
    return rows


# --- the property ---------------------------------------------------------------------------------


def _clear(ledger: Ledger) -> None:
    with ledger.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def _count(ledger: Ledger, model: Any, *where: Any) -> int:
    with ledger.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


_runs = itertools.count()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(trades=answer(TRADE_FIELDS), positions=answer(POSITION_FIELDS))
def test_every_row_is_booked_quarantined_or_accounted_for(
    ledger: Ledger, trades: list[Any], positions: list[Any]
) -> None:
    _clear(ledger)
    run_id = f"fuzz-{next(_runs)}"

    async def fetch() -> tuple[Any, Any]:
        client = IBKRClient(Gateway(trades, positions))
        fills = await client.fills([ACCOUNT, OTHER], days=1, scope="login")  # one generated answer
        try:
            held = await client.positions(ACCOUNT)
        except AccountMismatch:
            held = None
        return fills, held

    fills, held = asyncio.run(fetch())

    # Every trades row is counted exactly once.
    assert len(trades) == (
        sum(len(r.items) + len(r.rejected) + r.duplicates for r in fills.values())
        + len(fills.unattributed)
        + fills.unattributed_duplicates
        + sum(fills.other_accounts.values())
    )
    assert FOREIGN not in fills and set(fills) == {ACCOUNT, OTHER}

    booked = sum(len(r.items) for r in fills.values())
    event(f"fills booked: {'none' if not booked else 'some'}")
    event(f"trades duplicates: {'yes' if any(r.duplicates for r in fills.values()) else 'no'}")
    event(f"trades conflicts: {'yes' if any(r.conflicting for r in fills.values()) else 'no'}")
    event(f"positions: {'refused' if held is None else 'some booked' if held.items else 'none booked'}")

    rejected_all: list[RejectedRow] = list(fills.unattributed)
    for account_id, result in fills.items():
        ingested = ledger.ingest(account_id, result.items, run_id, rejected=result.rejected)
        assert ingested.fills_new == len(result.items)
        assert ingested.duplicates == ingested.conflicting == 0  # the parser settled them
        assert ingested.quarantined == len({digest(r.kind, r.account_id, r.raw) for r in result.rejected})
        assert _count(ledger, FillRow, FillRow.account_id == account_id) == len(result.items)
        rejected_all += result.rejected
    ledger.quarantine(fills.unattributed, run_id)

    if held is None:  # refused because a row names another account: nothing of it is used
        assert any(isinstance(row, dict) and row.get("acctId") == OTHER for row in positions)
    else:
        assert len(positions) == len(held.items) + len(held.rejected) + held.duplicates
        ledger.ingest(ACCOUNT, [], run_id, rejected=held.rejected)
        reconciled = ledger.reconcile(ACCOUNT, held.items, run_id)
        assert reconciled.snapshot_rows == len(held.items)
        assert _count(ledger, PositionSnapshotRow) == len({p.conid for p in held.items}) == len(held.items)
        rejected_all += held.rejected

    # The quarantine holds each distinct rejected row once, exactly as received.
    expected = {digest(r.kind, r.account_id, r.raw): r.raw for r in rejected_all}
    with ledger.session() as session:
        stored = {q.row_hash: q.raw for q in session.scalars(select(QuarantineRow))}
    assert set(stored) == set(expected)
    for row_hash, raw in expected.items():
        assert _text(stored[row_hash]) == _text(raw)

    # Ingesting the same answer again changes nothing.
    for account_id, result in fills.items():
        again = ledger.ingest(account_id, result.items, f"{run_id}-again", rejected=result.rejected)
        assert (again.fills_new, again.fills_updated, again.fills_unchanged) == (0, 0, len(result.items))
    assert _count(ledger, QuarantineRow) == len(expected)

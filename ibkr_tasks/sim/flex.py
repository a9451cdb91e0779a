"""The simulator's Flex statements: Activity statements from its ground truth, and the service's knobs.

Statements (``statement_xml``) are built from the simulator's records at the moment they are asked
for, in their final end-of-day state:

- every execution of the period under the execution id ``/iserver/account/trades`` shows, with its
  final commission (``ibCommission`` negative, as IBKR prints it) and ``tradeID``/``transactionID``;
- a corrected execution appears as IBKR shows a correction: the original row, a ``TradeCancel`` row
  pointing back at it through ``origTradeID``, and the ``TradeCorrect`` row (the ``.02`` execution id);
- option expiries and ForecastEx netting are ``BookTrade`` rows;
- cash transactions (dividends with withholding tax, a monthly data fee, interest, a deposit) derived
  deterministically from the seed and the holdings; they are Flex-only: the simulated cash balances
  of the Client Portal endpoints do not include them;
- ``OpenPositions`` at the end of the period (SUMMARY rows), replayed from the executions.

:class:`FlexSim` holds the service's knobs (``SimState.flex``); the endpoints are in
:mod:`ibkr_tasks.sim.api_flex`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ibkr_tasks.sim.catalog import CENT
from ibkr_tasks.sim.entities import ZERO, Account, Execution
from ibkr_tasks.sim.flex_xml import EASTERN, FlexFormat, Section, write_response
from ibkr_tasks.sim.journal import Journal

__all__ = [
    "FlexSim",
    "cash_transactions",
    "default_period",
    "end_of_day",
    "positions_at",
    "statement_xml",
]


@dataclass
class FlexRequest:
    """A SendRequest whose statement has not been fetched yet."""

    query_id: str
    from_date: date | None
    to_date: date | None
    polls: int = 0
    body: bytes | None = None


@dataclass
class FlexSim:
    """The Flex service's knobs and its outstanding reference codes (``SimState.flex``)."""

    token: str = ""
    token_error: str | None = None
    in_progress_polls: int = 1
    min_poll_seconds: float = 0.0
    date_format: str = "yyyyMMdd"
    time_format: str = "HHmmss"
    separator: str = ";"
    query_ids: list[str] = field(default_factory=list)
    requests: dict[str, FlexRequest] = field(default_factory=dict)
    last_poll: float | None = None
    counter: int = 0
    polls: int = 0

    def knobs(self) -> dict[str, Any]:
        return {
            "token": "***" if self.token else "",
            "token_error": self.token_error,
            "in_progress_polls": self.in_progress_polls,
            "min_poll_seconds": self.min_poll_seconds,
            "date_format": self.date_format,
            "time_format": self.time_format,
            "separator": self.separator,
            "query_ids": self.query_ids,
            "outstanding": len(self.requests),
            "polls": self.polls,
        }

    @property
    def format(self) -> FlexFormat:
        return FlexFormat(self.date_format, self.time_format, self.separator)


# ---------------------------------------------------------------------------------- statements
def default_period(now: datetime) -> tuple[date, date]:
    """The last complete US/Eastern business day before ``now``: what a daily Activity query covers."""
    day = now.astimezone(EASTERN).date() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day, day


def _eastern_day(when: datetime) -> date:
    return when.astimezone(EASTERN).date()


def end_of_day(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=EASTERN).astimezone(UTC)


def _ids(execution_id: str) -> tuple[str, str]:
    """(tradeID, transactionID): stable numbers derived from the execution id."""
    digest = int(hashlib.sha256(execution_id.encode()).hexdigest()[:12], 16)
    return str(1_000_000_000 + digest % 8_000_000_000), str(20_000_000_000 + digest % 70_000_000_000)


def _trade_rows(fmt: FlexFormat, acct: Account, ex: Execution) -> Iterator[tuple[str, dict[str, str]]]:
    inst = ex.inst
    trade_id, transaction_id = _ids(ex.execution_id)
    signed = ex.signed_size
    money = signed * ex.price * inst.multiplier
    commission = ex.final_commission
    day = _eastern_day(ex.trade_time)
    booked = ex.side in ("X", "N")
    row = {
        "accountId": acct.account_id,
        "currency": inst.currency,
        "assetCategory": inst.sec_type,
        "symbol": inst.symbol,
        "description": inst.company_name,
        "conid": str(inst.conid),
        "underlyingConid": str(inst.underlying_conid or ""),
        "multiplier": str(inst.multiplier),
        "strike": str(inst.strike or ""),
        "expiry": fmt.date(inst.expiry),
        "putCall": inst.right or "",
        "reportDate": fmt.date(day),
        "tradeDate": fmt.date(day),
        "dateTime": fmt.datetime(ex.trade_time),
        "settleDateTarget": fmt.date(day + timedelta(days=1 if inst.sec_type != "STK" else 2)),
        "transactionType": "BookTrade" if booked else "ExchTrade",
        "exchange": ex.exchange,
        "quantity": str(signed),
        "tradePrice": str(ex.price),
        "tradeMoney": str(money),
        "proceeds": str(-money),
        "taxes": "0",
        "ibCommission": str(-commission),
        "ibCommissionCurrency": inst.currency,
        "netCash": str(-money - commission),
        "openCloseIndicator": "",
        "notes": "Ep" if ex.side == "X" else "",
        "transactionID": transaction_id,
        "buySell": "BUY" if signed > 0 else "SELL",
        "ibOrderID": str(ex.order_id or ""),
        "ibExecID": ex.execution_id,
        "tradeID": trade_id,
        "origTradeID": "",
        "orderReference": ex.order_ref or "",
        "levelOfDetail": "EXECUTION",
    }
    return_rows = [("Trade", row)]
    fix = ex.correction
    if ex.superseded or fix is not None:
        # A corrected execution, as the end-of-day statement shows it: cancel the original, book the fix.
        cancel = dict(row)
        cancel.update(
            {
                "transactionType": "TradeCancel",
                "quantity": str(-signed),
                "tradeMoney": str(-money),
                "proceeds": str(money),
                "ibCommission": str(commission),
                "netCash": str(money + commission),
                "notes": "Ca",
                "buySell": ("SELL" if signed > 0 else "BUY") + " (Ca.)",
                "ibExecID": "",
                "tradeID": "",
                "transactionID": _ids(ex.execution_id + "|cancel")[1],
                "origTradeID": trade_id,
                "origTransactionID": transaction_id,
                "origOrderID": str(ex.order_id or "0"),
                "origTradePrice": str(ex.price),
                "origTradeDate": fmt.date(day),
            }
        )
        return_rows.append(("Trade", cancel))
    yield from return_rows


def _correction_of(book: Journal, ex: Execution) -> Execution | None:
    if ex.correction is not None:
        return ex.correction
    if ex.superseded:
        return book.executions.get(ex.execution_id[:-2] + "02")
    return None


def _executions(book: Journal, acct: Account, start: date, end: date) -> Iterator[Execution]:
    for entry in acct.entries:
        if isinstance(entry, Execution) and start <= _eastern_day(entry.trade_time) <= end:
            if entry.execution_id.endswith(".02") and entry.execution_id[:-2] + "01" in book.executions:
                continue  # a published correction: rendered beside its original
            yield entry


def _trades(
    book: Journal, fmt: FlexFormat, acct: Account, start: date, end: date
) -> Iterator[tuple[str, dict[str, str]]]:
    for ex in _executions(book, acct, start, end):
        yield from _trade_rows(fmt, acct, ex)
        fix = _correction_of(book, ex)
        if fix is not None:
            for element, row in _trade_rows(fmt, acct, fix):
                row.update({"transactionType": "TradeCorrect", "notes": "Co"})
                yield element, row


def _hash(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def cash_transactions(book: Journal, acct: Account, start: date, end: date) -> list[dict[str, Any]]:
    """The period's cash transactions of ``acct`` (deterministic: the same seed gives the same rows).

    Each is ``{"transaction_id", "type", "amount", "currency", "date", "datetime", "description",
    "conid", "symbol"}`` with Decimal amounts and aware UTC datetimes.
    """
    seed = book.scenario.seed
    rows: list[dict[str, Any]] = []
    day = start
    while day <= end:
        if day.weekday() < 5:
            at = datetime.combine(day, time(20, 20), tzinfo=EASTERN).astimezone(UTC)
            for conid in sorted(acct.positions):
                inst = book.catalog.by_conid[conid]
                qty = acct.positions[conid].qty
                if inst.sec_type != "STK" or qty <= 0 or _hash(seed, acct.account_id, conid, day) % 23:
                    continue
                per_share = (inst.base_price * Decimal("0.004")).quantize(CENT) or CENT
                gross = (qty * per_share).quantize(CENT)
                tax = -(gross * Decimal("0.15")).quantize(CENT)
                text = f"{inst.symbol} CASH DIVIDEND {inst.currency} {per_share} PER SHARE"
                for kind, amount, desc in (
                    ("Dividends", gross, text),
                    ("Withholding Tax", tax, f"{text} - US TAX"),
                ):
                    rows.append(
                        _cash(seed, acct, day, at, kind, amount, inst.currency, desc, inst.conid, inst.symbol)
                    )
            first_business = day.day <= 3 and all(
                (day - timedelta(days=n)).weekday() >= 5 for n in range(1, day.day)
            )
            if first_business:
                rows.append(
                    _cash(seed, acct, day, at, "Other Fees", Decimal("-10.00"), "USD", "MARKET DATA FEE")
                )
                interest = Decimal(_hash(seed, acct.account_id, day, "int") % 5000) / 100
                rows.append(
                    _cash(seed, acct, day, at, "Broker Interest Received", interest, "USD", "USD CREDIT INT")
                )
            if _hash(seed, acct.account_id, day, "dep") % 17 == 0:
                amount = Decimal(1000 * (1 + _hash(seed, acct.account_id, day, "amt") % 20))
                rows.append(
                    _cash(seed, acct, day, at, "Deposits/Withdrawals", amount, "USD", "CASH RECEIPTS")
                )
        day += timedelta(days=1)
    return rows


def _cash(
    seed: int,
    acct: Account,
    day: date,
    at: datetime,
    kind: str,
    amount: Decimal,
    currency: str,
    description: str,
    conid: int | None = None,
    symbol: str | None = None,
) -> dict[str, Any]:
    return {
        "transaction_id": str(
            30_000_000_000 + _hash(seed, acct.account_id, day, kind, conid) % 60_000_000_000
        ),
        "type": kind,
        "amount": amount,
        "currency": currency,
        "date": day,
        "datetime": at,
        "description": description,
        "conid": conid,
        "symbol": symbol,
    }


def _cash_rows(
    fmt: FlexFormat, acct: Account, rows: list[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, str]]]:
    for row in rows:
        yield (
            "CashTransaction",
            {
                "accountId": acct.account_id,
                "currency": row["currency"],
                "assetCategory": "STK" if row["conid"] else "",
                "symbol": row["symbol"] or "",
                "description": row["description"],
                "conid": str(row["conid"] or ""),
                "dateTime": fmt.datetime(row["datetime"]),
                "settleDate": fmt.date(row["date"]),
                "amount": str(row["amount"]),
                "type": row["type"],
                "transactionID": row["transaction_id"],
                "reportDate": fmt.date(row["date"]),
                "levelOfDetail": "DETAIL",
            },
        )


def positions_at(book: Journal, acct: Account, end: datetime) -> dict[int, Decimal]:
    """Quantities held at ``end``: today's positions minus the executions traded after it."""
    held = {conid: pos.qty for conid, pos in acct.positions.items()}
    for entry in reversed(acct.entries):
        if entry.trade_time < end:
            break
        if isinstance(entry, Execution) and not entry.superseded:
            held[entry.inst.conid] = held.get(entry.inst.conid, ZERO) - entry.signed_size
    return {conid: qty for conid, qty in held.items() if qty != 0}


def _position_rows(
    book: Journal, fmt: FlexFormat, acct: Account, end: date
) -> Iterator[tuple[str, dict[str, str]]]:
    close = end_of_day(end)
    for conid, qty in sorted(positions_at(book, acct, close).items()):
        inst = book.catalog.by_conid[conid]
        mark = book.catalog.mid(inst, close - timedelta(seconds=1))
        yield (
            "OpenPosition",
            {
                "accountId": acct.account_id,
                "currency": inst.currency,
                "assetCategory": inst.sec_type,
                "symbol": inst.symbol,
                "description": inst.company_name,
                "conid": str(conid),
                "multiplier": str(inst.multiplier),
                "reportDate": fmt.date(end),
                "position": str(qty),
                "markPrice": str(mark),
                "positionValue": str((qty * mark * inst.multiplier).quantize(CENT)),
                "side": "Long" if qty > 0 else "Short",
                "levelOfDetail": "SUMMARY",
            },
        )


def statement_xml(
    book: Journal,
    now: datetime,
    fmt: FlexFormat | None = None,
    *,
    from_date: date | None = None,
    to_date: date | None = None,
    accounts: list[str] | None = None,
) -> bytes:
    """An Activity Flex response with one statement per trading account for ``[from_date, to_date]``
    (default: the last complete business day), as the simulator's ground truth stands at ``now``."""
    fmt = fmt or FlexFormat()
    start, end = (from_date, to_date) if from_date and to_date else default_period(now)
    chosen = [a for a in book.trading_accounts() if accounts is None or a.account_id in accounts]
    out = io.StringIO()
    statements = []
    for acct in chosen:
        header = {
            "accountId": acct.account_id,
            "fromDate": fmt.date(start),
            "toDate": fmt.date(end),
            "period": "LastBusinessDay" if start == end else "",
            "whenGenerated": fmt.datetime(now.replace(microsecond=0)),
        }
        sections = [
            Section("Trades", _trades(book, fmt, acct, start, end)),
            Section("CashTransactions", _cash_rows(fmt, acct, cash_transactions(book, acct, start, end))),
            Section("OpenPositions", _position_rows(book, fmt, acct, end)),
        ]
        statements.append((header, sections))
    write_response(out, query_name="ibkr-tasks simulator", query_type="AF", statements=statements)
    return out.getvalue().encode()

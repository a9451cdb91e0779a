"""Read Flex XML (Activity and Trade Confirmation statements) into :mod:`ibkr_tasks.flex.models`.

Streaming: :func:`iter_flex` walks the document with :func:`xml.etree.ElementTree.iterparse` and
discards every row once it is read, so memory does not grow with the statement;
:func:`parse_flex` collects everything into one :class:`FlexResponse`.

Rules (each has a test in ``tests/test_flex_parse.py``; docs/flex.md explains them):

- Every ``FlexStatement`` of a response is read (one per account; repeated ones too).
- Only ``Trade`` / ``TradeConfirm`` rows at ``levelOfDetail`` ``EXECUTION`` (or none printed) are
  fills. ``SymbolSummary``, ``AssetSummary``, ``Order``, ``Lot`` rows and other levels are counted in
  ``skipped``, never as fills.
- ``TradeCancel`` rows (``buySell`` ``SELL (Ca.)``) are :class:`FlexCancellation`; :func:`parse_flex`
  marks the fill they name (``origTradeID`` = its ``tradeID``) ``cancelled``.
- ``ibCommission`` / ``commission`` are negative in Flex; the models hold the positive cost.
- Multipliers come from the row's ``multiplier``; a fill without one is rejected, not guessed.
- Any attribute may be missing or new: unknown attributes are kept in ``raw``, never an error.
- A row that cannot be read becomes a :class:`~ibkr_tasks.models.common.RejectedRow` whose ``raw`` is
  ``{"element": ..., "attributes": {...}}``; the rest goes through. Input that is not a Flex response
  raises :class:`FlexParseError` saying where.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.errors import ConfigurationError
from ibkr_tasks.flex.errors import FlexParseError
from ibkr_tasks.flex.models import (
    FlexCancellation,
    FlexCashTransaction,
    FlexExecution,
    FlexOpenPosition,
    FlexResponse,
    FlexStatement,
    FlexStatementKind,
    row_digest,
)
from ibkr_tasks.flex.times import EASTERN, AmbiguousDate, FlexDateReader, slash_order_evidence
from ibkr_tasks.models.common import RejectedRow
from ibkr_tasks.models.fills import split_execution_id
from ibkr_tasks.models.numbers import parse_decimal

__all__ = ["FlexRow", "FlexSource", "iter_flex", "parse_flex"]

FlexSource = bytes | str | os.PathLike[str] | IO[bytes]
"""Flex XML as bytes, a path (``str`` or ``Path``; a ``str`` starting with ``<`` is XML text), or a
binary file object."""

FlexRow = FlexExecution | FlexCancellation | FlexCashTransaction | FlexOpenPosition | RejectedRow

_EXECUTION_ELEMENTS = {"Trade": "activity", "TradeConfirm": "trade_confirmation"}
_CANCEL_TYPES = {"TRADECANCEL", "FRACSHARECANCEL"}
_CORRECT_TYPES = {"TRADECORRECT"}
_NOT_DATES = {"", "MULTI", "N/A"}
_SIDE: dict[str, Literal["B", "S"]] = {"BUY": "B", "SELL": "S", "BOT": "B", "SLD": "S", "B": "B", "S": "S"}
_CHUNK = 1 << 16
_CONTAINERS = {"FlexQueryResponse", "FlexStatements"}


@dataclass
class _StatementState:
    header: FlexStatement
    occurrences: dict[tuple[str, str], int] = field(default_factory=dict)


def _text(attrs: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = attrs.get(name)
        if value is not None and value.strip() not in ("", "N/A"):
            return value.strip()
    return None


def _decimal(attrs: Mapping[str, str], *names: str) -> Decimal | None:
    for name in names:
        value = attrs.get(name)
        if value is not None and value.strip() != "":
            try:
                return parse_decimal(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    return None


def _required_decimal(attrs: Mapping[str, str], *names: str) -> Decimal:
    value = _decimal(attrs, *names)
    if value is None:
        raise ValueError(f"row has no {' / '.join(names)}")
    return value


def _int(attrs: Mapping[str, str], name: str) -> int | None:
    value = _text(attrs, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an integer") from None


def _conid(attrs: Mapping[str, str]) -> int:
    conid = _int(attrs, "conid")
    if conid is None:
        raise ValueError("row has no conid")
    return conid


def _cost(value: Decimal | None) -> Decimal | None:
    """Flex's signed commission (negative = charged) -> the models' cost (positive = charged)."""
    if value is None:
        return None
    cost = -value
    return abs(cost) if cost == 0 else cost  # no "-0"


def _codes(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(";") if part.strip())


class _Reader:
    """Turns one element's attributes into a model, with the response's date reader."""

    def __init__(self, dates: FlexDateReader, rescan: Callable[[], set[bool]] | None) -> None:
        self.dates = dates
        self._rescan = rescan

    def _with_order(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except AmbiguousDate:
            if self._rescan is None or self.dates.day_first is not None:
                raise
            self.dates.learn(self._rescan())
            self._rescan = None
            return read()

    def date(self, attrs: Mapping[str, str], *names: str) -> date | None:
        for name in names:
            value = attrs.get(name)
            if value is not None and value.strip().upper() not in _NOT_DATES:
                try:
                    return self._with_order(partial(self.dates.date, value))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return None

    def datetime(self, attrs: Mapping[str, str], name: str) -> Any:
        value = attrs.get(name)
        if value is None or value.strip().upper() in _NOT_DATES:
            return None
        try:
            return self._with_order(partial(self.dates.datetime, value))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    def trade_time(self, attrs: Mapping[str, str], trade_date: dt.date | None) -> tuple[Any, dt.date | None]:
        """(aware UTC trade time or None, trade date) from ``dateTime``, else ``tradeDate`` + ``tradeTime``."""
        stamp = self.datetime(attrs, "dateTime")
        if stamp is not None and stamp.at is not None:
            return stamp.at, trade_date or stamp.date
        day = trade_date or (stamp.date if stamp is not None else None)
        clock = _text(attrs, "tradeTime")
        if day is not None and clock is not None:
            try:
                return self.dates.combine(day, clock), day
            except ValueError as exc:
                raise ValueError(f"tradeTime: {exc}") from None
        return None, day


def _account(attrs: Mapping[str, str], statement: FlexStatement) -> str:
    value = _text(attrs, "accountId")
    if value is None:
        if statement.account_id is None:
            raw = statement.raw.get("accountId")
            raise ValueError(
                f"row has no accountId and the statement's accountId {raw!r} is not an account id"
            )
        return statement.account_id
    try:
        return validate_account_id(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def _side(attrs: Mapping[str, str], quantity: Decimal, *, cancel: bool) -> Literal["B", "S"]:
    text = (_text(attrs, "buySell") or "").upper()
    text = text.replace("(CA.)", "").replace("(CA)", "").strip()
    if not text:
        if quantity == 0:
            raise ValueError("row has no buySell and a zero quantity")
        return "B" if quantity > 0 else "S"
    side = _SIDE.get(text)
    if side is None:
        raise ValueError(f"buySell {attrs.get('buySell')!r} is not BUY or SELL")
    if not cancel and quantity and (quantity > 0) != (side == "B"):
        raise ValueError(f"buySell {attrs.get('buySell')!r} contradicts quantity {attrs.get('quantity')!r}")
    return side


def _is_cancel(attrs: Mapping[str, str]) -> bool:
    kind = (attrs.get("transactionType") or "").strip().upper()
    side = (attrs.get("buySell") or "").upper()
    return kind in _CANCEL_TYPES or "(CA" in side


class _Parser:
    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def _occurrence(
        self, state: _StatementState, element: str, attrs: Mapping[str, str], account: str
    ) -> int:
        digest = row_digest(element, attrs, account_id=account)
        seen = state.occurrences.get((element, digest), 0)
        state.occurrences[(element, digest)] = seen + 1
        return seen

    def execution(
        self, tag: str, attrs: dict[str, str], state: _StatementState
    ) -> FlexExecution | FlexCancellation:
        statement = state.header
        account = _account(attrs, statement)
        source: FlexStatementKind = _EXECUTION_ELEMENTS[tag]  # type: ignore[assignment]
        tc = source == "trade_confirmation"
        quantity = _required_decimal(attrs, "quantity")
        trade_date = self.reader.date(attrs, "tradeDate")
        trade_time, trade_date = self.reader.trade_time(attrs, trade_date)
        commission = _cost(_decimal(attrs, "commission" if tc else "ibCommission"))
        commission_currency = _text(attrs, "commissionCurrency" if tc else "ibCommissionCurrency")
        if _is_cancel(attrs):
            side = _side(attrs, quantity, cancel=True)
            occurrence = (
                0 if _text(attrs, "transactionID") else self._occurrence(state, "cancel", attrs, account)
            )
            return FlexCancellation(
                account_id=account,
                raw=attrs,
                occurrence=occurrence,
                transaction_id=_text(attrs, "transactionID"),
                orig_trade_id=_text(attrs, "origTradeID"),
                orig_transaction_id=_text(attrs, "origTransactionID"),
                orig_order_id=_text(attrs, "origOrderID") if _text(attrs, "origOrderID") != "0" else None,
                orig_trade_date=self.reader.date(attrs, "origTradeDate"),
                orig_trade_price=_decimal(attrs, "origTradePrice"),
                transaction_type=_text(attrs, "transactionType"),
                conid=_conid(attrs),
                symbol=_text(attrs, "symbol"),
                sec_type=_text(attrs, "assetCategory"),
                side=side,
                quantity=abs(quantity),
                price=_decimal(attrs, "price" if tc else "tradePrice"),
                multiplier=_decimal(attrs, "multiplier"),
                proceeds=_decimal(attrs, "proceeds"),
                net_cash=_decimal(attrs, "netCash"),
                currency=_text(attrs, "currency"),
                commission=commission,
                commission_currency=commission_currency,
                trade_time=trade_time,
                trade_date=trade_date,
                report_date=self.reader.date(attrs, "reportDate"),
                source=source,
            )
        if trade_date is None:
            raise ValueError("row has no tradeDate or dateTime")
        side = _side(attrs, quantity, cancel=False)
        multiplier = _decimal(attrs, "multiplier")
        if multiplier is None or multiplier <= 0:
            raise ValueError(
                f"multiplier {attrs.get('multiplier')!r} is missing or not positive; the statement must print it "
                "(it is never guessed)"
            )
        currency = _text(attrs, "currency")
        if currency is None:
            raise ValueError("row has no currency")
        execution_id = _text(attrs, "execID" if tc else "ibExecID")
        family, revision = split_execution_id(execution_id) if execution_id else (None, None)
        ids = execution_id or _text(attrs, "tradeID") or _text(attrs, "transactionID")
        kind = (_text(attrs, "transactionType") or "").upper()
        notes = _codes(attrs.get("code" if tc else "notes"))
        return FlexExecution(
            account_id=account,
            raw=attrs,
            occurrence=0 if ids else self._occurrence(state, "execution", attrs, account),
            execution_id=execution_id,
            execution_family=family,
            revision=revision,
            trade_id=_text(attrs, "tradeID"),
            transaction_id=_text(attrs, "transactionID"),
            orig_trade_id=_text(attrs, "origTradeID"),
            transaction_type=_text(attrs, "transactionType"),
            conid=_conid(attrs),
            symbol=_text(attrs, "symbol"),
            description=_text(attrs, "description"),
            sec_type=_text(attrs, "assetCategory"),
            underlying_conid=_int(attrs, "underlyingConid"),
            underlying_symbol=_text(attrs, "underlyingSymbol"),
            side=side,
            quantity=abs(quantity),
            price=_required_decimal(attrs, "price" if tc else "tradePrice"),
            multiplier=multiplier,
            trade_money=_decimal(attrs, "amount" if tc else "tradeMoney"),
            proceeds=_decimal(attrs, "proceeds"),
            net_cash=_decimal(attrs, "netCash"),
            currency=currency,
            commission=commission,
            commission_currency=commission_currency or (currency if commission is not None else None),
            taxes=_decimal(attrs, "tax" if tc else "taxes"),
            trade_time=trade_time,
            trade_date=trade_date,
            report_date=self.reader.date(attrs, "reportDate"),
            settle_date=self.reader.date(attrs, "settleDate" if tc else "settleDateTarget"),
            order_ref=_text(attrs, "orderReference"),
            order_id=_text(attrs, "orderID" if tc else "ibOrderID"),
            exchange=_text(attrs, "exchange"),
            open_close=_text(attrs, "openCloseIndicator"),
            notes=notes,
            level_of_detail=_text(attrs, "levelOfDetail"),
            is_correction=kind in _CORRECT_TYPES or "Co" in notes,
            source=source,
        )

    def cash(self, attrs: dict[str, str], state: _StatementState) -> FlexCashTransaction:
        account = _account(attrs, state.header)
        kind = _text(attrs, "type")
        if kind is None:
            raise ValueError("row has no type")
        currency = _text(attrs, "currency")
        if currency is None:
            raise ValueError("row has no currency")
        stamp = self.reader.datetime(attrs, "dateTime")
        report_date = self.reader.date(attrs, "reportDate")
        day = stamp.date if stamp is not None else report_date or self.reader.date(attrs, "settleDate")
        if day is None:
            raise ValueError("row has no dateTime, reportDate or settleDate")
        transaction_id = _text(attrs, "transactionID")
        return FlexCashTransaction(
            account_id=account,
            raw=attrs,
            occurrence=0 if transaction_id else self._occurrence(state, "cash", attrs, account),
            transaction_id=transaction_id,
            type=kind,
            amount=_required_decimal(attrs, "amount"),
            currency=currency,
            date=day,
            datetime=stamp.at if stamp is not None else None,
            report_date=report_date,
            settle_date=self.reader.date(attrs, "settleDate"),
            description=_text(attrs, "description"),
            conid=_int(attrs, "conid"),
            symbol=_text(attrs, "symbol"),
            sec_type=_text(attrs, "assetCategory"),
            trade_id=_text(attrs, "tradeID"),
            action_id=_text(attrs, "actionID"),
            level_of_detail=_text(attrs, "levelOfDetail"),
        )

    def position(self, attrs: dict[str, str], state: _StatementState) -> FlexOpenPosition:
        account = _account(attrs, state.header)
        report_date = self.reader.date(attrs, "reportDate") or state.header.to_date
        if report_date is None:
            raise ValueError("row has no reportDate and the statement has no toDate")
        multiplier = _decimal(attrs, "multiplier")
        if multiplier is None or multiplier <= 0:
            raise ValueError(f"multiplier {attrs.get('multiplier')!r} is missing or not positive")
        return FlexOpenPosition(
            account_id=account,
            raw=attrs,
            report_date=report_date,
            conid=_conid(attrs),
            symbol=_text(attrs, "symbol"),
            description=_text(attrs, "description"),
            sec_type=_text(attrs, "assetCategory"),
            quantity=_required_decimal(attrs, "position"),
            multiplier=multiplier,
            mark_price=_decimal(attrs, "markPrice"),
            position_value=_decimal(attrs, "positionValue"),
            cost_basis_money=_decimal(attrs, "costBasisMoney"),
            currency=_text(attrs, "currency"),
            level_of_detail=_text(attrs, "levelOfDetail"),
        )


_ROW_KINDS = {
    "Trade": "flex_execution",
    "TradeConfirm": "flex_execution",
    "CashTransaction": "flex_cash_transaction",
}
_ROW_KINDS["OpenPosition"] = "flex_open_position"


def _rejection(
    tag: str, attrs: Mapping[str, str], statement: FlexStatement | None, reason: str
) -> RejectedRow:
    account: str | None
    try:
        account = validate_account_id(attrs.get("accountId") or "") if attrs.get("accountId") else None
    except ConfigurationError:
        account = None
    if account is None and statement is not None and not attrs.get("accountId"):
        account = statement.account_id
    key = _text(attrs, "ibExecID", "execID", "transactionID", "tradeID")
    kind = _ROW_KINDS.get(tag, "flex_row")
    if kind == "flex_execution" and _is_cancel(attrs):
        kind = "flex_cancellation"
    return RejectedRow(
        kind=kind, account_id=account, key=key, reason=reason, raw={"element": tag, "attributes": dict(attrs)}
    )


def _open(source: FlexSource) -> tuple[IO[bytes], bool, str | None]:
    """(binary stream, whether we opened it, a name for messages)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True, None
    if isinstance(source, str) and source.lstrip()[:1] == "<":
        return io.BytesIO(source.encode("utf-8")), True, None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            return path.open("rb"), True, str(path)
        except OSError as exc:
            raise FlexParseError(f"cannot open the file: {exc.strerror or exc}", source=str(path)) from None
    if hasattr(source, "read"):
        return (
            source,
            False,
            getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else None,
        )
    raise TypeError(f"expected Flex XML as bytes, str, a path or a binary file, got {type(source).__name__}")


def _scanner(stream: IO[bytes]) -> Callable[[], set[bool]] | None:
    """A function that reads the whole stream once more, chunk by chunk, for slash-date evidence
    (only called when a slash date is ambiguous), then puts the stream back where it was."""
    if not getattr(stream, "seekable", lambda: False)():
        return None

    def scan() -> set[bool]:
        position = stream.tell()
        stream.seek(0)
        found: set[bool] = set()
        tail = b""
        try:
            while chunk := stream.read(_CHUNK):
                text = (tail + chunk).decode("utf-8", "replace")
                found |= slash_order_evidence(text)
                tail = chunk[-16:]
        finally:
            stream.seek(position)
        return found

    return scan


def _where(path: list[str]) -> str:
    return "/".join(path) if path else "the start of the document"


def iter_flex(
    source: FlexSource,
    *,
    source_name: str | None = None,
    date_format: str | None = None,
    on_response: Callable[[FlexResponse], None] | None = None,
) -> Iterator[tuple[FlexStatement, FlexRow | None]]:
    """Stream a Flex response: yields ``(statement header, row)`` for every row of every statement,
    then ``(statement header, None)`` when that statement ends (also for a statement without rows).

    The header is a :class:`FlexStatement` without rows (its ``skipped`` counts grow while the
    statement is read, and are complete at its end marker). Rows are
    :class:`FlexExecution`, :class:`FlexCancellation`, :class:`FlexCashTransaction`,
    :class:`FlexOpenPosition` or :class:`RejectedRow`. ``on_response`` is called once with the
    response header (query name, type, declared count) before the first row.

    ``date_format`` is the query's Date Format (e.g. ``"dd/MM/yyyy"``); needed only when the
    statement uses slash dates that nothing in it disambiguates. Raises :class:`FlexParseError` when
    the input is not a Flex response (the rows yielded until then were read correctly).
    """
    stream, opened, name = _open(source)
    name = source_name or name
    dates = FlexDateReader(date_format, zone=EASTERN)
    parser = _Parser(_Reader(dates, _scanner(stream)))
    path: list[str] = []
    elements: list[ET.Element] = []
    state: _StatementState | None = None
    response_skipped: dict[str, int] = {}
    response: FlexResponse | None = None
    try:
        try:
            # The standard library's expat refuses entity-expansion bombs (expat >= 2.4.1) and never
            # fetches external entities, which is what defusedxml would add here.
            events = ET.iterparse(stream, events=("start", "end"))  # noqa: S314
            for event, element in events:
                tag = element.tag
                if event == "start":
                    path.append(tag)
                    elements.append(element)
                    depth = len(path)
                    if depth == 1:
                        if tag == "FlexStatementResponse":
                            raise FlexParseError(
                                "this is a Flex Web Service status answer, not a statement",
                                where=_where(path),
                                source=name,
                            )
                        if tag != "FlexQueryResponse":
                            raise FlexParseError(
                                f"the root element is <{tag}>, not <FlexQueryResponse>: not a Flex statement",
                                where=_where(path),
                                source=name,
                            )
                    elif tag == "FlexStatements" and depth == 2 and response is None:
                        response = _response_header(elements[0], element)
                        if on_response is not None:
                            on_response(response)
                    elif tag == "FlexStatement":
                        state = _StatementState(_statement_header(element, dates, parser.reader, elements[0]))
                    continue
                # end event
                depth = len(path)
                try:
                    if depth == 1 and response is None:
                        response = _response_header(element, None)
                        if on_response is not None:
                            on_response(response)
                    if tag == "FlexStatement":
                        if state is not None:
                            yield state.header, None
                        state = None
                    elif element.attrib and tag not in _CONTAINERS:
                        if state is None:
                            response_skipped[tag] = response_skipped.get(tag, 0) + 1
                        else:
                            row = _row(parser, tag, dict(element.attrib), state)
                            if row is not None:
                                yield state.header, row
                finally:
                    path.pop()
                    elements.pop()
                    if tag not in _CONTAINERS and elements:
                        # Done with this element: drop it so memory does not grow with the statement.
                        element.clear()
                        elements[-1].remove(element)
        except ET.ParseError as exc:
            line, column = getattr(exc, "position", (None, None))
            where = f"line {line}, column {column}" + (f" (inside {'/'.join(path)})" if path else "")
            reason = "not well-formed XML"
            if path == [] and line == 1 and column == 0:
                reason = "not XML (empty, or another format such as CSV)"
            raise FlexParseError(
                f"{reason}: {exc.msg if hasattr(exc, 'msg') else exc}", where=where, source=name
            ) from None
        if response is None:
            raise FlexParseError("no <FlexQueryResponse> found", where=_where(path), source=name)
        if response_skipped:
            response.skipped.update(response_skipped)
    finally:
        if opened:
            stream.close()


def _row(parser: _Parser, tag: str, attrs: dict[str, str], state: _StatementState) -> FlexRow | None:
    skipped = state.header.skipped
    level = (attrs.get("levelOfDetail") or "").strip().upper()
    try:
        if tag in _EXECUTION_ELEMENTS:
            if level not in ("", "EXECUTION"):
                skipped[f"{tag}:{level}"] = skipped.get(f"{tag}:{level}", 0) + 1
                return None
            return parser.execution(tag, attrs, state)
        if tag == "CashTransaction":
            if level not in ("", "DETAIL"):
                skipped[f"{tag}:{level}"] = skipped.get(f"{tag}:{level}", 0) + 1
                return None
            return parser.cash(attrs, state)
        if tag == "OpenPosition":
            return parser.position(attrs, state)
    except AmbiguousDate as exc:
        return _rejection(tag, attrs, state.header, str(exc))
    except (ValueError, ArithmeticError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        if hasattr(exc, "errors"):  # pydantic ValidationError: say which field, briefly
            reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())  # type: ignore[attr-defined]
        return _rejection(tag, attrs, state.header, reason)
    skipped[tag] = skipped.get(tag, 0) + 1
    return None


def _response_header(root: ET.Element, statements: ET.Element | None) -> FlexResponse:
    count_text = statements.get("count") if statements is not None else None
    try:
        count = int(count_text) if count_text not in (None, "") else None
    except ValueError:
        count = None
    return FlexResponse(
        query_name=root.get("queryName") or None, type=root.get("type") or None, declared_count=count
    )


def _statement_header(
    element: ET.Element, dates: FlexDateReader, reader: _Reader, root: ET.Element
) -> FlexStatement:
    attrs = dict(element.attrib)
    try:
        account: str | None = validate_account_id(attrs.get("accountId") or "")
    except ConfigurationError:
        account = None
    values: dict[str, Any] = {}
    for key, name in (("from_date", "fromDate"), ("to_date", "toDate")):
        try:
            values[key] = reader.date(attrs, name)
        except ValueError:
            values[key] = None
    try:
        stamp = reader.datetime(attrs, "whenGenerated")
        values["when_generated"] = stamp.at if stamp is not None else None
    except ValueError:
        values["when_generated"] = None
    kind: FlexStatementKind = (
        "trade_confirmation" if (root.get("type") or "").upper() == "TCF" else "activity"
    )
    return FlexStatement(
        account_id=account, period=attrs.get("period") or None, kind=kind, raw=attrs, **values
    )


def parse_flex(
    source: FlexSource, *, source_name: str | None = None, date_format: str | None = None
) -> FlexResponse:
    """Read a whole Flex response into a :class:`FlexResponse` (all statements, all rows).

    Cancellations are paired with the fills they name: the fill (same account, ``tradeID`` =
    ``origTradeID``) is marked ``cancelled`` and the cancellation gets its ``cancelled_execution_id``.
    """
    header: list[FlexResponse] = []
    statements: list[tuple[FlexStatement, dict[str, list[Any]]]] = []
    current: FlexStatement | None = None
    buckets: dict[str, list[Any]] = {}
    for statement, row in iter_flex(
        source, source_name=source_name, date_format=date_format, on_response=header.append
    ):
        if statement is not current:
            current = statement
            buckets = {
                "executions": [],
                "cancellations": [],
                "cash_transactions": [],
                "open_positions": [],
                "rejected": [],
            }
            statements.append((statement, buckets))
        if row is not None:
            buckets[_bucket(row)].append(row)
    response = header[0] if header else FlexResponse()
    return response.model_copy(
        update={"statements": [_finish(statement, rows) for statement, rows in statements]}
    )


def _bucket(row: FlexRow) -> str:
    if isinstance(row, FlexExecution):
        return "executions"
    if isinstance(row, FlexCancellation):
        return "cancellations"
    if isinstance(row, FlexCashTransaction):
        return "cash_transactions"
    if isinstance(row, FlexOpenPosition):
        return "open_positions"
    return "rejected"


def _finish(statement: FlexStatement, rows: dict[str, list[Any]]) -> FlexStatement:
    executions: list[FlexExecution] = rows["executions"]
    cancellations: list[FlexCancellation] = rows["cancellations"]
    if cancellations:
        by_trade: dict[tuple[str, str | None], int] = {
            (row.account_id, row.trade_id): index for index, row in enumerate(executions) if row.trade_id
        }
        paired: list[FlexCancellation] = []
        for cancel in cancellations:
            index = by_trade.get((cancel.account_id, cancel.orig_trade_id))
            if index is not None:
                original = executions[index]
                executions[index] = original.model_copy(update={"cancelled": True})
                cancel = cancel.model_copy(update={"cancelled_execution_id": original.execution_id})
            paired.append(cancel)
        cancellations = paired
    kind = statement.kind
    if executions and all(row.source == "trade_confirmation" for row in executions):
        kind = "trade_confirmation"
    return statement.model_copy(
        update={
            "executions": executions,
            "cancellations": cancellations,
            "cash_transactions": rows["cash_transactions"],
            "open_positions": rows["open_positions"],
            "rejected": rows["rejected"],
            "kind": kind,
        }
    )

"""Idempotent, set-based ingest of one account's fills, commissions and rejected rows.

For every batch of fills (chunked so that no statement exceeds SQLite's bound-parameter limit) the
ingest runs a fixed number of statements, whatever the number of rows:

1. one ``SELECT`` of the stored revisions (id, revision, content digest) of the batch's execution
   families, and (when some of the batch is already known) one ``SELECT`` of their commissions;
2. one ``INSERT ... ON CONFLICT DO UPDATE`` of the fills that are new or whose content changed
   (unchanged rows are not written at all, so a re-ingest only reads); when some digests differ,
   one ``SELECT`` of those stored rows and one ``INSERT`` of what they held into ``fill_history``;
3. one ``UPDATE`` marking stored older revisions superseded, only when a newer revision arrived;
4. one upsert of the commissions that are new or changed, one ``INSERT`` of their history rows,
   one ``INSERT`` of the commission breaks.

The digest (``fills.content_hash``) covers what the parser derived, the payload row and the
parser's version (:data:`~ibkr_tasks.models.fills.PARSER_VERSION`): a parser fix re-derives stored
fills from the same payload on their next ingest (``fills_rederived``).

Counts come from comparing the batch with step 1's answer, never from a query per row. The caller's
transaction makes the whole ingest atomic (``Ledger.ingest`` opens one per account), so a crash
leaves the old state and a re-run completes it; running it twice leaves the same ledger.

Commission rules: a missing commission is pending (NULL), never 0. A value for a pending commission
finalises it. A different value for a known commission is kept in ``commission_history`` and
reported as a ``commission_change`` break with the delta. A commission that disappears from a later
payload keeps its known value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, String, any_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

import ibkr_tasks.models.fills as fill_parser
from ibkr_tasks.accounts import is_paper_account
from ibkr_tasks.errors import ForeignAccountRows
from ibkr_tasks.ledger.bulk import upsert
from ibkr_tasks.ledger.jsonable import digest, to_jsonable
from ibkr_tasks.ledger.locks import lock_account
from ibkr_tasks.ledger.schema import (
    Account,
    BreakRow,
    CommissionHistoryRow,
    CommissionRow,
    FillHistoryRow,
    FillRow,
    QuarantineRow,
    table,
)
from ibkr_tasks.models.common import RejectedRow
from ibkr_tasks.models.runs import CommissionBreak, RunCounts
from ibkr_tasks.models.statuses import BreakStatus, CommissionStatus, FillChange

if TYPE_CHECKING:
    from ibkr_tasks.models import Fill

DEFAULT_BATCH_SIZE = 2000
DEFAULT_SOURCE = "iserver_trades"
COMMISSION_CHANGE = "commission_change"
# A commission IBKR's statement made final (ibkr_tasks/ledger/flex.py) is the book of record: a later
# Client Portal answer that differs does not overwrite it, it is a ``statement_commission`` break.
STATEMENT_SOURCE = "flex_statement"
STATEMENT_COMMISSION = "statement_commission"

# The columns that make a fill's content (everything but bookkeeping columns): a stored fill whose
# content equals the incoming one is "unchanged" and not written again.
_CONTENT_COLUMNS = (
    "execution_family",
    "revision",
    "conid",
    "symbol",
    "sec_type",
    "side",
    "quantity",
    "price",
    "multiplier",
    "net_amount",
    "currency",
    "trade_time",
    "order_ref",
    "order_id",
    "exchange",
    "is_event_contract",
    "source",
    "raw",
)
# Commission fields of the raw payload are tracked in ``commissions``/``commission_history``: a
# commission arriving later does not make the fill "updated" (``fills.raw`` keeps the payload as the
# fill was first seen or last changed).
_TYPED_COLUMNS = tuple(c for c in _CONTENT_COLUMNS if c != "raw")
_COMMISSION_KEYS = frozenset({"commission", "commission_currency", "commissionCurrency"})


@dataclass(kw_only=True)
class IngestResult(RunCounts):
    """What one ingest did to one account's ledger: the run counts, and more.

    ``fills_unchanged``: fills stored before with the same content (not written). ``duplicates`` and
    ``conflicting``: fills handed in more than once under one execution id, as exact copies (booked
    once) and as differing versions (each quarantined, none booked). These are not columns of
    ``reconciliation_runs``. ``breaks`` counts ``commission_breaks``.
    """

    account_id: str
    fills_unchanged: int = 0
    commission_breaks: list[CommissionBreak] = field(default_factory=list)
    duplicates: int = 0
    conflicting: int = 0

    @property
    def breaks(self) -> int:
        return len(self.commission_breaks)

    @property
    def fills_seen(self) -> int:
        return self.fills_new + self.fills_updated + self.fills_unchanged


def _insert_for(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"the ledger supports SQLite and PostgreSQL, not {name}")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def max_batch_size(session: Session, requested: int = DEFAULT_BATCH_SIZE) -> int:
    """The batch size to use: ``requested``, capped by SQLite's bound-parameter limit."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        from ibkr_tasks.ledger.engine import sqlite_variable_limit

        engine: Engine = bind.engine
        limit = _SQLITE_LIMITS.get(id(engine))
        if limit is None:
            limit = _SQLITE_LIMITS[id(engine)] = sqlite_variable_limit(engine)
        # Every statement binds one parameter per row (the IN lists) plus a handful of others.
        return max(1, min(requested, limit - 16))
    return requested


_SQLITE_LIMITS: dict[int, int] = {}


def _among(session: Session, column: Any, values: list[str]) -> Any:
    """``column IN values`` -- on PostgreSQL as ``= ANY(array)``: one parameter instead of thousands
    keeps the statement short enough for psycopg's query cache and cheap to plan."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(String())))
    return column.in_(values)


def stored_commissions_of(session: Session, account_id: str, execution_ids: list[str]) -> dict[str, Any]:
    """The stored commission (amount, currency, status, source) of each of ``execution_ids`` that has
    one, by execution id: one indexed lookup for a batch."""
    if not execution_ids:
        return {}
    commissions = table(CommissionRow)
    return {
        row.execution_id: row
        for row in session.execute(
            select(
                commissions.c.execution_id,
                commissions.c.amount,
                commissions.c.currency,
                commissions.c.status,
                commissions.c.source,
            ).where(
                commissions.c.account_id == account_id,
                _among(session, commissions.c.execution_id, execution_ids),
            )
        )
    }


def ensure_account(session: Session, account_id: str, now: datetime | None = None) -> None:
    """Create the ``accounts`` row for ``account_id`` if it does not exist (one statement)."""
    insert = _insert_for(session)
    stmt = insert(Account).values(
        account_id=account_id,
        is_paper=is_paper_account(account_id),
        created_at=now or datetime.now(UTC),
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=[Account.account_id]))


def _check_account(account_id: str, fills: Sequence[Fill]) -> None:
    foreign = sorted({f.account_id for f in fills if f.account_id != account_id})
    if foreign:
        raise ForeignAccountRows(
            f"ingest for account {account_id} was handed fills of {', '.join(foreign)}: "
            "nothing was written; pass each account only its own fills (ParseResult per account)"
        )


def _check_rejected_account(account_id: str, rejected: Sequence[RejectedRow]) -> None:
    foreign = sorted({r.account_id for r in rejected if r.account_id not in (None, account_id)})
    if foreign:
        raise ForeignAccountRows(
            f"ingest for account {account_id} was handed rejected rows of {', '.join(foreign)}: "
            "nothing was written; quarantine each account's rows in its own ingest"
        )


def _fill_row(fill: Fill, source: str, run_id: str, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "account_id": fill.account_id,
        "execution_id": fill.execution_id,
        "execution_family": fill.execution_family,
        "revision": fill.revision,
        "superseded": False,
        "conid": fill.conid,
        "symbol": fill.symbol,
        "sec_type": fill.sec_type,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": fill.price,
        "multiplier": fill.multiplier,
        "net_amount": fill.net_amount,
        "currency": fill.currency,
        "trade_time": fill.trade_time.astimezone(UTC),
        "order_ref": fill.order_ref,
        "order_id": fill.order_id,
        "exchange": fill.exchange,
        "is_event_contract": fill.is_event_contract,
        "source": source,
        "raw": fill.raw,
        "first_seen_run": run_id,
        "last_changed_run": run_id,
        "first_seen_at": now,
        "last_changed_at": now,
    }
    row["content_hash"] = _content_hash(row)
    return row


def _without_commission(raw: Any) -> Any:
    if isinstance(raw, dict) and not _COMMISSION_KEYS.isdisjoint(raw):
        return {k: v for k, v in raw.items() if k not in _COMMISSION_KEYS}
    return raw


def _content_hash(row: dict[str, Any]) -> str:
    """A digest of what the ledger stores of a fill: the fields the parser derived (normalised), the
    payload row they were derived from, and :data:`~ibkr_tasks.models.fills.PARSER_VERSION`, as
    canonical JSON (sorted keys, decimals as strings, times ISO UTC: ``_fill_row`` made them UTC).

    A parser that derives a field differently changes the digest even for the same payload row, so
    a re-ingest rewrites the fill (``fills_rederived``). Commission keys of the payload are left out:
    a commission arriving later is the commissions table's business, not a change of the fill.
    """
    typed = {column: row[column] for column in _TYPED_COLUMNS}
    return digest("fill", fill_parser.PARSER_VERSION, typed, _without_commission(row["raw"]))


def _same_amount(a: Decimal | None, b: Decimal | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b


def ingest_fills(
    session: Session,
    account_id: str,
    fills: Iterable[Fill],
    run_id: str,
    rejected: Iterable[RejectedRow] = (),
    *,
    source: str = DEFAULT_SOURCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
) -> IngestResult:
    """Ingest ``fills`` (all of ``account_id``) and quarantine ``rejected`` within the caller's transaction.

    Raises :class:`~ibkr_tasks.errors.ForeignAccountRows` when a fill or rejected row belongs to another
    account. A list is checked completely before anything is written; a streamed iterable is checked
    batch by batch, so the caller's transaction must be rolled back on the error (``Ledger.ingest``
    does that), leaving nothing written either way.

    An execution id handed in twice is booked once when both are the same (``duplicates``); with
    different contents neither is booked and both are quarantined (``conflicting``). A list is
    checked as a whole; a streamed iterable batch by batch (a repeat in a later batch then counts as
    a change of the stored fill).
    """
    now = now or datetime.now(UTC)
    rejected = list(rejected)
    _check_rejected_account(account_id, rejected)
    result = IngestResult(account_id=account_id)
    whole = False
    if isinstance(fills, Sequence):
        whole = True
        _check_account(account_id, fills)
        fills = _settle_duplicates(fills, result, rejected)

    lock_account(session, account_id)
    ensure_account(session, account_id, now)
    insert = _insert_for(session)
    size = max_batch_size(session, batch_size)
    for chunk in _chunks(fills, size):
        _check_account(account_id, chunk)
        if not whole:
            chunk = _settle_duplicates(chunk, result, rejected)
        _ingest_chunk(session, insert, account_id, chunk, run_id, source, now, result)
    result.quarantined = quarantine_rows(session, rejected, run_id, now=now)
    return result


def _settle_duplicates(
    fills: Sequence[Fill], result: IngestResult, rejected: list[RejectedRow]
) -> list[Fill]:
    """``fills`` with each execution id once: an exact copy of an earlier fill is counted in
    ``result.duplicates`` and left out; an execution id that comes with different contents is left
    out altogether, each version appended to ``rejected`` (to be quarantined) and counted in
    ``result.conflicting``. (An upsert cannot write one row twice, and keeping the last version
    would drop the others without a trace.)"""
    counts = Counter(f.execution_id for f in fills)
    if len(counts) == len(fills):
        return list(fills)
    versions: dict[str, list[Fill]] = {}
    for fill in fills:
        if counts[fill.execution_id] > 1:
            seen = versions.setdefault(fill.execution_id, [])
            if any(fill == other for other in seen):
                result.duplicates += 1
            else:
                seen.append(fill)
    for execution_id, seen in versions.items():
        if len(seen) > 1:
            result.conflicting += len(seen)
            rejected.extend(
                RejectedRow(
                    kind="fill",
                    account_id=fill.account_id,
                    key=execution_id,
                    reason=f"execution id {execution_id!r} was handed in {len(seen)} times with different "
                    "contents; none of them is booked",
                    raw=fill.raw,
                )
                for fill in seen
            )
    kept: list[Fill] = []
    for fill in fills:
        if counts[fill.execution_id] == 1:
            kept.append(fill)
        else:
            seen = versions[fill.execution_id]
            if len(seen) == 1 and seen[0] is fill:
                kept.append(fill)
    return kept


def _ingest_chunk(
    session: Session,
    insert: Any,
    account_id: str,
    chunk: list[Fill],
    run_id: str,
    source: str,
    now: datetime,
    result: IngestResult,
) -> None:
    # Each execution id is in the batch once (``_settle_duplicates``).
    by_id: dict[str, Fill] = {f.execution_id: f for f in chunk}
    families = sorted({f.execution_family for f in by_id.values()})

    # Every stored revision of the batch's execution families (a superset of the batch's own rows),
    # then the stored commissions of the batch's known executions: enough to count new/updated/
    # unchanged, settle corrections and compare commissions. (Two plain index lookups rather than
    # one join: PostgreSQL picks poor join plans for large parameter lists on fresh statistics.)
    fills = table(FillRow)
    stored = session.execute(
        select(
            fills.c.execution_id,
            fills.c.execution_family,
            fills.c.revision,
            fills.c.superseded,
            fills.c.content_hash,
        ).where(fills.c.account_id == account_id, _among(session, fills.c.execution_family, families))
    ).all()
    existing = {row.execution_id: row for row in stored}
    known = [execution_id for execution_id in by_id if execution_id in existing]
    stored_commissions = stored_commissions_of(session, account_id, known)
    # Statement-final commissions that already have an open disagreement break: reported once.
    from_statement = [e for e, c in stored_commissions.items() if c.source == STATEMENT_SOURCE]
    open_disagreements: set[str] = set()
    if from_statement:
        breaks = table(BreakRow)
        open_disagreements = {
            str(subject)
            for (subject,) in session.execute(
                select(breaks.c.subject).where(
                    breaks.c.account_id == account_id,
                    breaks.c.kind == STATEMENT_COMMISSION,
                    breaks.c.status == BreakStatus.OPEN,
                    _among(session, breaks.c.subject, [f"execution:{e}" for e in from_statement]),
                )
            )
        }
    newest: dict[str, int] = {}
    revisions = [(r.execution_family, r.revision) for r in stored]
    revisions += [(f.execution_family, f.revision) for f in by_id.values()]
    for family, revision in revisions:
        if revision > newest.get(family, -1):
            newest[family] = revision

    fill_rows: list[dict[str, Any]] = []
    changed: dict[str, dict[str, Any]] = {}
    commission_rows: list[dict[str, Any]] = []
    history_rows: list[dict[str, Any]] = []
    break_rows: list[dict[str, Any]] = []
    for execution_id, fill in by_id.items():
        row = _fill_row(fill, source, run_id, now)
        old = existing.get(execution_id)
        if old is None:
            result.fills_new += 1
            if fill.revision < newest[fill.execution_family]:
                row["superseded"] = True  # a late older revision: stored, but not current
                result.fills_superseded += 1
            fill_rows.append(row)
        elif old.content_hash != row["content_hash"]:
            changed[execution_id] = row
        else:
            result.fills_unchanged += 1
        _commission_change(
            account_id,
            fill,
            stored_commissions.get(execution_id),
            run_id,
            source,
            now,
            result,
            commission_rows,
            history_rows,
            break_rows,
            open_disagreements,
        )
    fill_rows += _rewrites(session, account_id, changed, run_id, now, result)
    # Stored revisions that a newer one now corrects.
    outdated = sorted(
        r.execution_id for r in stored if not r.superseded and r.revision < newest[r.execution_family]
    )

    upsert(
        session,
        table(FillRow),
        fill_rows,
        conflict=("account_id", "execution_id"),
        update=(*_CONTENT_COLUMNS, "content_hash", "last_changed_run", "last_changed_at"),
    )
    # (Normally one statement; more only if a batch's families hold more revisions than a batch.)
    for ids in _chunks(outdated, max_batch_size(session)):
        session.execute(
            update(fills)
            .where(fills.c.account_id == account_id, _among(session, fills.c.execution_id, ids))
            .values(superseded=True, last_changed_run=run_id, last_changed_at=now)
        )
    result.fills_superseded += len(outdated)
    upsert(
        session,
        table(CommissionRow),
        commission_rows,
        conflict=("account_id", "execution_id"),
        update=("amount", "currency", "status", "source", "last_changed_run", "updated_at"),
    )
    if history_rows:
        session.execute(insert(table(CommissionHistoryRow)), history_rows)
    if break_rows:
        session.execute(
            insert(table(BreakRow)).on_conflict_do_nothing(
                index_elements=[BreakRow.account_id, BreakRow.run_id, BreakRow.kind, BreakRow.subject]
            ),
            break_rows,
        )


def _rewrites(
    session: Session,
    account_id: str,
    changed: dict[str, dict[str, Any]],
    run_id: str,
    now: datetime,
    result: IngestResult,
) -> list[dict[str, Any]]:
    """The rows of ``changed`` (stored fills whose digest differs) that must be rewritten.

    One read of the stored rows tells why each digest differs: IBKR sent other content (updated), the
    parser derives other fields from the same payload row (updated and re-derived), or nothing the
    ledger stores differs (a digest of an older form: unchanged, only the digest is refreshed). The
    content a rewrite replaces goes to ``fill_history``.
    """
    if not changed:
        return []
    fills = table(FillRow)
    stored = session.execute(
        select(fills.c.execution_id, fills.c.content_hash, *(fills.c[c] for c in _CONTENT_COLUMNS)).where(
            fills.c.account_id == account_id, _among(session, fills.c.execution_id, list(changed))
        )
    ).all()
    rewrite: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    refresh: list[dict[str, Any]] = []
    for old in stored:
        row = changed[old.execution_id]
        same_raw = _without_commission(old.raw) == _without_commission(row["raw"])
        if same_raw and all(getattr(old, c) == row[c] for c in _TYPED_COLUMNS):
            result.fills_unchanged += 1
            refresh.append({"b_execution": old.execution_id, "b_hash": row["content_hash"]})
            continue
        result.fills_updated += 1
        result.fills_rederived += same_raw
        rewrite.append(row)
        history.append(
            {
                "account_id": account_id,
                "execution_id": old.execution_id,
                "change": FillChange.REDERIVED if same_raw else FillChange.UPDATED,
                "previous": to_jsonable({c: getattr(old, c) for c in _CONTENT_COLUMNS}),
                "previous_hash": old.content_hash,
                "content_hash": row["content_hash"],
                "parser_version": fill_parser.PARSER_VERSION,
                "run_id": run_id,
                "changed_at": now,
            }
        )
    if history:
        session.execute(_insert_for(session)(table(FillHistoryRow)), history)
    if refresh:
        session.execute(
            update(fills)
            .where(fills.c.account_id == account_id, fills.c.execution_id == bindparam("b_execution"))
            .values(content_hash=bindparam("b_hash")),
            refresh,
        )
    return rewrite


def _commission_change(
    account_id: str,
    fill: Fill,
    old: Any,
    run_id: str,
    source: str,
    now: datetime,
    result: IngestResult,
    commission_rows: list[dict[str, Any]],
    history_rows: list[dict[str, Any]],
    break_rows: list[dict[str, Any]],
    open_disagreements: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Decide what ``fill``'s commission does to the stored one; append the rows to write."""
    amount, currency = fill.commission, fill.commission_currency
    status = CommissionStatus.PENDING if amount is None else CommissionStatus.FINAL
    row = {
        "account_id": account_id,
        "execution_id": fill.execution_id,
        "amount": amount,
        "currency": currency if amount is not None else None,
        "status": status,
        "source": source,
        "first_seen_run": run_id,
        "last_changed_run": run_id,
        "updated_at": now,
    }
    old_status = old.status if old is not None else None
    if old_status is None:
        # First sighting of the execution (or a fill row without commission row: repair it).
        commission_rows.append(row)
        return
    if amount is None:
        return  # absent now: keep what we know (pending stays pending, a known value stays)
    old_amount, old_currency = old.amount, old.currency
    if getattr(old, "source", None) == STATEMENT_SOURCE and old_amount is not None:
        # The statement's amount stands; a Client Portal answer that differs is reported, once.
        subject = f"execution:{fill.execution_id}"
        if _same_amount(old_amount, amount) or subject in open_disagreements:
            return
        open_disagreements.add(subject)
        _commission_break(
            account_id,
            fill,
            old_amount,
            STATEMENT_COMMISSION,
            run_id,
            now,
            result,
            break_rows,
            {"source": source, "kept": "the statement's amount (final)"},
        )
        return
    if old_amount is None:
        result.commissions_finalised += 1
    elif not _same_amount(old_amount, amount):
        result.commissions_changed += 1
        _commission_break(
            account_id,
            fill,
            old_amount,
            COMMISSION_CHANGE,
            run_id,
            now,
            result,
            break_rows,
            {"source": source, "previous_status": old_status},
        )
    elif currency is None or currency == old_currency:
        return  # the same commission again
    commission_rows.append(row)
    history_rows.append(
        {
            "account_id": account_id,
            "execution_id": fill.execution_id,
            "previous_amount": old_amount,
            "previous_currency": old_currency,
            "previous_status": old_status,
            "amount": amount,
            "currency": currency,
            "status": status,
            "source": source,
            "run_id": run_id,
            "changed_at": now,
        }
    )


def _commission_break(
    account_id: str,
    fill: Fill,
    expected: Decimal,
    kind: str,
    run_id: str,
    now: datetime,
    result: IngestResult,
    break_rows: list[dict[str, Any]],
    detail: dict[str, Any],
) -> None:
    """Report that ``fill``'s commission is not the ``expected`` one the ledger holds: in the result
    and as a ``kind`` break row."""
    found = CommissionBreak(
        execution_id=fill.execution_id,
        conid=fill.conid,
        expected=expected,
        actual=fill.commission,
        currency=fill.commission_currency,
    )
    result.commission_breaks.append(found)
    break_rows.append(
        {
            "account_id": account_id,
            "run_id": run_id,
            "kind": kind,
            "subject": f"execution:{fill.execution_id}",
            "conid": fill.conid,
            "execution_id": fill.execution_id,
            "expected": found.expected,
            "actual": found.actual,
            "delta": found.delta,
            "currency": found.currency,
            "detail": detail,
            "status": BreakStatus.OPEN,
            "detected_at": now,
        }
    )


_KEY_TYPE = table(QuarantineRow).c.key.type
_KEY_LENGTH = _KEY_TYPE.length if isinstance(_KEY_TYPE, String) else None
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")


def _column_text(text: str) -> str:
    """``text`` with what a text column cannot hold (NUL, unpaired surrogates) written as escapes."""
    return _UNSTORABLE_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def quarantine_rows(
    session: Session,
    rejected: Iterable[RejectedRow],
    run_id: str | None,
    *,
    now: datetime | None = None,
) -> int:
    """Store rejected rows in ``quarantine`` (one statement); the same raw row twice stays one row.

    Returns how many distinct rows were handed in (each is in quarantine afterwards). Whatever a row
    holds, it is stored: the raw row as exact JSON text, a NUL or unpaired surrogate in the key or
    reason as an escape, a key longer than the column cut to its length.
    """
    now = now or datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    for r in rejected:
        # ``raw`` is stored as received (ExactJSON); the digest is of the same content.
        row_hash = digest(r.kind, r.account_id, r.raw)
        rows[row_hash] = {
            "row_hash": row_hash,
            "account_id": r.account_id,
            "kind": r.kind,
            "key": None if r.key is None else _column_text(r.key)[:_KEY_LENGTH],
            "reason": _column_text(r.reason),
            "raw": r.raw,
            "first_seen_run": run_id,
            "first_seen_at": now,
        }
    if not rows:
        return 0
    insert = _insert_for(session)
    # Sorted, so that two transactions inserting overlapping rows take their locks in the same order.
    ordered = [rows[h] for h in sorted(rows)]
    for chunk in _chunks(ordered, max_batch_size(session)):
        session.execute(
            insert(table(QuarantineRow)).on_conflict_do_nothing(index_elements=[QuarantineRow.row_hash]),
            chunk,
        )
    return len(rows)

"""Statement booking benchmark: parse and book a 100,000-trade Flex statement into the ledger.

Prints, for SQLite (a temporary file):

- the time to book the statement with ``Ledger.book_statement`` (stream-parsed, set-based batches:
  every fill added with its final commission, the cash transactions, the statement's checks), and the
  ratio to a raw insert of the same rows: the same file stream-parsed and its executions written
  with a plain SQLAlchemy Core ``insert()`` executemany into a bare table (no keys, no indexes, no
  lookups), one transaction;
- the time of booking the same statement again (nothing changes: it only reads);
- the peak Python memory (tracemalloc) of booking statements of 10,000 and 100,000 trades: it is
  bounded by the batch size (2,000 executions), not by the statement -- the bound stated is 64 MB
  (measured: about 18 MB at either size; 100,000 trades book in about 18 s, 2.2x the raw insert).

    .venv/bin/python bench/flex_book.py                    # 100,000 trades
    .venv/bin/python bench/flex_book.py --trades 20000     # quick run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, create_engine, insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flex_parse import write
from ibkr_tasks.flex.models import FlexExecution
from ibkr_tasks.flex.parse import iter_flex
from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.types import Amount, JSONDoc, UTCDateTime

MEMORY_BOUND_MB = 64


def bare_table(metadata: MetaData) -> Table:
    """The columns a booked execution writes (fill + commission), without keys or indexes."""
    return Table(
        "bench_bare_statement_fills",
        metadata,
        Column("account_id", String(32)),
        Column("execution_id", String(64)),
        Column("execution_family", String(64)),
        Column("revision", Integer),
        Column("superseded", Boolean),
        Column("conid", Integer),
        Column("symbol", String(64)),
        Column("sec_type", String(16)),
        Column("side", String(1)),
        Column("quantity", Amount),
        Column("price", Amount),
        Column("multiplier", Amount),
        Column("currency", String(8)),
        Column("trade_time", UTCDateTime),
        Column("trade_id", String(32)),
        Column("commission", Amount),
        Column("commission_currency", String(8)),
        Column("raw", JSONDoc),
    )


def raw_insert(path: Path, url: str) -> float:
    engine = create_engine(url)
    metadata = MetaData()
    bare = bare_table(metadata)
    metadata.create_all(engine)
    began = time.perf_counter()
    with engine.begin() as conn:
        batch: list[dict[str, object]] = []
        for _, row in iter_flex(path):
            if isinstance(row, FlexExecution):
                batch.append(
                    {
                        "account_id": row.account_id,
                        "execution_id": row.key,
                        "execution_family": row.execution_family,
                        "revision": row.revision,
                        "superseded": False,
                        "conid": row.conid,
                        "symbol": row.symbol,
                        "sec_type": row.sec_type,
                        "side": row.side,
                        "quantity": row.quantity,
                        "price": row.price,
                        "multiplier": row.multiplier,
                        "currency": row.currency,
                        "trade_time": row.trade_time,
                        "trade_id": row.trade_id,
                        "commission": row.commission,
                        "commission_currency": row.commission_currency,
                        "raw": row.raw,
                    }
                )
                if len(batch) >= 2000:
                    conn.execute(insert(bare), batch)
                    batch = []
        if batch:
            conn.execute(insert(bare), batch)
    took = time.perf_counter() - began
    engine.dispose()
    return took


def book(path: Path, url: str, *, traced: bool = False, twice: bool = False) -> tuple[float, float, int, int]:
    """(first booking s, second booking s, peak bytes, fills added)."""
    ledger = Ledger(url)
    ledger.ensure_schema()
    if traced:
        tracemalloc.start()
    began = time.perf_counter()
    results = ledger.book_statement(path, "bench-1")
    first = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    second = 0.0
    if twice:
        began = time.perf_counter()
        again = ledger.book_statement(path, "bench-2")
        second = time.perf_counter() - began
        assert all(r.fills_added == 0 and r.breaks == 0 for r in again.values()), again
    ledger.dispose()
    added = sum(r.fills_added for r in results.values())
    return first, second, peak, added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller statement of the memory check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big, small = folder / "big.xml", folder / "small.xml"
        write(big, args.trades)
        write(small, args.small)
        print(f"statement: {args.trades:,} trades, {big.stat().st_size / 1e6:.1f} MB of Flex XML (SQLite)")
        baseline = raw_insert(big, f"sqlite:///{folder / 'raw.db'}")
        first, second, _, added = book(big, f"sqlite:///{folder / 'ledger.db'}", twice=True)
        assert added == args.trades, added
        print(
            f"raw parse + insert of the executions:   {baseline:7.2f} s  ({args.trades / baseline:,.0f} rows/s)"
        )
        print(f"book_statement (parse, book, checks):   {first:7.2f} s  ({args.trades / first:,.0f} rows/s)")
        print(f"  ratio booking / raw insert:           {first / baseline:7.2f}")
        print(f"book_statement again (nothing changes): {second:7.2f} s")
        peaks = {}
        for count, path in ((args.small, small), (args.trades, big)):
            _, _, peak, _ = book(path, f"sqlite:///{folder / f'mem{count}.db'}", traced=True)
            peaks[count] = peak / 1e6
            print(f"peak Python memory, {count:>7,} trades:   {peaks[count]:7.1f} MB")
        bounded = all(p < MEMORY_BOUND_MB for p in peaks.values())
        print(
            f"memory bound {MEMORY_BOUND_MB} MB (batches of 2,000 executions; cancellations and open positions are "
            f"held per statement): {'kept' if bounded else 'EXCEEDED'}"
        )
    return 0 if bounded else 1


if __name__ == "__main__":
    sys.exit(main())

"""Ledger ingest benchmark: 200,000 fills (100 accounts x 2,000) into SQLite and PostgreSQL.

For each database it prints, measured in the same run:

- fills/s of ``Ledger.ingest`` (one transaction per account, the full idempotent upsert with
  commissions), and the ratio to a plain SQLAlchemy Core ``insert()`` executemany of the same fill
  rows into a bare table (same column types, no keys or indexes) -- goal >= 0.5;
- the time of a full re-ingest of the same fills -- goal <= the first ingest;
  (per account: baseline insert, first ingest, re-ingest, one after the other, so that all three
  see the same machine load; the totals are summed over accounts)
- peak Python memory (tracemalloc) of a streamed ingest of one account with N, 2N and 4N fills at
  the same batch size -- goal: about equal, i.e. bounded by the batch size, not by the rows.

The fills are realistic ``ibkr_tasks.models.Fill`` objects built per account (never all held at
once); building them is not timed. SQLite runs in a temporary file; PostgreSQL in a fresh temporary
database on 127.0.0.1 as user postgres (``IBKR_TEST_PG_URL`` overrides the server), dropped at the end.

    .venv/bin/python bench/ledger_ingest.py                 # full size
    .venv/bin/python bench/ledger_ingest.py --accounts 10   # quick run
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from ibkr_tasks.ledger import Ledger
from ibkr_tasks.ledger.testing import stream_fills
from ibkr_tasks.ledger.types import Amount, JSONDoc, UTCDateTime
from ibkr_tasks.models import Fill

PG_ADMIN_URL = os.environ.get("IBKR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def account_ids(count: int) -> list[str]:
    return [f"DU{1_000_000 + i}" for i in range(count)]


def bare_table(metadata: MetaData) -> Table:
    """The same columns as ``fills``, without keys, constraints or indexes."""
    return Table(
        "bench_bare_fills",
        metadata,
        Column("account_id", String(32)),
        Column("execution_id", String(64)),
        Column("execution_family", String(64)),
        Column("revision", Integer),
        Column("conid", Integer),
        Column("symbol", String(64)),
        Column("sec_type", String(16)),
        Column("side", String(1)),
        Column("quantity", Amount),
        Column("price", Amount),
        Column("multiplier", Amount),
        Column("net_amount", Amount),
        Column("currency", String(8)),
        Column("commission", Amount),
        Column("commission_currency", String(8)),
        Column("trade_time", UTCDateTime),
        Column("order_ref", String(64)),
        Column("order_id", String(64)),
        Column("exchange", String(32)),
        Column("is_event_contract", Boolean),
        Column("raw", JSONDoc),
    )


_BARE_COLUMNS = (
    "account_id",
    "execution_id",
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
    "commission",
    "commission_currency",
    "trade_time",
    "order_ref",
    "order_id",
    "exchange",
    "is_event_contract",
    "raw",
)


def per_account(accounts: list[str], fills_per_account: int) -> Iterator[tuple[str, list[Fill]]]:
    for i, account in enumerate(accounts):
        yield account, list(stream_fills(account, fills_per_account, seed=i))


def timed(accounts: list[str], n: int, *works: Callable[[str, list[Fill]], None]) -> list[float]:
    """Run each of ``works`` per account, interleaved (so that both see the same machine load);
    return the seconds spent inside each ``work`` only (building the fills is not timed)."""
    spent = [0.0] * len(works)
    for account, fills in per_account(accounts, n):
        for i, work in enumerate(works):
            start = time.perf_counter()
            work(account, fills)
            spent[i] += time.perf_counter() - start
    return spent


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"ibkr_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ibkr-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


def memory_peak(url: str, fills: int, batch_size: int) -> float:
    """Peak traced MiB of one streamed ingest of ``fills`` fills of a fresh account."""
    ledger = Ledger(url)
    try:
        ledger.ensure_schema()
        account = f"DU{9_000_000 + fills}"
        tracemalloc.start()
        tracemalloc.reset_peak()
        ledger.ingest(account, stream_fills(account, fills), "mem", batch_size=batch_size)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak / 2**20
    finally:
        ledger.dispose()


def bench(name: str, url: str, accounts: list[str], n: int, batch_size: int) -> dict[str, Any]:
    total = len(accounts) * n
    ledger = Ledger(url)
    ledger.upgrade()
    metadata = MetaData()
    bare = bare_table(metadata)
    metadata.create_all(ledger.engine)

    def baseline(account: str, fills: list[Fill]) -> None:
        rows = [{c: getattr(f, c) for c in _BARE_COLUMNS} for f in fills]
        with ledger.engine.begin() as conn:
            conn.execute(insert(bare), rows)

    def ingest(run_id: str) -> Callable[[str, list[Fill]], None]:
        def work(account: str, fills: list[Fill]) -> None:
            result = ledger.ingest(account, fills, run_id, batch_size=batch_size)
            expected_new = len(fills) if run_id == "first" else 0
            assert result.fills_new == expected_new, (run_id, result)

        return work

    t_base, t_first, t_again = timed(accounts, n, baseline, ingest("first"), ingest("again"))
    ledger.dispose()
    mem_1x = memory_peak(url, n, batch_size)
    mem_2x = memory_peak(url, 2 * n, batch_size)
    mem_4x = memory_peak(url, 4 * n, batch_size)
    out = {
        "db": name,
        "fills": total,
        "baseline_s": t_base,
        "ingest_s": t_first,
        "reingest_s": t_again,
        "mem_1x": mem_1x,
        "mem_2x": mem_2x,
        "mem_4x": mem_4x,
    }
    ratio = t_base / t_first
    print(f"\n== {name}: {total:,} fills ({len(accounts)} accounts x {n:,}), batch size {batch_size:,}")
    print(f"  Core insert() executemany, bare table: {t_base:8.2f} s  {total / t_base:10,.0f} rows/s")
    print(
        f"  Ledger.ingest (first):                  {t_first:8.2f} s  {total / t_first:10,.0f} fills/s"
        f"   ratio to Core insert {ratio:.2f} (goal >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})"
    )
    print(
        f"  Ledger.ingest (same fills again):       {t_again:8.2f} s  {total / t_again:10,.0f} fills/s"
        f"   {'<=' if t_again <= t_first else '>'} first ingest (goal <=: {'met' if t_again <= t_first else 'NOT met'})"
    )
    print(
        f"  peak traced memory of one streamed ingest (batch {batch_size:,}): {n:,} fills {mem_1x:5.1f} MiB,"
        f" {2 * n:,} fills {mem_2x:5.1f} MiB, {4 * n:,} fills {mem_4x:5.1f} MiB"
        f" (4x rows -> {mem_4x / mem_1x:.2f}x memory; bounded by the batch size if ~1)"
    )
    sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--fills-per-account", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args(argv)
    accounts = account_ids(args.accounts)
    which = args.only or ["sqlite", "postgresql"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if "sqlite" in which:
        with sqlite_database() as url:
            bench("SQLite (temp file, WAL)", url, accounts, args.fills_per_account, args.batch_size)
    if "postgresql" in which:
        with postgres_database() as url:
            bench("PostgreSQL (temp database)", url, accounts, args.fills_per_account, args.batch_size)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmax RSS of the whole benchmark process: {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What parsing a large Flex statement costs: time and peak memory at 10k, 50k and 100k trades.

A statement of N execution rows (plus one cash transaction per 100 trades) is written to a file in
the default Flex format, then read twice:

- ``iter_flex`` (streaming: each row is handed over and dropped): its peak memory should stay flat
  as N grows; that bound is what a booking loop that writes rows in batches pays;
- ``parse_flex`` (everything collected in one FlexResponse): grows with N, for comparison.

Peak memory is Python allocations measured by tracemalloc (not RSS). The file's size is printed for
scale. Run: ``.venv/bin/python bench/flex_parse.py`` (``--sizes 10000,50000`` to change). This is a
measurement, not a test; tests/test_flex_parse.py checks the flat-memory property at small sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibkr_tasks.flex.parse import iter_flex, parse_flex  # noqa: E402
from ibkr_tasks.sim.flex_xml import FlexFormat, Section, write_response  # noqa: E402

ACCOUNT = "DU1234567"
START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def trades(count: int, fmt: FlexFormat) -> Iterator[tuple[str, dict[str, str]]]:
    for n in range(count):
        when = START + timedelta(seconds=7 * n)
        qty = 1 + n % 300
        price = f"{100 + (n % 5000) / 100:.2f}"
        yield (
            "Trade",
            {
                "accountId": ACCOUNT,
                "currency": "USD",
                "assetCategory": "STK" if n % 10 else "OPT",
                "symbol": f"S{n % 2000:04d}",
                "conid": str(40_000_000 + n % 2000),
                "multiplier": "1" if n % 10 else "100",
                "tradeDate": fmt.date(when.date()),
                "dateTime": fmt.datetime(when),
                "reportDate": fmt.date(when.date()),
                "transactionType": "ExchTrade",
                "exchange": "ISLAND",
                "quantity": str(qty if n % 2 else -qty),
                "tradePrice": price,
                "ibCommission": "-1.000720223",
                "ibCommissionCurrency": "USD",
                "buySell": "SELL" if n % 2 == 0 else "BUY",
                "ibExecID": f"0000e0d5.{n:08x}.01.01",
                "tradeID": str(1_000_000_000 + n),
                "transactionID": str(5_000_000_000 + n),
                "ibOrderID": str(900_000 + n // 3),
                "notes": "P;" if n % 7 == 0 else "",
                "levelOfDetail": "EXECUTION",
            },
        )


def cash(count: int, fmt: FlexFormat) -> Iterator[tuple[str, dict[str, str]]]:
    for n in range(count // 100):
        yield (
            "CashTransaction",
            {
                "accountId": ACCOUNT,
                "currency": "USD",
                "dateTime": fmt.datetime(START + timedelta(hours=n)),
                "amount": "-1.50",
                "type": "Other Fees",
                "transactionID": str(7_000_000_000 + n),
            },
        )


def write(path: Path, count: int) -> None:
    fmt = FlexFormat()
    with path.open("w") as out:
        header = {"accountId": ACCOUNT, "fromDate": "20260302", "toDate": "20260331", "whenGenerated": ""}
        write_response(
            out,
            query_name="bench",
            count=1,
            statements=[
                (
                    header,
                    [Section("Trades", trades(count, fmt)), Section("CashTransactions", cash(count, fmt))],
                )
            ],
        )


def measure(label: str, run) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    began = time.perf_counter()
    rows = run()
    took = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return took, peak, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'trades':>8} {'file MB':>8} | {'stream s':>8} {'rows/s':>8} {'peak MB':>8} | {'collect s':>9} {'peak MB':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            path = Path(tmp) / f"flex_{count}.xml"
            write(path, count)
            size_mb = path.stat().st_size / 1e6
            s_time, s_peak, s_rows = measure(
                "stream", lambda p=path: sum(1 for _, r in iter_flex(p) if r is not None)
            )
            c_time, c_peak, _ = measure("collect", lambda p=path: len(parse_flex(p).executions))
            print(
                f"{count:>8} {size_mb:>8.1f} | {s_time:>8.2f} {s_rows / s_time:>8.0f} {s_peak / 1e6:>8.2f} |"
                f" {c_time:>9.2f} {c_peak / 1e6:>8.1f}"
            )
    print("stream = iter_flex (rows dropped once read): its peak should not grow with the statement.")


if __name__ == "__main__":
    main()

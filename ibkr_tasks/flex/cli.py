"""``ibkr-tasks flex import PATH... [--ledger URL]``: book downloaded IBKR statements into the ledger.

Each file (an Activity or Trade Confirmation Flex statement saved as XML) is booked in one
transaction: a file that cannot be read to its end is reported with its name and where reading
stopped, and leaves nothing written; the other files are still booked. Booking a file again changes
nothing (every row is keyed by IBKR's ids). Prints one line of counts per account and file; exits 1
when any file failed.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ibkr_tasks.errors import IBKRError

HEADER = (
    f"{'account':<11} {'period':<23} {'fills':>6} {'confirmed':>9} {'added':>6} {'cancelled':>9} "
    f"{'comm fin':>8} {'comm chg':>8} {'cash':>5} {'positions':>9} {'quar':>4} {'breaks':>6}"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibkr-tasks flex", description="IBKR Flex statements.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import", help="book downloaded statement files (Activity or Trade Confirmation XML)"
    )
    imp.add_argument("paths", nargs="+", metavar="PATH", help="statement files (XML)")
    imp.add_argument(
        "--ledger", metavar="URL", help="ledger URL (default: IBKR_LEDGER_URL or sqlite:///ibkr_ledger.db)"
    )
    imp.add_argument(
        "--date-format",
        metavar="FORMAT",
        help="the query's Date Format when the files use slash dates nothing in them settles (e.g. dd/MM/yyyy)",
    )
    return parser


def _period(result: object) -> str:
    start, end = getattr(result, "from_date", None), getattr(result, "to_date", None)
    if start is None:
        return ""
    return start.isoformat() if end in (None, start) else f"{start.isoformat()}..{end.isoformat()}"


def main(argv: list[str]) -> int:
    """Run ``ibkr-tasks flex`` with ``argv`` (without the leading ``flex``); return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from ibkr_tasks.ledger import Ledger

    try:
        ledger = Ledger(args.ledger)
        ledger.ensure_schema()
    except IBKRError as exc:
        print(f"ibkr-tasks flex: {exc}", file=sys.stderr)
        return 1
    run_id = f"flex-import-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    failed: list[str] = []
    try:
        print(f"ledger: {ledger.url.render_as_string(hide_password=True)} (run {run_id})")
        for name in args.paths:
            path = Path(name)
            try:
                results = ledger.book_statement(
                    path, run_id, one_transaction=True, source_name=str(path), date_format=args.date_format
                )
            except IBKRError as exc:
                failed.append(name)
                print(
                    f"ibkr-tasks flex import: {path}: {exc} (nothing from this file was booked)",
                    file=sys.stderr,
                )
                continue
            except Exception as exc:  # a database error: the file's transaction was rolled back
                failed.append(name)
                print(
                    f"ibkr-tasks flex import: {path}: {type(exc).__name__}: {exc} (nothing from this file was booked)",
                    file=sys.stderr,
                )
                continue
            print(f"\n{path}: {len(results)} account(s)")
            print(HEADER)
            for account_id, r in results.items():
                print(
                    f"{account_id:<11} {_period(r):<23} {r.fills_seen:>6} {r.fills_confirmed:>9} {r.fills_added:>6} "
                    f"{r.fills_cancelled:>9} {r.commissions_finalised:>8} {r.commissions_changed:>8} "
                    f"{r.cash_transactions:>5} {r.positions_compared:>9} {r.quarantined:>4} {r.breaks:>6}"
                )
    finally:
        ledger.dispose()
    if failed:
        print(f"ibkr-tasks flex import: {len(failed)} of {len(args.paths)} file(s) failed", file=sys.stderr)
        return 1
    return 0
